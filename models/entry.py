"""What a catalog entry is: :class:`CatalogEntry`, a model the store can prepare.

Its own module, below both the catalog (``models/catalog.py``, the list of entries, whose
recipes import the store) and the store (``models/store/``, which prepares an entry), so neither
imports the other to name the type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imagine_edge.models.manifest import BaseInfo, OptionValue, VariantPreparer
from imagine_edge.runtime.sampling import SamplingDefaults
from imagine_edge.sdk.types import ModelType

__all__ = ["CatalogEntry"]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """A model the store can prepare from a pip package's weights file.

    ``prepare_base(weights_file, out_dir)`` writes the tokenizer (and float weights, if the
    recipe keeps them); each of ``variants`` builds one set of graphs from the base.
    ``options`` are part of the store key: change one and the model is prepared anew.
    """

    name: str
    model_type: ModelType
    description: str
    licence: str
    model_card: str
    source_package: str  # the distribution name, as pip knows it
    source_module: str  # its import name (located with find_spec, never imported)
    source_file: str  # the weights file, relative to the package folder
    recipe_version: int
    prepare_base: Callable[[Path, Path], BaseInfo]
    variants: Mapping[str, VariantPreparer]
    default_variants: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    options: Mapping[str, OptionValue] = field(default_factory=dict)
    # Prepared by ``imagine-edge models prepare`` with no names.
    default: bool = True
    # The package version the catalog is tested with: the pin of "pip install" hints, and the
    # store's preferred folder when the package is absent (None: the package is imagine-edge).
    source_version: str | None = None
    # An LLM's sampling defaults, written into its manifest (over what its source's metadata
    # says); None: the source's, else the loader's fallback (models/llm.py).
    sampling_defaults: SamplingDefaults | None = None
