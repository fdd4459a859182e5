"""Server-sent events exactly as the official client reads them (docs/contract.md, Streaming).

Each event is ``data: <json>\\n\\n`` with ASCII-escaped JSON (a raw U+2028 would split the
client's line), quiet gaps carry ``: keep-alive`` comments (the client's read timeout is 60 s
between bytes), a failure after the stream started is a last event with ``finish_reason``
'error', and ``data: [DONE]`` precedes the end of the response. Nothing is compressed.

A call's first item is awaited (for at most a second) before the response starts, so a bad
request found by the model (a prompt over the context, say) usually still gets its 4xx status;
later, it becomes the failure event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final, Generic, Protocol, TypeVar

from fastapi.responses import StreamingResponse
from starlette.responses import Response

from imagine_edge.sdk.engine import Call, Heartbeat
from imagine_edge.sdk.errors import ImagineException
from imagine_edge.server.errors import error_payload, error_response, status_of

__all__ = ["DONE", "KEEPALIVE", "StreamRenderer", "encode", "error_event", "sse_response"]

E = TypeVar("E")
E_contra = TypeVar("E_contra", contravariant=True)

KEEPALIVE: Final = b": keep-alive\n\n"
DONE: Final = b"data: [DONE]\n\n"
_FIRST_WAIT: Final = 1.0
_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def encode(payload: Mapping[str, Any]) -> bytes:
    """One SSE event; ASCII-only JSON so no Unicode line separator can split it."""
    text = json.dumps(payload, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return b"data: " + text.encode("ascii") + b"\n\n"


class StreamRenderer(Protocol[E_contra]):
    """Turns a call's stream events into event payloads for one API flavour."""

    def event(self, event: E_contra) -> list[Mapping[str, Any]]:
        """The payloads for one stream event (none, one or several)."""
        ...

    def end(self) -> list[Mapping[str, Any]]:
        """Payloads after the last event (the call's result is available then)."""
        ...

    def error(self, exc: ImagineException) -> Mapping[str, Any]:
        """The payload of the last event of a failed stream."""
        ...


class _Body(Generic[E]):
    """The response body: the awaited first item, the rest of the events, then [DONE]."""

    def __init__(
        self,
        first: E | Heartbeat | ImagineException | None,
        events: AsyncIterator[E | Heartbeat],
        renderer: StreamRenderer[E],
    ) -> None:
        self._first, self._events, self._renderer = first, events, renderer

    def _frames(self, item: E | Heartbeat) -> bytes:
        if isinstance(item, Heartbeat):
            return KEEPALIVE
        return b"".join(encode(p) for p in self._renderer.event(item))

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # A client that disconnects cancels this task; closing the events then cancels the call.
        try:
            if isinstance(self._first, ImagineException):
                raise self._first
            if self._first is not None:
                yield self._frames(self._first)
                async for item in self._events:
                    yield self._frames(item)
            yield b"".join(encode(p) for p in self._renderer.end())
        except ImagineException as exc:
            yield encode(self._renderer.error(exc))
        finally:
            await self._events.aclose()  # type: ignore[attr-defined]
        yield DONE


async def sse_response(
    call: Call[E, Any], renderer: StreamRenderer[E], *, heartbeat: float, openai: bool
) -> Response:
    """Stream ``call`` as server-sent events, or answer its early 4xx error as JSON."""
    # A queued call must not hold back the response headers for long: a client's connect or
    # read timeout may be short. One second is enough to catch a model's early refusal.
    events = call.aevents(heartbeat, first_wait=min(heartbeat, _FIRST_WAIT))
    first: E | Heartbeat | ImagineException | None
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = None
    except ImagineException as exc:
        if status_of(exc) < 500:
            return error_response(exc, stream=True, openai=openai)
        first = exc
    body = _Body(first, events, renderer)
    return StreamingResponse(body.__aiter__(), media_type="text/event-stream", headers=_HEADERS)


def error_event(
    payload: Mapping[str, Any], exc: ImagineException, *, openai: bool
) -> dict[str, Any]:
    """``payload`` (a finish_reason 'error' event) with the error's description added."""
    status = status_of(exc)
    described = error_payload(exc, status, openai=openai)
    extra = (
        described["error"]
        if openai
        else {"message": described["detail"], "type": described["error"], "status": status}
    )
    return {**payload, "error": extra}
