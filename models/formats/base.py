"""What one kind of user-supplied model source is: how to recognise it, prepare it and load it.

A :class:`SourceFormat` is the user-model counterpart of a catalog entry's recipe. Each format
module in this package exports one ``FORMAT``; ``imagine-edge models add PATH`` asks every
format's ``detect`` and prepares with the one that claims the path. Preparation writes into the
content-addressed store exactly as a catalog model's does, so the loaders are the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from imagine_edge.models.store import BaseInfo, VariantPreparer
from imagine_edge.sdk.types import ModelType

__all__ = ["Detection", "SourceFormat"]


@dataclass(frozen=True, slots=True)
class Detection:
    """What ``detect`` found: the files that make up the source (hashed into the store key)
    and a one-line description for ``models list`` (architecture, precision)."""

    files: tuple[Path, ...]
    description: str


@dataclass(frozen=True, slots=True)
class SourceFormat:
    """One layout of model files users already have (a GGUF file, a sentence-transformers
    folder, ...).

    ``detect(path)`` looks only at names and headers (cheap) and returns None when the path is
    not of this format; it raises ``InvalidRequestError`` when the path is of this format but
    broken (truncated, missing a file, an architecture it cannot run), saying what it expected
    and what it found. ``prepare_base(path, out_dir)`` and each of ``variants`` have the
    signatures of a catalog entry's; ``loader`` is the ``"module:function"`` that loads the
    prepared manifest (the catalog's loaders). ``catalog_twins`` lists the catalog entries
    whose recipe gives the same result from the same content.
    """

    name: str
    model_type: ModelType
    detect: Callable[[Path], Detection | None]
    prepare_base: Callable[[Path, Path], BaseInfo]
    variants: Mapping[str, VariantPreparer]
    default_variants: tuple[str, ...]
    loader: str
    recipe_version: int = 1
    # What the format looks for, for the error that lists every format when none claims a path
    # (e.g. "a .gguf file"); empty: the format's name is said instead.
    expects: str = ""
    licence: str = "as given by the model's source"
    # sha256 of a whole source -> the catalog entry that prepares that very content by the same
    # recipe (e.g. the Gemma 3 GGUF the catalog assembles from its packages): an add of it is
    # then served from, and a cache hit on, the catalog's own store folder. None: no twins.
    catalog_twins: Callable[[], Mapping[str, str]] | None = None
