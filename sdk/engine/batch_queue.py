"""Concurrent requests to one embedding or reranker model gathered into one graph run.

As text-embeddings-inference's ``--max-batch-tokens``: requests that wait for the same model run
together, up to a budget of padded tokens (rows times the longest row, what one padded batch of
them would hold) and of requests, and each gets exactly its own rows back (docs/server.md,
Batching).

How: the engine adds each admitted request to its model's :class:`BatchQueue` (a
:class:`Ticket`, holding how to tokenize it) and submits its job to the model's worker as
before. The worker still runs jobs one at a time in admission order. When a job's body runs and
its ticket has no result yet, it leads a run: it takes the waiting tickets in admission order
while they fit the budget (tokenizing each), runs them through the model's batch method
(``models/base.py``: :class:`~imagine_edge.models.base.BatchEmbedder`,
:class:`~imagine_edge.models.base.BatchReranker`), and hands every ticket its own result. When
the other jobs' turns come, each finds its result ready and only builds its response; so queue
limits, 429s, cancellation, recording and the observer hooks stay the worker's, unchanged.

Invariants:
- A ticket is in at most one run, and gets exactly one result or one error: its own. A request
  whose tokenization fails fails alone (it joins no run); when a gathered run fails, each of its
  requests runs again alone, so a bad one fails alone.
- A run holds at most ``max_requests`` requests and, when it holds more than one, at most
  ``max_tokens`` padded tokens; a request over the budget runs alone, as it would unbatched.
- A cancelled request joins no run; one cancelled during a run is reported cancelled by the
  worker (its result is dropped).
- One request alone runs exactly as the model's unbatched method does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, cast

from imagine_edge.models.base import (
    BatchEmbedder,
    BatchReranker,
    Embeddings,
    Encoded,
    Rankings,
)
from imagine_edge.sdk.engine.calls import Call
from imagine_edge.sdk.engine.worker import JobContext
from imagine_edge.sdk.errors import ModelRunError

__all__ = [
    "BATCH_REQUESTS_ENV",
    "BATCH_TOKENS_ENV",
    "DEFAULT_BATCH_REQUESTS",
    "DEFAULT_BATCH_TOKENS",
    "BatchLimits",
    "BatchQueue",
    "BatchQueues",
    "BatchRun",
    "BatchStats",
    "Ticket",
]

logger = logging.getLogger(__name__)

BATCH_TOKENS_ENV: Final = "IMAGINE_EDGE_EMBED_BATCH_TOKENS"
BATCH_REQUESTS_ENV: Final = "IMAGINE_EDGE_EMBED_BATCH_REQUESTS"
DEFAULT_BATCH_TOKENS: Final = 8192
DEFAULT_BATCH_REQUESTS: Final = 32

M = TypeVar("M")
R = TypeVar("R")


def _env_whole(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name} must be a whole number >= 0, got {raw!r}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How much one gathered run may hold; ``max_tokens`` 0 turns gathering off."""

    max_tokens: int = DEFAULT_BATCH_TOKENS  # padded tokens: rows x the longest row
    max_requests: int = DEFAULT_BATCH_REQUESTS

    def __post_init__(self) -> None:
        if self.max_tokens < 0 or self.max_requests < 1:
            raise ValueError(
                "embed batch tokens must be >= 0 and requests >= 1, got "
                f"{self.max_tokens} and {self.max_requests}"
            )

    @property
    def gathers(self) -> bool:
        return self.max_tokens > 0 and self.max_requests > 1

    @classmethod
    def from_env(
        cls, max_tokens: int | None = None, max_requests: int | None = None
    ) -> BatchLimits:
        """The given limits, else ``IMAGINE_EDGE_EMBED_BATCH_TOKENS`` / ``..._REQUESTS``, else
        the defaults (8192 padded tokens, 32 requests)."""
        if max_tokens is None:
            max_tokens = _env_whole(BATCH_TOKENS_ENV, DEFAULT_BATCH_TOKENS)
        if max_requests is None:
            max_requests = _env_whole(BATCH_REQUESTS_ENV, DEFAULT_BATCH_REQUESTS)
        return cls(max_tokens, max_requests)


