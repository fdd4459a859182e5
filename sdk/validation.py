"""Building request DTOs: a validation failure is an InvalidRequestError with a readable message.

Shared by the clients and the server, so that a bad parameter reads the same in process and
over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from imagine_edge.sdk.errors import InvalidRequestError

__all__ = ["build", "validation_message"]

M = TypeVar("M", bound=BaseModel)


def build(cls: type[M], **fields: Any) -> M:
    """``cls(**fields)``, a validation failure raised as InvalidRequestError (as a server's 422)."""
    try:
        return cls(**fields)
    except ValidationError as e:
        raise InvalidRequestError(validation_message(e.errors())) from e


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
