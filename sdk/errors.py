"""The exception hierarchy, shared by the in-process API, the server and the HTTP client.

The top of the tree is the official client's (docs/contract.md, Errors), so code written against
``python-imagine-sdk`` catches our errors unchanged::

    ImagineException                         .message
    ├── ImagineAPIException                  .message, .http_status, .headers
    │   ├── ImagineAPIStatusException        retryable 5xx
    │   ├── ImagineAPITooManyRequestsException   429: a model's queue is full
    │   └── InferenceError                   our typed errors, each with its status code
    │       ├── InvalidRequestError          400/422: a bad value (names it and the valid range)
    │       │   ├── ContextLengthError       prompt + max_tokens exceed the model's context
    │       │   └── PayloadTooLargeError     413: body, audio or image beyond a limit
    │       ├── ModelNotFoundError           404: unknown model name
    │       ├── ModelUnavailableError        409: the model type or model is not available here
    │       ├── NoHistoryError               404: a history with no records yet
    │       └── ModelRunError                500: the model failed while running (phase-tagged)
    └── ImagineConnectionException           the server could not be reached

Raising one of these in-process behaves as the official client behaves against a server that
answered with ``http_status``. ``server/`` maps them to responses with one table: the status code
lives on the class, nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

__all__ = [
    "ContextLengthError",
    "ImagineAPIException",
    "ImagineAPIStatusException",
    "ImagineAPITooManyRequestsException",
    "ImagineConnectionException",
    "ImagineException",
    "InferenceError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "ModelRunError",
    "ModelUnavailableError",
    "NoHistoryError",
    "PayloadTooLargeError",
]


class ImagineException(Exception):
    """Base of every error raised by imagine-edge."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return self.message or "<empty message>"


class ImagineAPIException(ImagineException):
    """An error answered by the API, with its HTTP status."""

    def __init__(
        self,
        message: str | None = None,
        http_status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.headers: dict[str, str] = dict(headers or {})


class ImagineAPIStatusException(ImagineAPIException):
    """A retryable server error (500, 502, 503, 504) that persisted after retries."""


class ImagineAPITooManyRequestsException(ImagineAPIException):
    """The model's request queue is full (429); retry after ``headers['Retry-After']`` s."""

    def __init__(self, message: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message, 429, {"Retry-After": str(max(1, round(retry_after)))})
        self.retry_after = retry_after


class ImagineConnectionException(ImagineException):
    """The server could not be reached."""


class InferenceError(ImagineAPIException):
    """A typed error of the runtime; ``status_code`` is the HTTP status it maps to."""

    status_code: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message, self.status_code)


class InvalidRequestError(InferenceError):
    """The request is malformed or a value is out of range."""

    status_code = 422


class ContextLengthError(InvalidRequestError):
    """The prompt plus max_tokens does not fit the model's context window."""

    status_code = 400


class PayloadTooLargeError(InvalidRequestError):
    """A body, audio file or image is larger than the configured limit."""

    status_code = 413


class ModelNotFoundError(InferenceError):
    """No model of that name (or alias) exists."""

    status_code = 404


class ModelUnavailableError(InferenceError):
    """The model exists in the contract but cannot run here (not prepared, type not built)."""

    status_code = 409


class NoHistoryError(InferenceError):
    """A history was asked for before any request of that kind was recorded."""

    status_code = 404


class ModelRunError(InferenceError):
    """The model failed while loading or running; ``phase`` says which."""

    status_code = 500

    def __init__(self, message: str, phase: str = "run") -> None:
        super().__init__(f"{phase}: {message}")
        self.phase = phase
