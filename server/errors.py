"""The one table from errors to HTTP responses; the only module that knows status codes.

The status of an imagine-edge error lives on its class (``InferenceError.status_code``, 429 on
``ImagineAPITooManyRequestsException``); :func:`status_of` reads it. Bodies are
``{"detail": message, "error": class name}`` on the Imagine routes (the official client shows
the raw body; our HTTP client re-raises the named class) and OpenAI's
``{"error": {"message", "type", "code"}}`` under ``/v1``.

One documented exception to the table: on an Imagine *streaming* request a 429 becomes a 409,
because the official client cannot read the body of a 429 on a stream and raises
``httpx.ResponseNotRead`` instead of an Imagine exception (docs/contract.md, Errors).
``Retry-After``
is kept.

Every error text passes :func:`~imagine_edge.server.sanitize.public_message` (no absolute paths,
heap addresses or onnxruntime internals; the log keeps the full text). A validation error about
too much input (text over the request's character limit, too many items) is a 413, any other a
422. A 5xx answer carries ``Connection: close``, so a keep-alive client knows the server ends the
connection, and an error nobody expected is answered by :class:`ErrorBoundaryMiddleware` with a
JSON 500 instead of escaping to the server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagine_edge.sdk.errors import (
    ImagineAPIException,
    ImagineException,
    InferenceError,
)
from imagine_edge.sdk.validation import request_error
from imagine_edge.server.sanitize import public_message

__all__ = [
    "OPENAI_PREFIX",
    "ErrorBoundaryMiddleware",
    "error_payload",
    "error_response",
    "install_error_handlers",
    "status_of",
]

logger = logging.getLogger(__name__)

OPENAI_PREFIX: Final = "/v1"
_STREAM_STATUS: Final = {429: 409}
_METHODS: Final = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def status_of(exc: BaseException) -> int:
    """The HTTP status of an error: the class's code for ours, 500 for anything else."""
    if isinstance(exc, InferenceError):
        return exc.status_code
    if isinstance(exc, ImagineAPIException) and exc.http_status:
        return exc.http_status
    return 500


def error_payload(exc: ImagineException, status: int, *, openai: bool) -> dict[str, Any]:
    """The JSON body describing ``exc``, its message made safe to show."""
    message = public_message(str(exc))
    if openai:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {
            "error": {"message": message, "type": kind, "param": None, "code": type(exc).__name__}
        }
    return {"detail": message, "error": type(exc).__name__}


def error_response(
    exc: ImagineException, *, stream: bool = False, openai: bool = False
) -> JSONResponse:
    """The response for an error raised before any byte of the answer was sent."""
    status = status_of(exc)
    if stream and not openai:
        status = _STREAM_STATUS.get(status, status)
    headers: Mapping[str, str] = exc.headers if isinstance(exc, ImagineAPIException) else {}
    if status >= 500:
        logger.error("request failed: %s", exc)
        headers = {**headers, "Connection": "close"}
    return JSONResponse(error_payload(exc, status, openai=openai), status, dict(headers))


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route fully matches on the request's path (routes may be nested)."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PREFIX + "/")


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to a JSON body with the table's status; bad input never becomes 500."""

    async def imagine_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ImagineException)
        return error_response(exc, openai=_is_openai(request))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError | ValidationError)
        return error_response(request_error(exc.errors()), openai=_is_openai(request))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route that matched the path; GET (a history) and
            # POST (a run) on one path are two routes.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        body: dict[str, Any] = {"detail": exc.detail}
        if _is_openai(request):
            body = {
                "error": {
                    "message": str(exc.detail),
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            }
        return JSONResponse(body, exc.status_code, headers)

    app.add_exception_handler(ImagineException, imagine_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_middleware(ErrorBoundaryMiddleware)


class ErrorBoundaryMiddleware:
    """Answers an unexpected exception with a sanitized JSON 500 and ``Connection: close``.

    Starlette's own handler for ``Exception`` re-raises after answering, and the server then
    drops the connection; this one ends the exchange cleanly. An exception after the response
    started cannot be answered: it is re-raised, and the server closes the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:
                raise
            logger.exception("unexpected error on %s %s", scope.get("method"), scope["path"])
            error = ImagineException(f"internal error: {type(exc).__name__}: {exc}")
            openai = str(scope["path"]).startswith(OPENAI_PREFIX + "/")
            response = JSONResponse(
                error_payload(error, 500, openai=openai), 500, {"Connection": "close"}
            )
            await response(scope, receive, send)
