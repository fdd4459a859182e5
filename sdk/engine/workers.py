"""The worker registry: one bounded worker per model, started on first use, and its lifecycle.

:class:`WorkerRegistry` knows nothing of the contract's endpoints or of recording. The engine
(:class:`imagine_edge.sdk.engine.engine.Engine`) asks it for a model's
:class:`~imagine_edge.sdk.engine.worker.ModelWorker` to admit a job into (429 when its queue is
full); ``unload`` and ``close`` free the models explicitly.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from imagine_edge.models.base import ModelCard
from imagine_edge.sdk.engine.worker import ModelState, ModelWorker
from imagine_edge.sdk.errors import ModelUnavailableError

__all__ = ["WorkerRegistry"]


class WorkerRegistry:
    """The workers of an engine's models, by model name; thread-safe."""

    def __init__(self, max_queue: int = 16) -> None:
        self._max_queue = max_queue
        self._workers: dict[str, ModelWorker] = {}
        self._lock = threading.Lock()
        self._closed = False

    def worker(self, card: ModelCard) -> ModelWorker:
        """The worker of ``card``'s model, started now if it has none yet."""
        with self._lock:
            if self._closed:
                raise ModelUnavailableError("the engine is closed")
            worker = self._workers.get(card.name)
            if worker is None:
                worker = self._workers[card.name] = ModelWorker(card, self._max_queue)
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
