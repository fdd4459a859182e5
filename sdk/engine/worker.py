"""One worker thread per model: a bounded queue, lazy loading, execution and unloading.

The engine hands a worker :class:`Job` s; the worker runs them in admission order off the event
loop. A model that batches its requests (``RunsConcurrently``: the LLM with continuous batching,
runtime/step_batcher.py) gets up to that many jobs at once, each on a thread of its own; any other
model runs them one at a time on the worker's thread, so two requests never share it. Loading,
unloading and other control work happen on the worker's thread, after the running jobs end.

Invariants:
- A model's load (its queue occupancy) is the number of admitted jobs that are running or
  waiting and not cancelled; it is derived from the queue, never counted separately, so a
  cancelled job frees its slot the instant its consumer cancels it.
- With a keep-alive duration, a loaded model that has had nothing to do for that long is
  unloaded on its own thread (its memory goes back to the system) and reloads on next use;
  without one (the in-process default) a model stays loaded until ``unload`` or ``close``.
- Every job ends with exactly one ``on_done`` (recording) followed by exactly one delivery to its
  call (result or error), even when the job was cancelled before it ran or the engine closed.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final, TypeVar

from imagine_edge.models.base import HasKVSlots, LoadedModel, ModelCard, RunsConcurrently
from imagine_edge.runtime.memory import (
    process_resident_bytes,
    release_free_memory,
    resident_set_bytes,
)
from imagine_edge.sdk.engine.jobs import Body, Job, JobContext, ModelState, Outcome, Status
from imagine_edge.sdk.errors import (
    ImagineAPITooManyRequestsException,
    ImagineException,
    ModelRunError,
    ModelUnavailableError,
)

__all__ = ["Body", "Job", "JobContext", "ModelState", "ModelWorker", "Outcome", "Status"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

# One model loads at a time, so the growth of the process's resident memory during a load is
# that model's: sessions, prepacked weights and buffers (and libraries it is the first to import;
# not the arena its first run adds). Preparation (a child process) runs before, outside it.
# Loaders never wait on another worker, so this cannot deadlock.
_LOAD_LOCK = threading.Lock()
# Growth of the resident set during one job past which its freed memory is given back at once.
_RELEASE_AFTER_GROWTH = 16 * 2**20


class _Stop:
    """The loop's signal that the worker is closing."""


_STOP: Final = _Stop()


class _Control:
    """Work on the model itself (load, unload) run in queue order on the worker thread."""

    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()

    def run(self) -> None:
        try:
            self.future.set_result(self.fn())
        except BaseException as e:
            self.future.set_exception(e)


