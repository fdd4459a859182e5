"""The int8 CPU graph of MiniLM: dynamic int8 matmuls with outlier input channels kept in float.

MatMul weights are int8 per output channel, activations quantized dynamically per tensor (per
batch). Plain dynamic int8 of this model loses too much (cosine to float down to 0.965 on short
held-out texts, 0.988 on sentences): the inputs of the matmuls have a few channels 3-20x larger
than the rest (channel 99 reaches 28 where the rest stay under 6), which set the per-tensor scale
and crush the others. So those channels (``OUTLIER_CHANNELS`` per matmul input, the largest on
calibration sentences) bypass the int8 matmul through a tiny float one: the same function in
float, >= 0.99 cosine to float in int8 (0.993 worst on held-out texts, batched). Padded rows of
the residual stream are zeroed, since their garbage would widen the per-batch ranges too, and
query/key/value are one matmul (one activation quantization instead of three). The recipe
measures the int8 graph against the float one on held-out texts, batched and alone, and ships
float32 instead if it falls below ``MIN_COSINE`` (said in the variant's quantization string).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from imagine_edge.models.prepare.minilm_graph import (
    MAX_TOKENS,
    MIN_COSINE,
    encoder_class,
    export,
    feeds,
    load_bert,
    load_tokenizer,
    min_cosine,
)
from imagine_edge.models.prepare.minilm_texts import CALIBRATION_TEXTS, VALIDATION_TEXTS, paragraphs
from imagine_edge.models.store import GraphFile, Manifest, Variant

__all__ = ["OUTLIER_CHANNELS", "outlier_channels", "prepare_cpu", "quantize_int8"]

logger = logging.getLogger(__name__)

# Input channels per matmul input kept in float (see above): 2 per feed-forward input only
# measured 0.989 on held-out texts, 4 everywhere 0.993.
OUTLIER_CHANNELS: Final[Mapping[str, int]] = {"qkv_in": 4, "ffn_in": 4, "ffn_out_in": 4}


def outlier_channels(
    bert: Any, texts: Sequence[str], tok: Any, counts: Mapping[str, int]
) -> dict[tuple[int, str], Any]:
    """Per matmul input kind, the ``counts[kind]`` channels of largest |value| on ``texts``."""
    import torch

    bert.eval()  # no dropout: the channels are those of the model as it serves
    amax: dict[tuple[int, str], torch.Tensor] = {}

    def hook(key: tuple[int, str]) -> Callable[..., None]:
        def record(module: Any, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            a = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
            amax[key] = torch.maximum(amax[key], a) if key in amax else a

        return record

    handles = []
    for i, layer in enumerate(bert.encoder.layer):
        for kind, module in (
            ("qkv_in", layer.attention.self.query),
            ("ffn_in", layer.intermediate.dense),
            ("ffn_out_in", layer.output.dense),
        ):
            if counts.get(kind, 0) > 0:
                handles.append(module.register_forward_hook(hook((i, kind))))
    with torch.no_grad():
        for enc in tok.encode_batch(list(texts)):
            ids = torch.tensor([enc.ids])
            bert(input_ids=ids, attention_mask=torch.ones_like(ids))
    for h in handles:
        h.remove()
    return {
        (i, kind): v.argsort(descending=True)[: counts[kind]].sort().values
        for (i, kind), v in amax.items()
    }


def quantize_int8(src: Path, dst: Path, counts: Mapping[str, int]) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    # The outlier bypasses (weights with that few rows) stay float: that is their point.
    most = max(counts.values())
    bypass = [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and 0 < weights.get(n.input[1], (0,))[0] <= most
    ]
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],  # not Gather: the embedding table stays float
        nodes_to_exclude=bypass,
    )


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} per {kind} matmul" for kind, n in counts.items() if n > 0)


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """The int8 CPU graph, or the float one if int8 measures below ``MIN_COSINE``."""
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base has no float weights to export from")
    bert = load_bert(manifest.float_weights)
    tok = load_tokenizer(manifest)
    encoder = encoder_class()
    work = out / ".work"
    work.mkdir()
    float_graph = export(
        encoder(bert, static=False, outliers={}), work / "float.onnx", static_seq=None
    )
    outliers = outlier_channels(bert, CALIBRATION_TEXTS, tok, OUTLIER_CHANNELS)
    split = export(
        encoder(bert, static=False, outliers=outliers), work / "split.onnx", static_seq=None
    )
    quantize_int8(split.path, work / "int8.onnx", OUTLIER_CHANNELS)
    # Batched as the pipeline batches (the int8 activation scales are per batch) and one by one.
    held_out = [*VALIDATION_TEXTS, *paragraphs(VALIDATION_TEXTS, 6)]
    checks = [*feeds(tok, held_out, None, 8), *feeds(tok, held_out, None, 1)]
    worst = min_cosine(float_graph.path, work / "int8.onnx", checks)
    chosen = "int8" if worst >= MIN_COSINE else "float32"
    if chosen == "float32":
        logger.warning("int8 MiniLM measured cosine %.4f < %s: shipping float32", worst, MIN_COSINE)
    os.replace(work / ("int8.onnx" if chosen == "int8" else "float.onnx"), out / "model.onnx")
    shutil.rmtree(work)
    quantization = (
        f"int8 dynamic, weights per output channel, outlier input channels in float "
        f"({_counts(OUTLIER_CHANNELS)}); min cosine to float {worst:.4f} on held-out texts"
        if chosen == "int8"
        else f"float32 (int8 measured min cosine {worst:.4f} < {MIN_COSINE})"
    )
    return Variant(
        ep="cpu",
        dir=out,
        quantization=quantization,
        graphs={"encoder": GraphFile(out / "model.onnx", float_graph.inputs, float_graph.outputs)},
        options={"precision": chosen, "max_tokens": MAX_TOKENS, "pooling": "mean"},
        notes="embedding = masked mean of the last hidden states, not normalised (host L2).",
    )
