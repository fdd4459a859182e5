"""Validation shared by the DTOs, the clients and the server, so that a bad parameter reads the
same in process and over HTTP.

- :func:`build`: a request DTO, or an InvalidRequestError (413 PayloadTooLargeError for too much
  input) with a readable message.
- :func:`validation_message`: readable one-line messages for pydantic validation errors.
- :func:`check_request_text`: every text of a request must be valid Unicode (no lone UTF-16
  surrogates, which JSON's ``\\ud800`` escapes can carry but UTF-8 cannot encode) and all of
  them together at most :data:`MAX_REQUEST_CHARS` characters, checked before any tokenizer sees
  them. A too-long request raises the pydantic error type :data:`TEXT_TOO_LONG`, which the
  server answers with 413 like every other "too much input" error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from imagine_edge.sdk.errors import InvalidRequestError, PayloadTooLargeError

__all__ = [
    "MAX_NESTING",
    "MAX_REQUEST_CHARS",
    "TEXT_TOO_LONG",
    "TOO_LARGE_ERRORS",
    "build",
    "check_request_text",
    "request_error",
    "schema_range",
    "validation_message",
]

MAX_REQUEST_CHARS: Final = 1_000_000
# JSON nesting a request may have (free-form fields such as tool parameters included); deeper
# values could not be serialized again (pydantic stops at a few hundred levels).
MAX_NESTING: Final = 64
TEXT_TOO_LONG: Final = "text_too_long"
# Pydantic error types that mean "too much input" (413), not "a wrong value" (422).
TOO_LARGE_ERRORS: Final = frozenset({TEXT_TOO_LONG})
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
M = TypeVar("M", bound=BaseModel)


def build(cls: type[M], **fields: Any) -> M:
    """``cls(**fields)``, a validation failure raised as the server would answer it: 413 for too
    much input, else InvalidRequestError (422)."""
    try:
        return cls(**fields)
    except ValidationError as e:
        raise request_error(e.errors()) from e


def validation_message(errors: Iterable[Mapping[str, Any]]) -> str:
    """One line per error: 'messages.0.role: Field required'.

    Accepts ``ValidationError.errors()`` and FastAPI's ``RequestValidationError.errors()``; a
    leading 'body' location is dropped, since every error is about the body unless it says
    'query' or 'path'.
    """
    lines = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc[:1] == ["body"]:
            loc = loc[1:]
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        lines.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(lines) or "invalid request"


def request_error(errors: Iterable[Mapping[str, Any]]) -> InvalidRequestError:
    """The error to raise for validation ``errors``: 413 for too much input, else 422."""
    errors = list(errors)
    message = validation_message(errors)
    if any(e.get("type") in TOO_LARGE_ERRORS for e in errors):
        return PayloadTooLargeError(message)
    return InvalidRequestError(message)


def _leaves(value: Any, loc: str, depth: int = 0) -> Iterable[tuple[str, str | float]]:
    """Every string (keys included) and float in ``value`` with its location, depth first."""
    if depth > MAX_NESTING:
        where = ".".join(loc.split(".")[:4]) + "…"
        raise ValueError(f"{where} is nested more than {MAX_NESTING} levels deep")
    if isinstance(value, str | float):
        yield loc, value
    elif isinstance(value, BaseModel):
        yield from _leaves(dict(value), loc, depth)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{loc}.{key}" if loc else str(key)
            if isinstance(key, str):
                yield where, key
            yield from _leaves(item, where, depth + 1)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{loc}.{i}" if loc else str(i), depth + 1)


def check_request_text(value: Any, limit: int = MAX_REQUEST_CHARS) -> None:
    """Raise a pydantic error for a lone surrogate, a NaN or infinity anywhere in ``value``,
    nesting deeper than :data:`MAX_NESTING`, or text over ``limit`` characters in all.

    ``value`` is a request's raw input (dicts, lists, strings, or DTOs built in Python). Floats
    are checked everywhere, free-form fields (tool parameters, content parts) included, because
    a stored NaN could not be sent back as JSON.
    """
    total = 0
    for loc, text in _leaves(value, ""):
        if isinstance(text, float):
            if not math.isfinite(text):
                raise ValueError(f"{loc or 'value'} must be a finite number, got {text}")
            continue
        total += len(text)
        if total > limit:
            raise PydanticCustomError(
                TEXT_TOO_LONG,
                "the request's text is over the limit of {limit} characters (at {loc}); "
                "send less text",
                {"limit": limit, "loc": loc},
            )
        found = _SURROGATE.search(text)
        if found is not None:
            raise ValueError(
                f"{loc or 'text'} contains a lone UTF-16 surrogate "
                f"(U+{ord(found.group()):04X} at character {found.start()}): send valid Unicode"
            )


def schema_range(
    low: float | None = None,
    high: float | None = None,
    *,
    exclusive_low: bool = False,
    items: int | None = None,
) -> dict[str, Any]:
    """JSON-schema keywords stating a range the validators enforce (for the OpenAPI document)."""
    out: dict[str, Any] = {}
    if low is not None:
        out["exclusiveMinimum" if exclusive_low else "minimum"] = low
    if high is not None:
        out["maximum"] = high
    if items is not None:
        out["maxItems"] = items
    return out