@dataclass(frozen=True, slots=True)
class BatchRun:
    """One graph run, shared by the requests it served."""

    started: float  # time.monotonic() when the leader began gathering
    seconds: float  # gathering (tokenizing) and running, until every result was ready
    requests: int
    padded_tokens: int  # rows x the longest row


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What a model's runs have held since the engine started (health, metrics, tests)."""

    runs: int = 0
    requests: int = 0  # requests those runs served
    gathered_runs: int = 0  # runs of more than one request
    largest_requests: int = 0  # the most requests one run held
    largest_padded_tokens: int = 0  # the most padded tokens a run of several requests held

    def describe(self) -> str:
        if not self.gathered_runs:
            return ""
        return (
            f", batched {self.requests} requests in {self.runs} runs (largest: "
            f"{self.largest_requests} requests, {self.largest_padded_tokens} padded tokens)"
        )


class Ticket(Generic[M, R]):
    """One admitted request in its model's queue: how to tokenize it, then its result."""

    __slots__ = ("call", "done", "encode", "error", "part", "run", "value")

    def __init__(self, call: Call[Any, Any], encode: Callable[[M], Encoded]) -> None:
        self.call = call
        self.encode = encode
        self.part: Encoded | None = None
        self.done = False
        self.value: R | None = None
        self.error: Exception | None = None
        self.run: BatchRun | None = None

    def _fail(self, error: Exception) -> None:
        self.error, self.done = error, True


