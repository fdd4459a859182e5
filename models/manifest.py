"""Prepared-model manifests: the typed form of ``manifest.json`` and its JSON round trip.

A prepared model's folder in the store (``models/store/``) holds one ``manifest.json``: what was
prepared, from which source, and where each variant's graphs are. After :meth:`Manifest.load`
every path is absolute; on disk they are relative to the folder, so a store can move.

Schema (``schema_version`` 1)::

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
    sampling_defaults    {temperature, top_k, top_p, max_tokens}: what a request leaves unset
                         takes (LLMs; absent or null in manifests written before it existed:
                         the loader then keeps its older rule, see models/llm.py)
    variants             {variant name: {ep, dir, quantization, options, notes,
                          graphs {role: {path, inputs [..], outputs [..]}}}}

Variant ``cpu`` has one graph, role ``decoder``; QNN variants (``qnn``, and ``qnn-truncated`` for
tests) have roles ``prefill`` and ``decode``, with their shapes and host protocol in the variant's
``options`` and ``notes``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from imagine_edge.runtime.sampling import SamplingDefaults

__all__ = [
    "MANIFEST",
    "SCHEMA_VERSION",
    "TMP_PREFIX",
    "Architecture",
    "BaseInfo",
    "GraphFile",
    "Manifest",
    "OptionValue",
    "SamplingDefaults",
    "Source",
    "SpecialTokens",
    "Variant",
    "VariantPreparer",
    "write_json_atomic",
]

SCHEMA_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
# Work in progress in the store starts with this; a reader never takes such a file or folder.
TMP_PREFIX: Final = ".tmp-"

OptionValue = str | int | float


@dataclass(frozen=True, slots=True)
class Source:
    """Where the weights came from: a pip package and one file inside it (or a glob of files)."""

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
    sampling_defaults: SamplingDefaults | None = None

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
            "sampling_defaults": _sampling_json(self.sampling_defaults),
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
            sampling_defaults=_sampling_from_json(data.get("sampling_defaults")),
        )

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        """Read ``folder/manifest.json``."""
        with open(folder / MANIFEST, encoding="utf-8") as f:
            return cls.from_json(json.load(f), folder)

    def save(self) -> None:
        """Write ``root/manifest.json`` atomically (temporary file, then ``os.replace``)."""
        write_json_atomic(self.root / MANIFEST, self.to_json())


@dataclass(frozen=True, slots=True)
class BaseInfo:
    """What a base preparation wrote (paths relative to its folder) and read from the weights."""

    tokenizer: Path
    chat_template: str | None
    special_tokens: SpecialTokens
    context_length: int
    architecture: Architecture | None
    float_weights: Path | None
    # Read from the source's own metadata where it has any (a GGUF's general.sampling.*, a
    # genai_config's search section); the catalog entry's own values take precedence.
    sampling_defaults: SamplingDefaults | None = None


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


def _sampling_json(d: SamplingDefaults | None) -> dict[str, Any] | None:
    if d is None:
        return None
    return {
        "temperature": d.temperature,
        "top_k": d.top_k,
        "top_p": d.top_p,
        "max_tokens": d.max_tokens,
    }


def _sampling_from_json(data: Mapping[str, Any] | None) -> SamplingDefaults | None:
    if data is None:
        return None
    return SamplingDefaults(
        temperature=float(data["temperature"]),
        top_k=int(data["top_k"]),
        top_p=float(data["top_p"]),
        max_tokens=int(data["max_tokens"]),
    )


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` as a temporary file beside it, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
