"""Adding a user's model: detect its format, prepare it into the store, register its name.

:func:`add_model` is what ``imagine-edge models add`` runs. The steps, each a named step of one
progress bar: find the format that claims the path, hash its files (the store key), prepare the
base and the variants (a cache hit when the same content was prepared before, under any name),
then write the registry entry. A source whose content a catalog model is prepared from by the
same recipe (the Gemma 3 GGUF the catalog assembles, the SmolLM2 GGUF) is served from that
catalog model's own store folder: a cache hit when the catalog's is prepared. The entry is
written last, so a failure leaves no name behind, and a base this call created is removed again
when a variant then fails.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Final

from imagine_edge.models.add_progress import StepProgress, quiet_libraries
from imagine_edge.models.catalog import CATALOG, CatalogEntry, get_entry, lookup
from imagine_edge.models.formats import SourceFormat, detect, get_format
from imagine_edge.models.manifest import MANIFEST
from imagine_edge.models.store import (
    Lookup,
    Manifest,
    prepare_found,
    user_lookup,
    user_source,
)
from imagine_edge.models.user_models import UserModel, find, register, unregister
from imagine_edge.sdk.errors import ImagineException, InvalidRequestError, ModelRunError
from imagine_edge.sdk.types import ModelType

__all__ = [
    "AddResult",
    "add_model",
    "catalog_folder_of",
    "catalog_names",
    "default_name",
    "prepare_user_model",
    "prepared_manifest",
    "remove_model",
]

_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_STEPS: Final = ("detecting the format", "hashing the files", "preparing", "registering")


def catalog_names() -> set[str]:
    """Every catalog name and alias (lower case): names an added model may not take."""
    return {n.lower() for e in CATALOG for n in (e.name, *e.aliases)}


def default_name(path: Path) -> str:
    """A name from the file or folder name: lower case, runs of other characters as '-'."""
    stem = path.name.removesuffix(".gguf") if path.is_file() else path.name
    name = re.sub(r"[^a-z0-9._]+", "-", stem.lower()).strip("-._")
    return name[:64] or "model"


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidRequestError(
            f"model name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name.lower() in catalog_names():
        raise InvalidRequestError(
            f"the name {name!r} is a catalog model's name or alias; choose another with --name"
        )
    return name


def _entry(fmt: SourceFormat, name: str, source: Path) -> CatalogEntry:
    """The catalog-shaped recipe of a user model, which the store prepares like any other."""
    return CatalogEntry(
        name=name,
        model_type=fmt.model_type,
        description=f"added from {source} ({fmt.name})",
        licence=fmt.licence,
        model_card=f"A model added by the user from {source}, read as format {fmt.name!r}.",
        source_package=f"user:{fmt.name}",
        source_module="",
        source_file=str(source),
        recipe_version=fmt.recipe_version,
        prepare_base=fmt.prepare_base,
        variants=fmt.variants,
        default_variants=fmt.default_variants,
        options={"format": fmt.name},
        default=False,
    )


def _catalog_twin(fmt: SourceFormat, sha256: str, variants: Sequence[str]) -> Lookup | None:
    """The catalog's own store place for a source whose content a catalog entry prepares by the
    same recipe (``SourceFormat.catalog_twins``), when it has the variants and is locatable."""
    name = None if fmt.catalog_twins is None else fmt.catalog_twins().get(sha256)
    if name is None:
        return None
    entry = get_entry(name)
    if any(v not in entry.variants for v in variants):
        return None
    try:
        return lookup(entry.name)
    except ImagineException:  # its packages are gone and the store never held it
        return None


def _locate(
    fmt: SourceFormat, name: str, source: Path, files: Sequence[Path], variants: Sequence[str]
) -> Lookup:
    """Where the source's preparation lives: the catalog twin's folder, else its own."""
    described = user_source(source, files, fmt.name)
    twin = _catalog_twin(fmt, described.sha256, variants)
    return twin or user_lookup(_entry(fmt, name, source), described, source)


def catalog_folder_of(model: UserModel) -> str | None:
    """The catalog model whose store folder an added model shares (a catalog twin), if any."""
    folder = Path(model.store)
    if folder.name.startswith("user-") or not (folder / MANIFEST).is_file():
        return None
    try:
        return Manifest.load(folder).name
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _size(files: Sequence[Path]) -> int:
    return sum(f.stat().st_size for f in files)


class AddResult:
    """What :func:`add_model` did: the registered model, its manifest, whether it was a hit."""

    def __init__(self, model: UserModel, manifest: Manifest, cache_hit: bool) -> None:
        self.model = model
        self.manifest = manifest
        self.cache_hit = cache_hit


@contextmanager
def _progress(show: bool) -> Iterator[StepProgress | None]:
    """Our named steps (when ``show``), other libraries' bars and logs silenced throughout."""
    bar = StepProgress(len(_STEPS)) if show else None
    try:
        with quiet_libraries():
            yield bar
    finally:
        if bar is not None:
            bar.close()


