"""EMBEDDING: a sentence-transformers folder of a BERT encoder, prepared with our int8 recipe.

The folder is what ``SentenceTransformer.save`` writes (and what the Hugging Face hub holds for
sentence-transformers models): ``modules.json`` (Transformer, Pooling, optionally Normalize),
``config.json`` of a ``bert`` model, ``model.safetensors``, ``tokenizer.json``,
``1_Pooling/config.json`` and optionally ``sentence_bert_config.json`` (``max_seq_length``).
Preparation is all-MiniLM-L6-v2's recipe (:mod:`imagine_edge.models.prepare.minilm`): the float
weights are kept, then the int8 graph (``cpu``), the float graph (``cpu-fp32``) and the QNN
bucket graphs (``qnn``) are exported from them. Mean pooling only (the recipe's graphs pool):
a folder asking for CLS or max pooling is refused. Vectors are always L2-normalised, with or
without a Normalize module (cosine similarity is unchanged by it).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from imagine_edge.models.formats._hf import (
    MAX_SAFE_TOKENS,
    bert_architecture,
    broken,
    read_json,
    require_files,
    special_tokens,
    write_tokenizer,
)
from imagine_edge.models.formats.base import Detection, SourceFormat
from imagine_edge.models.store import BaseInfo, Manifest, Variant, VariantPreparer
from imagine_edge.sdk.types import ModelType

__all__ = ["FORMAT", "detect", "pooling_mode", "prepare_base"]

NAME: Final = "sentence-transformers"
WEIGHTS: Final = ("config.json", "model.safetensors")
FILES: Final = (*WEIGHTS, "tokenizer.json", "modules.json")
HF_DIR: Final = "hf"
TOKENIZER: Final = "tokenizer.json"
POOLING_TYPE: Final = "sentence_transformers.models.Pooling"
TRANSFORMER_TYPE: Final = "sentence_transformers.models.Transformer"
KNOWN_TYPES: Final = frozenset(
    {TRANSFORMER_TYPE, POOLING_TYPE, "sentence_transformers.models.Normalize"}
)


def _modules(folder: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise broken(NAME, folder, "modules.json to be JSON", f"reading it: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(m, dict) for m in data):
        raise broken(NAME, folder, "modules.json to be a list of modules", f"{type(data).__name__}")
    return data


def pooling_mode(folder: Path, modules: list[dict[str, Any]]) -> str:
    """The pooling the folder's Pooling module asks for: "mean", "cls", "max", ..."""
    pooling = [m for m in modules if m.get("type") == POOLING_TYPE]
    if len(pooling) != 1:
        raise broken(NAME, folder, "one Pooling module in modules.json", f"{len(pooling)}")
    config = read_json(NAME, folder / str(pooling[0].get("path", "")) / "config.json")
    modes = [
        k.removeprefix("pooling_mode_")
        for k, v in config.items()
        if k.startswith("pooling_mode_") and v is True
    ]
    if len(modes) != 1:
        raise broken(NAME, folder, "one pooling mode set in the pooling config", f"{modes}")
    return {"mean_tokens": "mean", "cls_token": "cls", "max_tokens": "max"}.get(modes[0], modes[0])


def detect(path: Path) -> Detection | None:
    """A folder with ``modules.json`` naming a Transformer module and safetensors weights (an
    ONNX-only folder is :mod:`.onnx_encoder`'s)."""
    if not path.is_dir() or not (path / "modules.json").is_file():
        return None
    if not (path / "model.safetensors").exists() and (path / "onnx").is_dir():
        return None  # an ONNX export of a sentence-transformers model: onnx_encoder's
    modules = _modules(path)
    types = [str(m.get("type", "")) for m in modules]
    if TRANSFORMER_TYPE not in types:
        return None
    require_files(NAME, path, FILES)
    unknown = sorted(set(types) - KNOWN_TYPES)
    if unknown:
        raise broken(NAME, path, "Transformer, Pooling and Normalize modules", f"also {unknown}")
    mode = pooling_mode(path, modules)
    if mode != "mean":
        raise broken(NAME, path, "mean pooling (the recipe's graphs pool by mean)", f"{mode}")
    config = read_json(NAME, path / "config.json")
    if config.get("model_type") != "bert":
        found = f"model_type {config.get('model_type')!r}"
        raise broken(NAME, path, "a BERT encoder (config.json model_type 'bert')", found)
    arch = bert_architecture(NAME, path, config)
    files = [path / n for n in FILES]
    files += [
        path / str(m.get("path", "")) / "config.json"
        for m in modules
        if m.get("type") == POOLING_TYPE
    ]
    if (path / "sentence_bert_config.json").is_file():
        files.append(path / "sentence_bert_config.json")
    description = (
        f"BERT sentence encoder, {arch.num_layers} layers, {arch.hidden_size} dimensions, "
        "mean pooling (float32 safetensors)"
    )
    return Detection(files=tuple(files), description=description)


def max_tokens(path: Path, config: dict[str, Any]) -> int:
    """The folder's ``max_seq_length`` (512 when it has none), within the position table and
    the length the recipe's graphs are checked at."""
    limit = MAX_SAFE_TOKENS
    if (path / "sentence_bert_config.json").is_file():
        value = read_json(NAME, path / "sentence_bert_config.json").get("max_seq_length")
        if isinstance(value, int) and value > 0:
            limit = value
    positions = config.get("max_position_embeddings")
    return min(limit, positions if isinstance(positions, int) else limit, MAX_SAFE_TOKENS)


def prepare_base(path: Path, out: Path) -> BaseInfo:
    """Copy the float weights into ``out/hf`` and write the tokenizer (truncation at the
    folder's limit, no padding)."""
    if detect(path) is None:
        raise broken(NAME, path, "a sentence-transformers folder", "modules.json is missing")
    config = read_json(NAME, path / "config.json")
    limit = max_tokens(path, config)
    hf = out / HF_DIR
    hf.mkdir(parents=True)
    for name in WEIGHTS:
        shutil.copyfile(path / name, hf / name)
    spec = write_tokenizer(NAME, path / TOKENIZER, out / TOKENIZER, limit)
    return BaseInfo(
        tokenizer=Path(TOKENIZER),
        chat_template=None,
        special_tokens=special_tokens(spec, config),
        context_length=limit,
        architecture=bert_architecture(NAME, path, config),
        float_weights=Path(HF_DIR),
    )


def _at_model_limit(preparer: VariantPreparer) -> VariantPreparer:
    """The recipe's CPU variant at the model's own token limit (the recipe says 256)."""

    def prepare(manifest: Manifest, out: Path) -> Variant:
        variant = preparer(manifest, out)
        if "max_tokens" not in variant.options:
            return variant
        limit = manifest.context_length  # the CPU graphs have dynamic shapes
        return replace(variant, options={**variant.options, "max_tokens": limit})

    return prepare


def _variants() -> dict[str, VariantPreparer]:
    from imagine_edge.models.prepare import minilm

    return {
        "cpu": _at_model_limit(minilm.prepare_cpu),
        "cpu-fp32": _at_model_limit(minilm.prepare_cpu_fp32),
        "qnn": minilm.prepare_qnn,
    }


FORMAT: Final = SourceFormat(
    name=NAME,
    model_type=ModelType.EMBEDDING,
    detect=detect,
    prepare_base=prepare_base,
    variants=_variants(),
    default_variants=("cpu",),
    loader="imagine_edge.models.embedding:load_embedder",
    recipe_version=2,  # 2: uint8 matmul weights (the catalog MiniLM's recipe 5)
)
