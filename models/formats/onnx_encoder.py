"""EMBEDDING: an ONNX export of a BERT-style encoder with its ``tokenizer.json``, used as it is.

Layouts: optimum's ``optimum-cli export onnx --task feature-extraction`` folder (``model.onnx``,
``config.json``, ``tokenizer.json``) and the ``onnx/model.onnx`` of sentence-transformers hub
repositories (tokenizer and config at the top). The graph is not converted: the ``cpu`` variant
links it (and its external-data file, if any) into the store and runs it on the CPU EP.
Inputs ``input_ids`` and ``attention_mask`` (int64), and ``token_type_ids`` when the graph has
it (zeros: one segment). Output: ``sentence_embedding`` when the export pooled already,
otherwise the token vectors (``last_hidden_state`` / ``token_embeddings``, ``[b, s, dim]``),
pooled on the host by the folder's ``1_Pooling/config.json`` (mean or CLS; mean without one).
No QNN variant: an export with dynamic shapes does not run on the HTP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from imagine_edge.models.formats._hf import (
    MAX_SAFE_TOKENS,
    broken,
    link_or_copy,
    onnx_io,
    read_json,
    require_files,
    special_tokens,
    write_tokenizer,
)
from imagine_edge.models.formats.base import Detection, SourceFormat
from imagine_edge.models.store import BaseInfo, GraphFile, Manifest, Variant
from imagine_edge.sdk.types import ModelType

__all__ = ["ENCODER_TYPES", "FORMAT", "detect", "prepare_base", "prepare_cpu"]

NAME: Final = "onnx-encoder"
TOKENIZER: Final = "tokenizer.json"
SOURCE_DIR: Final = "source"  # the base keeps the graph here; the variant links it
# config.json model_type values of encoders whose exports take ids and a mask.
ENCODER_TYPES: Final = frozenset(
    {"bert", "distilbert", "roberta", "xlm-roberta", "mpnet", "electra", "camembert"}
)
ROBERTA_TYPES: Final = frozenset({"roberta", "xlm-roberta", "camembert"})
TOKEN_OUTPUTS: Final = ("last_hidden_state", "token_embeddings")
POOLED_OUTPUT: Final = "sentence_embedding"
# The names onnxruntime and optimum give a graph's external weights.
EXTERNAL_DATA: Final = ("model.onnx_data", "model.onnx.data", "model.data")


def _graph(path: Path) -> Path | None:
    for candidate in (path / "model.onnx", path / "onnx" / "model.onnx"):
        if candidate.is_file():
            return candidate
    return None


def _pooling(path: Path) -> str:
    config_file = path / "1_Pooling" / "config.json"
    if not config_file.is_file():
        return "mean"
    config = read_json(NAME, config_file)
    if config.get("pooling_mode_cls_token") is True:
        return "cls"
    if config.get("pooling_mode_mean_tokens") is True:
        return "mean"
    modes = sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v is True)
    raise broken(NAME, path, "mean or CLS pooling in 1_Pooling/config.json", f"{modes}")


def detect(path: Path) -> Detection | None:
    """A folder with ``model.onnx`` (or ``onnx/model.onnx``), ``tokenizer.json`` and the
    ``config.json`` of an encoder that is not a sequence classifier (those are rerankers)."""
    graph = _graph(path) if path.is_dir() else None
    if graph is None or not (path / "config.json").is_file():
        return None
    if (path / "genai_config.json").exists() or (path / "model_index.json").exists():
        return None  # an onnxruntime-genai LLM folder, a diffusion pipeline
    config = read_json(NAME, path / "config.json")
    architectures = [str(a) for a in config.get("architectures") or ()]
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return None  # a cross-encoder
    kind = config.get("model_type")
    if kind not in ENCODER_TYPES:
        return None
    require_files(NAME, path, (TOKENIZER,))
    pooling = _pooling(path)
    files = [graph, path / "config.json", path / TOKENIZER]
    files += [graph.parent / n for n in EXTERNAL_DATA if (graph.parent / n).is_file()]
    description = f"ONNX {kind} encoder ({graph.relative_to(path)}, {pooling} pooling), as exported"
    return Detection(files=tuple(files), description=description)


def prepare_base(path: Path, out: Path) -> BaseInfo:
    """Check the graph's inputs and outputs, keep the graph and write the tokenizer."""
    graph = _graph(path)
    if graph is None or detect(path) is None:
        raise broken(NAME, path, "model.onnx, config.json and tokenizer.json", "not all there")
    inputs, outputs, ranks = onnx_io(NAME, graph)
    if not {"input_ids", "attention_mask"} <= set(inputs) or set(inputs) - {
        "input_ids",
        "attention_mask",
        "token_type_ids",
    }:
        found = f"inputs {list(inputs)}"
        raise broken(NAME, path, "inputs input_ids, attention_mask (token_type_ids)", found)
    chosen = _output(outputs, ranks)
    if chosen is None:
        found = f"outputs {list(outputs)}"
        expected = f"an output {POOLED_OUTPUT!r} or the token vectors {list(TOKEN_OUTPUTS)}"
        raise broken(NAME, path, expected, found)
    config = read_json(NAME, path / "config.json")
    positions = config.get("max_position_embeddings")
    limit = positions if isinstance(positions, int) and positions > 2 else MAX_SAFE_TOKENS
    if config.get("model_type") in ROBERTA_TYPES:
        limit -= 2  # their position tables hold 2 rows more than usable positions
    limit = min(limit, MAX_SAFE_TOKENS)
    source = out / SOURCE_DIR
    source.mkdir(parents=True)
    for f in (graph, *(graph.parent / n for n in EXTERNAL_DATA)):
        if f.is_file():
            link_or_copy(f, source / f.name)
    spec = write_tokenizer(NAME, path / TOKENIZER, out / TOKENIZER, limit)
    facts = {"pooling": _pooling(path), "output": chosen, "inputs": list(inputs)}
    (source / "encoder.json").write_text(json.dumps(facts), encoding="utf-8")
    return BaseInfo(
        tokenizer=Path(TOKENIZER),
        chat_template=None,
        special_tokens=special_tokens(spec, config),
        context_length=limit,
        architecture=None,  # not read: the graph is used as it is
        float_weights=Path(SOURCE_DIR),
    )


