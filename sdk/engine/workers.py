"""The worker registry: one bounded worker per model, started on first use, and its lifecycle.

:class:`WorkerRegistry` knows nothing of the contract's endpoints or of recording. The engine
(:class:`imagine_edge.sdk.engine.engine.Engine`) asks it for a model's
:class:`~imagine_edge.sdk.engine.worker.ModelWorker` to admit a job into (429 when its queue is
full); ``unload`` and ``close`` free the models explicitly.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Final

from imagine_edge.models.base import ModelCard
from imagine_edge.sdk.engine.worker import ModelState, ModelWorker
from imagine_edge.sdk.errors import ModelUnavailableError

__all__ = ["KEEP_ALIVE_ENV", "SERVER_KEEP_ALIVE", "KeepAlive", "WorkerRegistry", "parse_keep_alive"]

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


class WorkerRegistry:
    """The workers of an engine's models, by model name; thread-safe."""

    def __init__(self, max_queue: int = 16, keep_alive: KeepAlive = None) -> None:
        """``keep_alive``: seconds a loaded model may stay idle before it unloads, for every model
        or per model name ("*" for the others; None, the default: never; the server passes its
        own default)."""
        self._keep_alive = keep_alive
        self._max_queue = max_queue
        self._workers: dict[str, ModelWorker] = {}
        self._lock = threading.Lock()
        self._closed = False

    def keep_alive_of(self, name: str) -> float | None:
        """Seconds model ``name`` may stay idle before it unloads (None: never)."""
        if isinstance(self._keep_alive, Mapping):  # "*": the models not named
            return self._keep_alive.get(name, self._keep_alive.get("*"))
        return self._keep_alive

    def worker(self, card: ModelCard) -> ModelWorker:
        """The worker of ``card``'s model, started now if it has none yet."""
        with self._lock:
            if self._closed:
                raise ModelUnavailableError("the engine is closed")
            worker = self._workers.get(card.name)
            if worker is None:
                worker = self._workers[card.name] = ModelWorker(
                    card, self._max_queue, self.keep_alive_of(card.name)
                )
            return worker

    def states(self, cards: Iterable[ModelCard]) -> list[ModelState]:
        """Load state, execution provider, memory and queue of each model, in ``cards`` order."""
        with self._lock:
            workers = dict(self._workers)
        return [
            workers[card.name].state()
            if card.name in workers
            else ModelState(card.name, "not loaded", None, None, 0)
            for card in cards
        ]

    def unload(self, card: ModelCard) -> None:
        """Free a model's sessions after its admitted requests; it reloads on next use."""
        with self._lock:
            worker = self._workers.get(card.name)
        if worker is not None:
            worker.unload()

    def close(self) -> None:
        """Cancel all requests, stop the workers and free every model; no worker starts after."""
        with self._lock:
            self._closed, workers = True, list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.close()