class ModelWorker:
    """The thread that owns one model and runs its jobs in admission order."""

    def __init__(self, card: ModelCard, max_queue: int, keep_alive: float | None = None) -> None:
        if keep_alive is not None and not keep_alive >= 0:
            raise ValueError(f"keep_alive must be >= 0 seconds or None, got {keep_alive}")
        self.card = card
        self._max_queue = max_queue
        self._keep_alive = keep_alive
        self._last_used = time.monotonic()
        self._cond = threading.Condition()
        self._pending: deque[Job | _Control] = deque()
        self._running: list[Job] = []
        self._job_threads: list[threading.Thread] = []
        self._model: LoadedModel | None = None
        self._load_rss: int | None = None
        self._state = "not loaded"
        self._closing = False
        self._avg_seconds = 1.0  # moving average of job durations: the Retry-After estimate
        self._thread = threading.Thread(
            target=self._loop, name=f"imagine-edge:{card.name}", daemon=True
        )
        self._thread.start()

    # -------------------------------------------------------------- callers' side

    def _occupancy(self) -> int:
        waiting = sum(1 for j in self._pending if isinstance(j, Job) and not j.call.cancelled)
        return waiting + self._running_count()

    def _running_count(self) -> int:
        return sum(1 for j in self._running if not j.call.cancelled)

    def submit(self, job: Job) -> None:
        """Admit a job, or raise 429 when the model's queue is full."""
        with self._cond:
            if self._closing:
                raise ModelUnavailableError(f"model {self.card.name!r} is shutting down")
            occupied = self._occupancy()
            if occupied >= self._max_queue:
                # Every admitted job runs before this one could: the queue's expected wait.
                wait = max(1.0, self._avg_seconds * occupied / self._width())
                raise ImagineAPITooManyRequestsException(
                    f"model {self.card.name!r} is busy: {occupied} requests are running or "
                    f"queued (limit {self._max_queue}); retry after {round(wait)} s",
                    retry_after=wait,
                )
            job.call.on_cancel = self._wake
            self._pending.append(job)
            self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def control(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker thread after the jobs admitted before it; blocks."""
        item = _Control(fn)
        with self._cond:
            if self._closing:
                raise ModelUnavailableError(f"model {self.card.name!r} is shutting down")
            self._pending.append(item)
            self._cond.notify_all()
        result: T = item.future.result()
        return result

    def load(self) -> None:
        """Load the model now (it otherwise loads on first use)."""
        self.control(self._ensure_loaded)

    def unload(self) -> None:
        """Free the model's sessions once the jobs admitted before this call are done."""
        self.control(self._close_model)

    def state(self) -> ModelState:
        """The model's load state, execution provider, memory and queue occupancy."""
        with self._cond:
            model, state, queued = self._model, self._state, self._occupancy()
            load_rss = self._load_rss
            running = self._running_count()
        return ModelState(
            name=self.card.name,
            state=state,
            execution_provider=None if model is None else model.execution_provider,
            resident_bytes=None if model is None else model.resident_bytes(),
            queued=queued,
            load_rss_bytes=None if model is None else load_rss,
            keep_alive=self._keep_alive,
            running=running,
            kv_slots=model.kv_slots() if isinstance(model, HasKVSlots) else None,
        )

    def close(self) -> None:
        """Cancel every job, stop the thread and free the model."""
        with self._cond:
            self._closing = True
            jobs = [j for j in self._pending if isinstance(j, Job)]
            jobs.extend(self._running)
            self._cond.notify_all()
        for job in jobs:
            job.call.cancel()
        self._thread.join()

    # -------------------------------------------------------------- worker thread

    def _idle_left(self) -> float | None:
        """Seconds until the loaded model has been idle for its keep-alive (None: no limit)."""
        if self._keep_alive is None or self._model is None or self._running:
            return None
        return self._keep_alive - (time.monotonic() - self._last_used)

    def _width(self) -> int:
        """How many jobs the loaded model runs at once."""
        model = self._model
        return model.max_concurrent_requests if isinstance(model, RunsConcurrently) else 1

    def _loop(self) -> None:
        while True:
            item = self._next_item()
            if item is None:
                logger.info("%s idle for %s s: unloading", self.card.name, self._keep_alive)
                self._close_model(f"not loaded (unloaded after {self._keep_alive:g} s idle)")
            elif isinstance(item, _Control):
                item.run()
                with self._cond:
                    self._last_used = time.monotonic()
            elif isinstance(item, _Stop):
                break
            else:
                self._dispatch(item)
        with self._cond:
            while self._running:
                self._cond.wait()
        for thread in self._job_threads:
            thread.join()
        self._close_model()

    def _next_item(self) -> Job | _Control | _Stop | None:
        """The next item whose turn it is (None: idle past the keep-alive; _STOP: closing).

        A job's turn comes when fewer than the model's width run (it then counts as running),
        a control's when none runs."""
        with self._cond:
            while True:
                if self._pending:
                    head = self._pending[0]
                    if isinstance(head, _Control):
                        ready = not self._running
                    else:
                        ready = len(self._running) < self._width()
                    if ready:
                        self._pending.popleft()
                        if isinstance(head, Job):
                            self._running.append(head)
                        return head
                    self._cond.wait()
                    continue
                if self._closing:
                    return _STOP
                left = self._idle_left()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)

    def _dispatch(self, job: Job) -> None:
        """Run ``job`` here, or on a thread of its own when the model runs jobs concurrently."""
        load_seconds = 0.0
        if self._model is None and not job.call.cancelled:
            # Load first, so that the jobs behind this one can start beside it.
            start = time.monotonic()
            with contextlib.suppress(ImagineException):  # the job's run reports the error
                self._ensure_loaded()
            load_seconds = time.monotonic() - start
        if self._width() == 1:
            self._execute(job, load_seconds)
            return
        self._job_threads = [t for t in self._job_threads if t.is_alive()]
        thread = threading.Thread(
            target=self._execute,
            args=(job, load_seconds),
            name=f"imagine-edge:{self.card.name}:{job.call.id}",
            daemon=True,
        )
        self._job_threads.append(thread)
        thread.start()

    def _ensure_loaded(self) -> LoadedModel:
        if self._model is not None:
            return self._model
        with self._cond:
            self._state = "loading"
        try:
            if self.card.prepare is not None:  # outside the lock: preparing takes many seconds
                self.card.prepare()
            with _LOAD_LOCK:
                before = process_resident_bytes()
                model = self.card.load()
                after = process_resident_bytes()
        except ImagineException as e:
            with self._cond:
                self._state = f"failed: {e}"
            raise
        except Exception as e:
            logger.exception("loading model %s failed", self.card.name)
            with self._cond:
                self._state = f"failed: {type(e).__name__}: {e}"
            raise ModelRunError(
                f"model {self.card.name!r} could not be loaded: {type(e).__name__}: {e}",
                phase="load",
            ) from e
        grown = None if before is None or after is None else max(0, after - before)
        with self._cond:
            self._model, self._state, self._load_rss = model, "loaded", grown
        logger.info("loaded %s on %s", self.card.name, model.execution_provider)
        return model

    def _close_model(self, state: str = "not loaded") -> None:
        # The new state shows once the memory is back: health never reports an unloaded model
        # whose memory the process still holds.
        with self._cond:
            model, self._model = self._model, None
            if model is not None:
                self._state = "unloading"
        if model is not None:
            model.close()
            del model
            release_free_memory()
            logger.info("unloaded %s", self.card.name)
        with self._cond:
            self._state = state

    def _execute(self, job: Job, preload_seconds: float = 0.0) -> None:
        call, ctx = job.call, JobContext(cancel=job.call.cancel_event)
        queue_seconds = time.monotonic() - job.admitted - preload_seconds
        load_seconds, result = preload_seconds, None
        error: ImagineException | None = None
        resident_before = resident_set_bytes()
        if call.cancelled:
            error = ImagineException(f"request {call.id} was cancelled before it ran")
        else:
            try:
                start = time.monotonic()
                model = self._ensure_loaded()
                ctx.started = time.monotonic()
                load_seconds += ctx.started - start
                ctx.queue_seconds, ctx.load_seconds = queue_seconds, load_seconds
                result = job.body(model, call, ctx)
            except ImagineException as e:
                error = e
            except Exception as e:
                logger.exception("request %s failed on model %s", call.id, self.card.name)
                error = ModelRunError(f"{type(e).__name__}: {e}", phase="run")
        generation_seconds = time.monotonic() - ctx.started if ctx.started else 0.0
        if ctx.started:
            self._avg_seconds = 0.8 * self._avg_seconds + 0.2 * generation_seconds
        status = Status.OK if error is None else Status.ERROR
        if call.cancelled:
            status = Status.CANCELLED
        if ctx.started:  # a body may move its start back (a batch run led by another request)
            queue_seconds = ctx.queue_seconds
        outcome = Outcome(
            status, result, error, ctx, queue_seconds, load_seconds, generation_seconds
        )
        try:
            job.on_done(job, outcome)
        except Exception:
            logger.exception("could not record request %s", call.id)
        # What a large request freed goes back to the system before the caller hears of it, not
        # to the C heap's free lists (where it would still count as resident); a collection
        # first frees buffers only reference cycles still held (a generator's frame, a trace).
        # Only after a request that left the process larger: a collection costs milliseconds,
        # which small requests (an embedding, a short chat) must not pay each time.
        if resident_set_bytes() - resident_before > _RELEASE_AFTER_GROWTH:
            gc.collect()
            release_free_memory()
        # The slot frees before the caller hears of the result: a caller that sends its next
        # request at once (a queue of one) must find it free, not get a 429.
        with self._cond:
            self._running.remove(job)
            self._last_used = time.monotonic()
            self._cond.notify_all()
        if error is not None:
            call.fail(error)
        else:
            call.finish(result)
