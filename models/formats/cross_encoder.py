"""RERANKER: a Hugging Face cross-encoder folder (a sequence classifier with one label).

The folder ``CrossEncoder.save`` or ``save_pretrained`` writes: ``config.json`` whose
``architectures`` is a ``*ForSequenceClassification`` with one label, ``tokenizer.json``, and
either ``model.safetensors`` (exported to ONNX by
:func:`imagine_edge.models.prepare.minilm_cross.export_cross_encoder`, float32) or an ONNX export
(``model.onnx`` or ``onnx/model.onnx``, used as it is). The model reads each (query, document)
pair together and gives one logit; the score is its sigmoid, in (0, 1), as sentence-transformers'
``CrossEncoder.predict`` reports for one-label models. CPU only: no QNN variant.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Final

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
from imagine_edge.models.store import BaseInfo, GraphFile, Manifest, OptionValue, Variant
from imagine_edge.sdk.types import ModelType

__all__ = ["FORMAT", "GRAPH_ROLE", "detect", "num_labels", "prepare_base", "prepare_cpu"]

NAME: Final = "cross-encoder"
TOKENIZER: Final = "tokenizer.json"
WEIGHTS_DIR: Final = "hf"  # safetensors sources: config, weights and tokenizer for the export
SOURCE_DIR: Final = "source"  # ONNX sources: the graph, linked
GRAPH_ROLE: Final = "cross_encoder"
INPUTS: Final = ("input_ids", "attention_mask", "token_type_ids")


def num_labels(config: dict[str, Any]) -> int:
    """The classifier's label count as transformers reads it (``id2label`` first; 2 when the
    config says nothing, transformers' default)."""
    labels = config.get("id2label")
    if isinstance(labels, dict) and labels:
        return len(labels)
    value = config.get("num_labels", 2)
    return value if isinstance(value, int) else 2


def _graph(path: Path) -> Path | None:
    for candidate in (path / "model.onnx", path / "onnx" / "model.onnx"):
        if candidate.is_file():
            return candidate
    return None


def _weights(path: Path) -> tuple[Path | None, Path | None]:
    safetensors = path / "model.safetensors"
    return (safetensors if safetensors.is_file() else None), _graph(path)


def detect(path: Path) -> Detection | None:
    """A folder whose ``config.json`` names a ``*ForSequenceClassification`` architecture."""
    if not path.is_dir() or not (path / "config.json").is_file():
        return None
    config = read_json(NAME, path / "config.json")
    architectures = [str(a) for a in config.get("architectures") or ()]
    classifier = [a for a in architectures if a.endswith("ForSequenceClassification")]
    if not classifier:
        return None
    labels = num_labels(config)
    if labels != 1:
        expected = "one label (one relevance logit per pair)"
        raise broken(NAME, path, expected, f"{classifier[0]} with {labels} labels")
    safetensors, graph = _weights(path)
    if safetensors is None and graph is None:
        expected = "model.safetensors or model.onnx (or onnx/model.onnx)"
        raise broken(NAME, path, expected, "neither is there")
    require_files(NAME, path, (TOKENIZER,))
    weights = graph if graph is not None else safetensors
    assert weights is not None
    kind = "ONNX, as exported" if graph is not None else "float32 safetensors, exported to ONNX"
    return Detection(
        files=(path / "config.json", path / TOKENIZER, weights),
        description=f"cross-encoder {classifier[0]} ({kind})",
    )


def _limit(config: dict[str, Any]) -> int:
    positions = config.get("max_position_embeddings")
    limit = positions if isinstance(positions, int) and positions > 2 else MAX_SAFE_TOKENS
    if config.get("model_type") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2  # their position tables hold 2 rows more than usable positions
    return min(limit, MAX_SAFE_TOKENS)


def prepare_base(path: Path, out: Path) -> BaseInfo:
    """Keep the graph (ONNX) or the float weights (safetensors) and write the tokenizer."""
    if detect(path) is None:
        expected = "config.json of a *ForSequenceClassification"
        raise broken(NAME, path, expected, "no such config.json")
    config = read_json(NAME, path / "config.json")
    limit = _limit(config)
    safetensors, graph = _weights(path)
    if graph is not None:
        inputs, outputs, ranks = onnx_io(NAME, graph)
        if "input_ids" not in inputs or set(inputs) - set(INPUTS):
            raise broken(NAME, path, f"graph inputs among {list(INPUTS)}", f"{list(inputs)}")
        if not outputs or ranks.get(outputs[0]) != 2:
            raise broken(NAME, path, "a first output logits [batch, 1]", f"{list(outputs)}")
        keep = out / SOURCE_DIR
        keep.mkdir(parents=True)
        link_or_copy(graph, keep / "model.onnx")
        for extra in ("model.onnx_data", "model.onnx.data"):
            if (graph.parent / extra).is_file():
                link_or_copy(graph.parent / extra, keep / extra)
        facts = {"inputs": list(inputs), "outputs": list(outputs)}
        (keep / "graph.json").write_text(json.dumps(facts), encoding="utf-8")
    else:
        assert safetensors is not None
        keep = out / WEIGHTS_DIR
        keep.mkdir(parents=True)
        shutil.copyfile(path / "config.json", keep / "config.json")
        shutil.copyfile(safetensors, keep / "model.safetensors")
        shutil.copyfile(path / TOKENIZER, keep / TOKENIZER)  # the exporter copies it along
    spec = write_tokenizer(NAME, path / TOKENIZER, out / TOKENIZER, limit)
    return BaseInfo(
        tokenizer=Path(TOKENIZER),
        chat_template=None,
        special_tokens=special_tokens(spec, config),
        context_length=limit,
        architecture=None,
        float_weights=keep.relative_to(out),
    )


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """The graph on the CPU EP: the source's ONNX linked, or the safetensors exported."""
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base kept no weights")
    kept = manifest.float_weights
    options: dict[str, OptionValue] = {
        "max_tokens": manifest.context_length,
        "activation": "sigmoid",
    }
    if (kept / "graph.json").is_file():
        facts = json.loads((kept / "graph.json").read_text(encoding="utf-8"))
        for f in kept.iterdir():
            if f.name != "graph.json":
                link_or_copy(f, out / f.name)
        graph = GraphFile(out / "model.onnx", tuple(facts["inputs"]), tuple(facts["outputs"]))
        return Variant(
            ep="cpu",
            dir=out,
            quantization="as exported (not converted)",
            graphs={GRAPH_ROLE: graph},
            options={**options, "precision": "as exported"},
            notes="score = sigmoid of the pair's logit.",
        )
    from imagine_edge.models.prepare.minilm_cross import export_cross_encoder

    export_cross_encoder(kept, out, max_tokens=manifest.context_length)
    (out / TOKENIZER).unlink()  # the base's tokenizer (with the truncation) is the one used
    (out / "cross_encoder.json").unlink()  # its facts are this variant's options
    graph = GraphFile(out / "model.onnx", INPUTS, ("logits",))
    return Variant(
        ep="cpu",
        dir=out,
        quantization="float32",
        graphs={GRAPH_ROLE: graph},
        options={**options, "precision": "float32"},
        notes="score = sigmoid of the pair's logit.",
    )


FORMAT: Final = SourceFormat(
    name=NAME,
    model_type=ModelType.RERANKER,
    detect=detect,
    prepare_base=prepare_base,
    variants={"cpu": prepare_cpu},
    default_variants=("cpu",),
    loader="imagine_edge.models.reranker:load_cross_encoder_reranker",
)