def _output(outputs: tuple[str, ...], ranks: dict[str, int]) -> str | None:
    if POOLED_OUTPUT in outputs and ranks.get(POOLED_OUTPUT) == 2:
        return POOLED_OUTPUT
    for name in TOKEN_OUTPUTS:
        if name in outputs and ranks.get(name) == 3:
            return name
    return None


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """The exported graph as it is, linked from the base, on the CPU EP."""
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base kept no graph")
    source = manifest.float_weights
    facts = json.loads((source / "encoder.json").read_text(encoding="utf-8"))
    for f in source.iterdir():
        if f.name != "encoder.json":
            link_or_copy(f, out / f.name)
    graph = GraphFile(out / "model.onnx", tuple(facts["inputs"]), (str(facts["output"]),))
    return Variant(
        ep="cpu",
        dir=out,
        quantization="as exported (not converted)",
        graphs={"encoder": graph},
        options={
            "precision": "as exported",
            "max_tokens": manifest.context_length,
            "pooling": str(facts["pooling"]),
            "output": str(facts["output"]),
        },
        notes=f"{facts['pooling']} pooling of {facts['output']} on the host, then L2.",
    )


FORMAT: Final = SourceFormat(
    name=NAME,
    model_type=ModelType.EMBEDDING,
    detect=detect,
    prepare_base=prepare_base,
    variants={"cpu": prepare_cpu},
    default_variants=("cpu",),
    loader="imagine_edge.models.embedding:load_embedder",
)
