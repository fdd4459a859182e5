"""Formats of user-supplied models (``imagine-edge models add``); see :mod:`.base`.

Every module of this package that exports ``FORMAT`` (a :class:`SourceFormat`) is one format;
``FORMATS`` lists them all, found by walking the package, so adding a format is adding a module.
:func:`detect` asks each one whether it claims a path.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from imagine_edge.models.formats.base import Detection, SourceFormat
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import ModelType

__all__ = ["FORMATS", "Detection", "SourceFormat", "detect", "get_format"]


def _discover() -> tuple[SourceFormat, ...]:
    found: list[SourceFormat] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        fmt = getattr(module, "FORMAT", None)
        if isinstance(fmt, SourceFormat):
            found.append(fmt)
    return tuple(found)


FORMATS: tuple[SourceFormat, ...] = _discover()


def get_format(name: str) -> SourceFormat:
    """The format called ``name`` (as recorded in the registry)."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise InvalidRequestError(
        f"unknown model format {name!r}; this version reads: {', '.join(f.name for f in FORMATS)}"
    )


def _refuse_other_type(path: Path, model_type: ModelType) -> None:
    """When a format of another type claims ``path``, say which: the --type is what is wrong."""
    for fmt in FORMATS:
        if fmt.model_type == model_type:
            continue
        try:
            found = fmt.detect(path)
        except InvalidRequestError:  # a broken folder of that format: not the point here
            continue
        if found is not None:
            raise InvalidRequestError(
                f"{path} is a {fmt.name} model of type {fmt.model_type.value} "
                f"({found.description}), not {model_type.value}: drop --type, or pass "
                f"--type {fmt.model_type.value}"
            )


def detect(path: Path, model_type: ModelType | None = None) -> tuple[SourceFormat, Detection]:
    """The format that claims ``path`` (of ``model_type`` when given) and what it found.

    A missing path, or a path no format claims, is an InvalidRequestError that names what each
    format expects; a format that claims the path but finds it broken raises its own.
    """
    if not path.exists():
        raise InvalidRequestError(f"no such file or folder: {path}")
    candidates = [f for f in FORMATS if model_type is None or f.model_type == model_type]
    if model_type is not None and not candidates:
        readable = ", ".join(sorted({f.model_type.value for f in FORMATS}))
        raise InvalidRequestError(
            f"models of type {model_type.value} cannot be added: this version has no "
            f"{model_type.value} format ({model_type.value} serves the catalog's models only); "
            f"the types that can be added are: {readable}"
        )
    for fmt in candidates:
        found = fmt.detect(path)
        if found is not None:
            return fmt, found
    if model_type is not None:
        _refuse_other_type(path, model_type)
    kind = "folder" if path.is_dir() else "file"
    listing = "; ".join(f"{f.expects or f.name} ({f.model_type.value})" for f in candidates)
    wanted = f" of type {model_type.value}" if model_type is not None else ""
    found_names = (
        ", ".join(sorted(p.name for p in path.iterdir())[:12]) if path.is_dir() else path.name
    )
    raise InvalidRequestError(
        f"{path} is not a model format this version reads{wanted}: expected {listing or 'none'}; "
        f"found a {kind} ({found_names or 'empty'})"
    )
