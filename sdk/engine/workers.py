"""The engine's core: one bounded worker per model, admission into it, recording, lifecycle.

:class:`EngineCore` knows nothing of the contract's endpoints. The engine
(:class:`imagine_edge.sdk.engine.Engine`) builds each request's job body and hands it to
:meth:`EngineCore._submit`, which admits it into the model's worker (``sdk/engine/worker.py``;
429 when its queue is full) and, when the job ends, records the request and its stored response
through the :class:`~imagine_edge.sdk.engine.recorder.Recorder`. Workers start on first use;
``load``, ``unload`` and ``close`` manage them explicitly.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Self, cast

from pydantic import BaseModel

from imagine_edge.models.base import ModelCard
from imagine_edge.runtime.memory import memory_parts, one_malloc_arena
from imagine_edge.sdk.engine.calls import Call
from imagine_edge.sdk.engine.names import ModelIndex
from imagine_edge.sdk.engine.recorder import (
    Endpoint,
    Recorder,
    RequestRecord,
    default_data_dir,
    history_keep_from_env,
)
from imagine_edge.sdk.engine.worker import Job, JobContext, ModelState, ModelWorker, Outcome
from imagine_edge.sdk.errors import ModelUnavailableError
from imagine_edge.sdk.limits import Limits
from imagine_edge.sdk.types import Image, ImageResponse

__all__ = ["KEEP_ALIVE_ENV", "SERVER_KEEP_ALIVE", "EngineCore", "KeepAlive", "parse_keep_alive"]

KEEP_ALIVE_ENV: Final = "IMAGINE_EDGE_KEEP_ALIVE"
SERVER_KEEP_ALIVE: Final = "5m"  # the server's default; the in-process engine keeps models loaded
# Seconds idle before a model unloads (None: never), for all models or per model name.
KeepAlive = float | None | Mapping[str, float | None]
_KEEP_ALIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_KEEP_ALIVE_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_keep_alive(text: str) -> float | None:
    """Seconds in a keep-alive such as '5m', '30s', '1h' or '300' (seconds); 'never' or a
    negative number (Ollama's -1) keeps models loaded: None. ValueError otherwise."""
    raw = text.strip().lower()
    if raw in ("never", "forever", "inf") or re.fullmatch(r"-\d+(\.\d+)?[a-z]*", raw):
        return None
    match = _KEEP_ALIVE.match(raw)
    if match is None:
        raise ValueError(
            f"keep-alive must be a duration like '5m', '30s', '1h' or '300' (seconds), or "
            f"'never', got {text!r}"
        )
    return float(match.group(1)) * _KEEP_ALIVE_UNITS[match.group(2) or "s"]


class EngineCore(ModelIndex):
    """Model workers, admission and recording for a set of model cards; thread-safe."""

    def __init__(
        self,
        cards: Sequence[ModelCard],
        *,
        data_dir: Path | None = None,
        recorder: Recorder | None = None,
        limits: Limits | None = None,
        max_queue: int = 16,
        userid: str = "local",
        history_keep: int | None = None,
        keep_alive: KeepAlive = None,
    ) -> None:
        """``history_keep``: request bodies kept per endpoint for the history (0: none; default
        ``IMAGINE_EDGE_HISTORY_KEEP``, else 100); only used when the engine opens the store.
        ``keep_alive``: seconds a loaded model may stay idle before it unloads, for every model
        or per model name ("*" for the others; None, the default: never; the server passes its
        own default)."""
        super().__init__(cards)
        self._keep_alive = keep_alive
        # What the process held before any model: health's "Python at start".
        self.memory_at_start = memory_parts()
        one_malloc_arena()  # so that memory freed after a large request can be given back
        self._history_keep = history_keep_from_env() if history_keep is None else history_keep
        if self._history_keep < 0:
            raise ValueError(f"history_keep must be >= 0, got {history_keep}")
        self.limits = limits or Limits()
        self.data_dir = data_dir if data_dir is not None else default_data_dir()
        self._recorder = recorder
        self._userid = userid
        self._max_queue = max_queue
        self._workers: dict[str, ModelWorker] = {}
        self._lock = threading.Lock()
        self._closed = False

    @property
    def recorder(self) -> Recorder:
        """The usage store, opened on first use."""
        with self._lock:
            if self._recorder is None:
                self._recorder = Recorder(
                    self.data_dir / "usage.sqlite3",
                    userid=self._userid,
                    history_keep=self._history_keep,
                )
            return self._recorder

    def model_states(self) -> list[ModelState]:
        """Load state, execution provider, memory and queue of every model."""
        with self._lock:
            workers = dict(self._workers)
        return [
            workers[name].state()
            if name in workers
            else ModelState(name, "not loaded", None, None, 0)
            for name in self._cards
        ]

    def keep_alive_of(self, name: str) -> float | None:
        """Seconds model ``name`` may stay idle before it unloads (None: never)."""
        if isinstance(self._keep_alive, Mapping):  # "*": the models not named
            return self._keep_alive.get(name, self._keep_alive.get("*"))
        return self._keep_alive

    # ------------------------------------------------------------------ lifecycle

    def _worker(self, card: ModelCard) -> ModelWorker:
        with self._lock:
            if self._closed:
                raise ModelUnavailableError("the engine is closed")
            worker = self._workers.get(card.name)
            if worker is None:
                worker = self._workers[card.name] = ModelWorker(
                    card, self._max_queue, self.keep_alive_of(card.name)
                )
            return worker

    def load(self, names: Sequence[str] | None = None) -> None:
        """Load models now: those named, else each type's default (they otherwise load lazily)."""
        cards = (
            [self.lookup_strict(n) for n in names]
            if names is not None
            else [c for c in self._defaults.values() if c is not None]
        )
        for card in cards:
            self._worker(card).load()

    def unload(self, name: str) -> None:
        """Free a model's sessions after its admitted requests; it reloads on next use."""
        card = self.lookup_strict(name)
        with self._lock:
            worker = self._workers.get(card.name)
        if worker is not None:
            worker.unload()

    def close(self) -> None:
        """Cancel all requests, stop the workers, free every model and close the store."""
        with self._lock:
            self._closed, workers = True, list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.close()
        with self._lock:
            if self._recorder is not None:
                self._recorder.close()
                self._recorder = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ admission

    def _submit(
        self,
        card: ModelCard,
        endpoint: Endpoint,
        request: BaseModel | Mapping[str, Any],
        call: Call[Any, Any],
        body: Callable[[Any, Call[Any, Any], JobContext], Any],
    ) -> Call[Any, Any]:
        """Admit ``body`` to run on ``card``'s worker for ``call``; record the request when done."""
        created = time.time()
        request_json = (
            request.model_dump(mode="json", exclude_none=True)
            if isinstance(request, BaseModel)
            else dict(request)
        )

        def on_done(job: Job, out: Outcome) -> None:
            ctx = out.context
            self.recorder.record(
                RequestRecord(
                    id=call.id,
                    endpoint=endpoint,
                    model=card.name,
                    model_type=card.model_type,
                    status=out.status,
                    created=created,
                    prompt_tokens=ctx.prompt_tokens,
                    completion_tokens=ctx.completion_tokens,
                    queue_seconds=out.queue_seconds,
                    load_seconds=out.load_seconds,
                    prefill_seconds=ctx.prefill_seconds,
                    decode_seconds=ctx.decode_seconds,
                    generation_seconds=out.generation_seconds,
                    request=request_json,
                    response=_stored_response(out.result),
                    error=None if out.error is None else str(out.error),
                )
            )

        self._worker(card).submit(Job(call, body, on_done))
        return call


def _stored_response(result: Any) -> dict[str, Any] | None:
    """The response as kept in the history; image data is left out (it can be megabytes)."""
    if not isinstance(result, BaseModel):
        return None
    if isinstance(result, ImageResponse):
        result = result.model_copy(
            update={
                "data": [
                    Image(url=i.url, b64_json=None if i.b64_json is None else "<omitted>")
                    for i in result.data
                ]
            }
        )
    return cast(dict[str, Any], result.model_dump(mode="json"))