def _prepare(found: Lookup, variants: Sequence[str], on_prepare: Callable[[str], None]) -> Manifest:
    """Prepare ``found``; a base folder this call created goes again if a later step fails."""
    fresh = found.manifest is None
    try:
        return prepare_found(found, variants, on_prepare=on_prepare)
    except BaseException:
        if fresh and (found.folder / MANIFEST).is_file():
            shutil.rmtree(found.folder, ignore_errors=True)
        raise


def add_model(
    source: Path,
    *,
    name: str | None = None,
    model_type: ModelType | None = None,
    variant: str | None = None,
    progress: bool = True,
) -> AddResult:
    """Detect, prepare and register ``source``; InvalidRequestError for a bad source or name,
    ModelRunError when preparation fails (nothing is registered then)."""
    source = source.expanduser().resolve()
    with _progress(progress) as bar:

        def step(i: int) -> None:
            if bar is not None:
                bar.step(i, _STEPS[i])

        step(0)
        fmt, found = detect(source, model_type)
        chosen = _check_name(name if name is not None else default_name(source))
        old = find(chosen)
        if old is not None and old.source != str(source):
            raise InvalidRequestError(
                f"the name {chosen!r} is already taken by a model added from {old.source}; "
                "choose another with --name, or `imagine-edge models remove` it first"
            )
        variants = (variant,) if variant is not None else fmt.default_variants
        if variant is not None and variant not in fmt.variants:
            raise InvalidRequestError(
                f"format {fmt.name!r} has no variant {variant!r}; it has: "
                f"{', '.join(sorted(fmt.variants))}"
            )
        step(1)
        located = _locate(fmt, chosen, source, found.files, variants)
        step(2)
        steps: list[str] = []

        def on_prepare(what: str) -> None:
            steps.append(what)
            if bar is not None:
                bar.describe(what)

        manifest = _prepare(located, variants, on_prepare)
        step(3)
        model = UserModel(
            name=chosen,
            model_type=fmt.model_type,
            format=fmt.name,
            source=str(source),
            description=found.description,
            size_bytes=_size(found.files),
            store=str(manifest.root),
            variants=tuple(sorted(manifest.variants)),
            added=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        register(model)
    return AddResult(model, manifest, cache_hit=not steps)


def prepared_manifest(model: UserModel) -> Manifest | None:
    """The model's prepared manifest when its store folder is still there, without hashing."""
    folder = Path(model.store)
    if not (folder / MANIFEST).is_file():
        return None
    try:
        manifest = Manifest.load(folder)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest if all(v in manifest.variants for v in model.variants) else None


def prepare_user_model(
    model: UserModel, *, on_prepare: Callable[[str], None] | None = None
) -> Manifest:
    """The manifest of an added model, preparing it again from its source when the store lost
    it (after ``models prune`` or a cleared cache)."""
    manifest = prepared_manifest(model)
    if manifest is not None:
        return manifest
    source = Path(model.source)
    if not source.exists():
        raise ModelRunError(
            f"{model.name!r} is not prepared in the store any more and its source {source} is "
            "gone; add it again from where it is now",
            phase="load",
        )
    fmt = get_format(model.format)
    found = fmt.detect(source)
    if found is None:
        raise ModelRunError(f"{source} is no longer a {fmt.name} model; add it again", phase="load")
    located = _locate(fmt, model.name, source, found.files, model.variants)
    with quiet_libraries():
        manifest = _prepare(located, model.variants, on_prepare or (lambda _: None))
    if str(manifest.root) != model.store:  # the source changed: its new content is served
        register(replace(model, store=str(manifest.root)))
    return manifest


def remove_model(name: str) -> UserModel:
    """Unregister ``name``; its prepared folder stays in the store (a later add of the same
    content reuses it; ``models prune`` does not judge added models' folders)."""
    return unregister(name)
