"""Slow clients are closed: a request must arrive, headers and body, within a time limit.

uvicorn bounds the idle time between keep-alive requests (``timeout_keep_alive``) and the size of
a request head (``h11_max_incomplete_event_size``), but not the time a client may take to send
one: a connection that sends a byte now and then stays open for good (a "slowloris"), and a few
hundred of them hold as many sockets. :class:`RequestTimeoutH11Protocol` is uvicorn's h11
protocol (its ``http=`` setting takes a protocol class) with one timer more: from the moment a
connection is made, or a response completes, the client has ``request_timeout`` seconds to send
the whole next request; otherwise the connection is closed (a 408 when no response has started).
The time the app takes to answer is not limited.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["DEFAULT_REQUEST_TIMEOUT", "RequestTimeoutH11Protocol", "request_timeout_protocol"]

DEFAULT_REQUEST_TIMEOUT = 30.0


class RequestTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request takes too long to arrive."""

    request_timeout: float = DEFAULT_REQUEST_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._request_timer = self.loop.call_later(self.request_timeout, self._request_expired)

    def _disarm(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm()  # the request is complete (or the connection is done)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _request_expired(self) -> None:
        self._request_timer = None
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        started = self.cycle is not None and self.cycle.response_started
        if self.conn.their_state is h11.SEND_BODY and not started:
            self.send_408()
        self.transport.close()

    def send_408(self) -> None:
        """Tell the client why, when it is sending a body and nothing was answered yet."""
        body = b'{"detail":"the request took too long to arrive","error":"RequestTimeout"}'
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            head = self.conn.send(h11.Response(status_code=408, headers=headers))
            rest = self.conn.send(h11.Data(data=body))
            end = self.conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        self.transport.write(b"".join(part or b"" for part in (head, rest, end)))


def request_timeout_protocol(seconds: float) -> type[RequestTimeoutH11Protocol]:
    """The protocol class with ``seconds`` as its request timeout (for ``uvicorn.Config``)."""
    return type(
        "RequestTimeoutH11Protocol", (RequestTimeoutH11Protocol,), {"request_timeout": seconds}
    )
