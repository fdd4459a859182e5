"""The one table from errors to HTTP responses; the only module that knows status codes.

The status of an imagine-edge error lives on its class (``InferenceError.status_code``, 429 on
``ImagineAPITooManyRequestsException``); :func:`status_of` reads it. Bodies are
``{"detail": message, "error": class name}`` on the Imagine routes (the official client shows
the raw body; our HTTP client re-raises the named class) and OpenAI's
``{"error": {"message", "type", "code"}}`` under ``/v1``.

One documented exception to the table: on an Imagine *streaming* request a 429 becomes a 409,
because the official client cannot read the body of a 429 on a stream and raises
``httpx.ResponseNotRead`` instead of an Imagine exception (CONTRACT.md §4.2). ``Retry-After``
is kept.
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

from imagine_edge.sdk.errors import (
    ImagineAPIException,
    ImagineException,
    InferenceError,
    InvalidRequestError,
)
from imagine_edge.sdk.validation import validation_message

__all__ = [
    "OPENAI_PREFIX",
    "error_payload",
    "error_response",
    "install_error_handlers",
    "status_of",
]

logger = logging.getLogger(__name__)

OPENAI_PREFIX: Final = "/v1"
_STREAM_STATUS: Final = {429: 409}


def status_of(exc: BaseException) -> int:
    """The HTTP status of an error: the class's code for ours, 500 for anything else."""
    if isinstance(exc, InferenceError):
        return exc.status_code
    if isinstance(exc, ImagineAPIException) and exc.http_status:
        return exc.http_status
    return 500


def error_payload(exc: ImagineException, status: int, *, openai: bool) -> dict[str, Any]:
    """The JSON body describing ``exc``."""
    message = str(exc)
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
    return JSONResponse(error_payload(exc, status, openai=openai), status, dict(headers))


def _is_openai(request: Request) -> bool:
    return request.url.path.startswith(OPENAI_PREFIX + "/")


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to a JSON body with the table's status; bad input never becomes 500."""

    async def imagine_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ImagineException)
        return error_response(exc, openai=_is_openai(request))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError | ValidationError)
        error = InvalidRequestError(validation_message(exc.errors()))
        return error_response(error, openai=_is_openai(request))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
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
        return JSONResponse(body, exc.status_code, dict(exc.headers or {}))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        error = ImagineException(f"internal error: {type(exc).__name__}: {exc}")
        return JSONResponse(error_payload(error, 500, openai=_is_openai(request)), 500)

    app.add_exception_handler(ImagineException, imagine_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(ValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
