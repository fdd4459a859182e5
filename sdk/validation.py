"""Readable messages for pydantic validation errors, shared by the client and the server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["validation_message"]


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
