"""The consumer's handle on an admitted request: :class:`Call`.

A model worker thread produces a call's items (stream events, then one result or one error); a
consumer reads them, blocking (``events``/``result``, for the in-process client) or awaiting
(``aevents``/``aresult``, for the server and the async client) without ever blocking an event
loop. One consumer per call.

Invariants:
- Items arrive in order; the last is exactly one result or one error.
- A consumer that stops early (breaks out, is closed, cancelled or garbage-collected) cancels the
  call: the worker sees ``cancel_event`` between steps, and the call stops counting against the
  model's queue at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final, Generic, TypeVar

from imagine_edge.sdk.errors import ImagineException

__all__ = ["HEARTBEAT", "Call", "Heartbeat"]

E = TypeVar("E")
R = TypeVar("R")


class Heartbeat:
    """Yielded by ``Call.aevents`` when no event came for ``heartbeat`` seconds."""

    __slots__ = ()


HEARTBEAT: Final = Heartbeat()


class _Done(Generic[R]):
    __slots__ = ("value",)

    def __init__(self, value: R) -> None:
        self.value = value


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: ImagineException) -> None:
        self.error = error


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Call(Generic[E, R]):
    """A request admitted to a model's worker: stream events of type E, then a result R."""

    def __init__(self, call_id: str, error_event: Callable[[ImagineException], E] | None) -> None:
        self.id = call_id
        # Builds the stream event that tells a client the stream failed (finish_reason 'error').
        self.error_event = error_event
        self.cancel_event = threading.Event()
        self._items: deque[E | _Done[R] | _Failed] = deque()
        self._cond = threading.Condition()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._finished = False
        self._done: _Done[R] | None = None
        self.on_cancel: Callable[[], None] = lambda: None  # set by the worker that admits it

    # -------------------------------------------------------------- producer (worker thread)

    def emit(self, event: E) -> None:
        """Add a stream event."""
        self._put(event)

    def finish(self, result: R) -> None:
        """Deliver the result; the call is complete."""
        self._put(_Done(result))

    def fail(self, error: ImagineException) -> None:
        """Deliver an error; the call is complete."""
        self._put(_Failed(error))

    def _put(self, item: E | _Done[R] | _Failed) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            loop, future = waiter
            # RuntimeError: the consumer's loop is closed, so nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, future)

    # -------------------------------------------------------------- consumer

    @property
    def cancelled(self) -> bool:
        """True once the consumer gave up on the call."""
        return self.cancel_event.is_set()

    def cancel(self) -> None:
        """Stop the call: the worker drops or interrupts it and its queue slot frees now."""
        if not self._finished and not self.cancel_event.is_set():
            self.cancel_event.set()
            self.on_cancel()

    def _take(self, item: E | _Done[R] | _Failed) -> E | _Done[R]:
        if isinstance(item, _Failed):
            self._finished = True
            raise item.error
        if isinstance(item, _Done):
            self._finished = True
            self._done = item
        return item

    def _get(self) -> E | _Done[R]:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._items))
            item = self._items.popleft()
        return self._take(item)

    async def _aget(self, timeout: float | None) -> E | _Done[R] | Heartbeat:
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._items:
                return self._take(self._items.popleft())
            future: asyncio.Future[None] = loop.create_future()
            self._waiter = (loop, future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._cond:
                if self._waiter is not None and self._waiter[1] is future:
                    self._waiter = None
                item = self._items.popleft() if self._items else None
        return HEARTBEAT if item is None else self._take(item)

    def events(self) -> Iterator[E]:
        """Stream events, blocking; raises the call's error; returns at the result."""
        try:
            while not isinstance(item := self._get(), _Done):
                yield item
        finally:
            self.cancel()

    def result(self) -> R:
        """The result, blocking (stream events are skipped)."""
        try:
            while not isinstance(item := self._get(), _Done):
                pass
            return item.value
        finally:
            self.cancel()

    async def aevents(
        self, heartbeat: float | None = None, first_wait: float | None = None
    ) -> AsyncIterator[E | Heartbeat]:
        """Stream events, awaiting; HEARTBEAT after ``heartbeat`` quiet seconds (after
        ``first_wait`` seconds, if given, for the first item)."""
        wait = heartbeat if first_wait is None else first_wait
        try:
            while True:
                item = await self._aget(wait)
                wait = heartbeat
                if isinstance(item, _Done):
                    return
                yield item
        finally:
            self.cancel()

    async def aresult(self) -> R:
        """The result, awaiting (stream events are skipped)."""
        try:
            while not isinstance(item := await self._aget(None), _Done):
                pass
            return item.value
        finally:
            self.cancel()

    def consumed_result(self) -> R:
        """The result of a call whose events were read to the end (no waiting)."""
        if self._done is None:
            raise RuntimeError(f"call {self.id} has not delivered its result yet")
        return self._done.value
