"""ASGI middleware: the Host and Origin check, the API key check and the body size limit.

All are plain ASGI (not ``BaseHTTPMiddleware``), so streamed responses pass through untouched
and a client disconnect still reaches the streaming body at once.

The key is compared in constant time and never logged or echoed. Without a configured key any
bearer token (or none) is accepted, since the official client always sends one. Image files
are served without a key: the user fetches them with a plain HTTP client (docs/contract.md,
Endpoints).
Only the exact image-file routes are exempt (``public`` matches whole paths), not any path that
happens to end like one.

On a loopback bind, :class:`LoopbackGuardMiddleware` answers 403 to a foreign ``Host`` header
(DNS rebinding: a web page whose name resolves to 127.0.0.1) and to a foreign ``Origin`` (a web
page posting to the local server; a multipart upload needs no CORS preflight). Loopback names
and addresses are always allowed; more hosts and origins can be allowed with patterns
(``fnmatch`` style, ``*`` for all), as Ollama's ``OLLAMA_ORIGINS``.
"""

from __future__ import annotations

import fnmatch
import hmac
import ipaddress
import json
import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagine_edge.server.errors import OPENAI_PREFIX

__all__ = [
    "ApiKeyMiddleware",
    "BodyLimitMiddleware",
    "LoopbackGuardMiddleware",
    "is_loopback",
]


def is_loopback(host: str) -> bool:
    """True for names and addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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

    def __init__(self, app: ASGIApp, api_key: str | None, public: re.Pattern[str]) -> None:
        self.app = app
        self._key = api_key.encode() if api_key else None
        self._public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self._key is None
            or (scope["method"] in ("GET", "HEAD") and self._public.fullmatch(scope["path"]))
        ):
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


def _host_name(host: str) -> str:
    """The name in a Host header: 'localhost:8000' -> 'localhost', '[::1]:80' -> '::1'."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class LoopbackGuardMiddleware:
    """Answers 403 to a request whose Host or Origin is not this machine or allow-listed."""

    def __init__(
        self, app: ASGIApp, allowed_hosts: Sequence[str] = (), allowed_origins: Sequence[str] = ()
    ) -> None:
        self.app = app
        self._hosts = [h.lower() for h in allowed_hosts]
        self._origins = [o.lower().rstrip("/") for o in allowed_origins]

    def _host_ok(self, host: str) -> bool:
        name = _host_name(host.lower())
        return is_loopback(name) or any(fnmatch.fnmatchcase(name, h) for h in self._hosts)

    def _origin_ok(self, origin: str) -> bool:
        origin = origin.lower().rstrip("/")
        if any(fnmatch.fnmatchcase(origin, o) for o in self._origins):
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        origin = headers.get(b"origin")
        if host and not self._host_ok(host):
            what = f"Host {host[:100]!r} is not this machine"
        elif origin is not None and not self._origin_ok(origin.decode("latin-1")):
            what = f"Origin {origin.decode('latin-1')[:100]!r} is not allowed"
        else:
            await self.app(scope, receive, send)
            return
        message = (
            f"{what}: the server listens on a loopback address and answers only local clients; "
            "allow more with --allow-host / --allow-origin (or IMAGINE_EDGE_HOSTS / "
            "IMAGINE_EDGE_ORIGINS)"
        )
        await _reply(send, 403, _error(scope["path"], message, "Forbidden"), {})
