"""Who hears of a request's life: admitted to a model, then finished with its counts and timings.

The engine reads :data:`current_observer` (a context variable) when it admits a request and tells
that observer twice: :meth:`RequestObserver.admitted` on the admitting thread, and
:meth:`RequestObserver.finished` with a :class:`RequestReport` on the model's worker thread, just
before the caller receives the result. The HTTP server sets one observer per HTTP request, which
joins the report to the HTTP status for its log line and its metrics (server/request_log.py);
in-process callers set none and pay nothing.

An observer that raises is logged and ignored: observing never fails a request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

__all__ = ["RequestObserver", "RequestReport", "current_observer", "observing"]


@dataclass(frozen=True, slots=True)
class RequestReport:
    """One finished request: what it was, how it ended, its tokens and where its time went."""

    id: str
    endpoint: str
    model: str
    status: str  # 'ok', 'error' or 'cancelled' (sdk.engine.worker.Status)
    prompt_tokens: int
    completion_tokens: int
    queue_seconds: float
    load_seconds: float
    prefill_seconds: float
    decode_seconds: float
    generation_seconds: float
    error: str | None = None

    @property
    def ttft_seconds(self) -> float | None:
        """Admission to the first generated token: queue, load and prefill (None: no token)."""
        if self.completion_tokens < 1:
            return None
        return self.queue_seconds + self.load_seconds + self.prefill_seconds

    @property
    def tpot_seconds(self) -> float | None:
        """The mean time per output token after the first (None: fewer than two tokens)."""
        if self.completion_tokens < 2 or self.decode_seconds <= 0:
            return None
        return self.decode_seconds / (self.completion_tokens - 1)

    @property
    def tokens_per_second(self) -> float | None:
        """Completion tokens per second of decode (None: no token or no decode time)."""
        if self.completion_tokens < 1 or self.decode_seconds <= 0:
            return None
        return self.completion_tokens / self.decode_seconds


class RequestObserver(Protocol):
    """Told of one request's admission and of its end (on the worker thread: be quick)."""

    def admitted(self, request_id: str, endpoint: str, model: str) -> None: ...

    def finished(self, report: RequestReport) -> None: ...


current_observer: ContextVar[RequestObserver | None] = ContextVar(
    "imagine_edge_request_observer", default=None
)


@contextlib.contextmanager
def observing(observer: RequestObserver) -> Iterator[None]:
    """Requests admitted in this context (and the threads it is copied to) tell ``observer``."""
    token = current_observer.set(observer)
    try:
        yield
    finally:
        current_observer.reset(token)
