"""ASGI middleware: the API key check and the request body size limit.

Both are plain ASGI (not ``BaseHTTPMiddleware``), so streamed responses pass through untouched
and a client disconnect still reaches the streaming body at once.

The key is compared in constant time and never logged or echoed. Without a configured key any
bearer token (or none) is accepted, since the official client always sends one. Image files
(``…/files/<id>.png``) are served without a key: the user fetches them with a plain HTTP client
(CONTRACT.md §2.10).
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagine_edge.server.errors import OPENAI_PREFIX

__all__ = ["PUBLIC_FILE", "ApiKeyMiddleware", "BodyLimitMiddleware"]

PUBLIC_FILE: Final = re.compile(r"/files/[A-Za-z0-9_-]+\.png$")


async def _reply(send: Send, status: int, body: dict[str, object], headers: dict[str, str]) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def _error(path: str, message: str, code: str) -> dict[str, object]:
    if path.startswith(OPENAI_PREFIX + "/"):
        kind = "authentication_error" if code == "Unauthorized" else "invalid_request_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"detail": message, "error": code}


class ApiKeyMiddleware:
    """Answers 401 unless ``Authorization: Bearer <key>`` matches (when a key is set)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self._key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._key is None or PUBLIC_FILE.search(scope["path"]):
            await self.app(scope, receive, send)
            return
        auth = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key):
            await self.app(scope, receive, send)
            return
        message = "missing or wrong API key: send the header 'Authorization: Bearer <key>'"
        await _reply(
            send,
            401,
            _error(scope["path"], message, "Unauthorized"),
            {"WWW-Authenticate": "Bearer"},
        )


class BodyLimitMiddleware:
    """Answers 413 for a request body over ``max_bytes``, before the app parses any of it.

    The body is read up front (the app would read all of it anyway) and replayed; later
    ``receive`` calls go to the server, so a disconnect is still seen.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            await self._too_large(scope, send, int(declared))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # disconnected: let the app see it
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self._max:
                await self._too_large(scope, send, size)
                return
            if not message.get("more_body", False):
                break
        replay: list[Message] = [
            {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        ]

        async def replaying() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replaying, send)

    async def _too_large(self, scope: Scope, send: Send, size: int) -> None:
        message = f"request body of {size} bytes exceeds the limit of {self._max} bytes"
        await _reply(send, 413, _error(scope["path"], message, "PayloadTooLargeError"), {})