class BatchQueue(Generic[M, R]):
    """The waiting requests of one model and the runs that serve them; thread-safe."""

    def __init__(
        self,
        limits: BatchLimits,
        kind: type[Any],
        run: Callable[[M, Sequence[Encoded]], Sequence[R]],
    ) -> None:
        self.limits = limits
        self._kind = kind  # the batch protocol the loaded model must satisfy
        self._run = run
        self._lock = threading.Lock()
        self._waiting: list[Ticket[M, R]] = []
        self._stats = BatchStats()

    def add(self, call: Call[Any, Any], encode: Callable[[M], Encoded]) -> Ticket[M, R]:
        """A ticket for ``call``, which other requests' runs may now take (before its job runs)."""
        ticket: Ticket[M, R] = Ticket(call, encode)
        if self.limits.gathers:
            with self._lock:
                self._waiting.append(ticket)
        return ticket

    def discard(self, ticket: Ticket[M, R]) -> None:
        """Forget a ticket whose job was not admitted."""
        with self._lock:
            if ticket in self._waiting:
                self._waiting.remove(ticket)

    def stats(self) -> BatchStats:
        with self._lock:
            return self._stats

    def serve(
        self, ticket: Ticket[M, R], model: object, ctx: JobContext, alone: Callable[[], R]
    ) -> tuple[R, float]:
        """The request's result and the seconds its run took, on the worker thread.

        A model without the batch protocol runs the request ``alone``. Otherwise the result is
        the one a run led by an earlier request left, or that of a run this request leads now;
        the context's start moves back to the run's start, so the request's queue time ends
        when its run began (docs/server.md, Timings).
        """
        if not isinstance(model, self._kind):
            self.discard(ticket)
            start = time.monotonic()
            return alone(), time.monotonic() - start
        batched = cast(M, model)  # it satisfies the protocol the queue was built for
        if not ticket.done:
            self._lead(ticket, batched)
        if ticket.error is not None:
            raise ticket.error
        run = ticket.run
        assert run is not None
        assert ticket.value is not None
        shift = max(0.0, ctx.started - run.started)
        ctx.started -= shift
        ctx.queue_seconds = max(0.0, ctx.queue_seconds - shift)
        return ticket.value, run.seconds

    # -------------------------------------------------------------- the leader's side

    def _lead(self, leader: Ticket[M, R], model: M) -> None:
        started = time.monotonic()
        with self._lock:
            self._waiting = [t for t in self._waiting if t is not leader and not t.call.cancelled]
            candidates = list(self._waiting)
        if not self._encode(leader, model):
            return
        assert leader.part is not None
        group, rows, longest = [leader], leader.part.rows, leader.part.longest
        for ticket in candidates:
            if len(group) >= self.limits.max_requests:
                break
            if ticket.call.cancelled or ticket.done or not self._encode(ticket, model):
                continue
            part = ticket.part
            assert part is not None
            grown = max(longest, part.longest)
            if (rows + part.rows) * grown > self.limits.max_tokens:
                break  # admission order: the next run starts with it
            group.append(ticket)
            rows, longest = rows + part.rows, grown
        with self._lock:
            self._waiting = [t for t in self._waiting if t not in group and not t.done]
        self._execute(model, group, started, rows * longest)

    def _encode(self, ticket: Ticket[M, R], model: M) -> bool:
        """Tokenize ``ticket`` once; False (and the ticket failed) when its request is bad."""
        if ticket.part is None:
            try:
                ticket.part = ticket.encode(model)
            except Exception as e:
                ticket._fail(e)
                return False
        return True

    def _execute(self, model: M, group: list[Ticket[M, R]], started: float, padded: int) -> None:
        parts = [t.part for t in group if t.part is not None]
        try:
            values = list(self._run(model, parts))
            if len(values) != len(group):
                raise ModelRunError(f"a batch of {len(group)} requests gave {len(values)} results")
        except Exception as e:
            if len(group) == 1:
                self._record(group, started, padded)
                group[0]._fail(e)
                return
            logger.warning("a batch of %d requests failed (%s): each runs alone", len(group), e)
            for ticket in group:  # a bad request fails alone; the others still get a result
                part = ticket.part
                assert part is not None
                self._execute(model, [ticket], time.monotonic(), part.rows * part.longest)
            return
        run = self._record(group, started, padded)
        for ticket, value in zip(group, values, strict=True):
            ticket.value, ticket.run, ticket.done = value, run, True

    def _record(self, group: list[Ticket[M, R]], started: float, padded: int) -> BatchRun:
        run = BatchRun(started, time.monotonic() - started, len(group), padded)
        with self._lock:
            s, gathered = self._stats, len(group) > 1
            self._stats = BatchStats(
                runs=s.runs + 1,
                requests=s.requests + len(group),
                gathered_runs=s.gathered_runs + int(gathered),
                largest_requests=max(s.largest_requests, len(group)),
                largest_padded_tokens=max(s.largest_padded_tokens, padded if gathered else 0),
            )
        return run


def _embed(model: BatchEmbedder, parts: Sequence[Encoded]) -> list[Embeddings]:
    return model.embed_encoded(parts)


def _rank(model: BatchReranker, parts: Sequence[Encoded]) -> list[Rankings]:
    return model.rank_encoded(parts)


class BatchQueues:
    """The batch queues of an engine's embedding and reranker models, by model name."""

    def __init__(self, limits: BatchLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._embedders: dict[str, BatchQueue[BatchEmbedder, Embeddings]] = {}
        self._rerankers: dict[str, BatchQueue[BatchReranker, Rankings]] = {}

    def embedder(self, name: str) -> BatchQueue[BatchEmbedder, Embeddings]:
        with self._lock:
            queue = self._embedders.get(name)
            if queue is None:
                queue = self._embedders[name] = BatchQueue(self.limits, BatchEmbedder, _embed)
            return queue

    def reranker(self, name: str) -> BatchQueue[BatchReranker, Rankings]:
        with self._lock:
            queue = self._rerankers.get(name)
            if queue is None:
                queue = self._rerankers[name] = BatchQueue(self.limits, BatchReranker, _rank)
            return queue

    def stats(self, name: str) -> BatchStats:
        """What model ``name``'s runs have held (zeros: none yet, or not a batched model)."""
        with self._lock:
            queue: BatchQueue[Any, Any] | None = self._embedders.get(name) or self._rerankers.get(
                name
            )
        return BatchStats() if queue is None else queue.stats()
