"""The int8 CPU graph of MiniLM: dynamic int8 matmuls, outlier activation channels tamed.

MatMul weights are 8-bit (uint8) per output channel, activations quantized dynamically per
tensor (per batch). Plain dynamic int8 of this model loses too much (cosine to float down to
0.965 on short held-out texts, 0.988 on sentences): the inputs of the matmuls have a few
channels 3-20x larger than the rest (channel 99 reaches 28 where the rest stay under 6), which
set the per-tensor scale and crush the others. Two remedies, per matmul input, from ranges
measured on calibration sentences (:func:`channel_ranges`):

- smoothing (``SMOOTHED_INPUTS``: the inputs of the query/key/value and first feed-forward
  matmuls, both LayerNorm outputs): the ``SMOOTH_TOP`` largest channels are divided by
  ``s = (amax / t) ** SMOOTH_ALPHA`` (``t`` the next largest range) and the weights' input rows
  multiplied by ``s``: the same product in float, one Mul on the activations at run time;
- a float bypass (``OUTLIER_CHANNELS``: the input of the second feed-forward matmul, a GELU
  output): its 4 largest channels skip the int8 matmul through a tiny float one (a Mul, a
  Gather, a [*, 4] MatMul and an Add at run time).

Measured on the held-out texts (min cosine to float, batched and alone): the bypass at all three
inputs 0.9929 but its extra ops cost ~11% of a run; smoothing at all three 0.988 (at the
feed-forward output with 4 channels only, 0.983); the mix here 0.9929 at 7% less time. The word
embedding table (47 of the graph's 59 MB) is stored 8-bit with a scale per block of 32 values
(GatherBlockQuantized): 25 MB, min cosine 0.9924. Padded rows of the residual stream are zeroed,
since their garbage would widen the per-batch ranges too, and query/key/value are one matmul (one
activation quantization instead of three). The recipe measures the int8 graph against the float
one on held-out texts, batched and alone, and ships float32 instead if it falls below
``MIN_COSINE`` (said in the variant's quantization string).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

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

__all__ = [
    "EMBEDDING_BLOCK",
    "OUTLIER_CHANNELS",
    "SMOOTHED_INPUTS",
    "channel_ranges",
    "outlier_channels",
    "prepare_cpu",
    "quantize_embedding",
    "quantize_int8",
    "smoothing_scales",
]

logger = logging.getLogger(__name__)

MATMUL_INPUTS: Final = ("qkv_in", "ffn_in", "ffn_out_in")
SMOOTHED_INPUTS: Final = ("qkv_in", "ffn_in")
SMOOTH_TOP: Final = 32
SMOOTH_ALPHA: Final = 0.75
# Input channels kept in float per bypassed matmul input (2 measured 0.989, 4 0.993).
OUTLIER_CHANNELS: Final[Mapping[str, int]] = {"ffn_out_in": 4}
EMBEDDING_BLOCK: Final = 32

Ranges = dict[tuple[int, str], Any]  # (layer, kind) -> float tensor [in_features]


def channel_ranges(bert: Any, texts: Sequence[str], tok: Any) -> Ranges:
    """Per (layer, matmul input kind), the largest |value| of each input channel on ``texts``."""
    import torch

    bert.eval()  # no dropout: the ranges are those of the model as it serves
    amax: Ranges = {}

    def hook(key: tuple[int, str]) -> Callable[..., None]:
        def record(module: Any, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
            a = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
            amax[key] = torch.maximum(amax[key], a) if key in amax else a

        return record

    handles = []
    for i, layer in enumerate(bert.encoder.layer):
        modules = (layer.attention.self.query, layer.intermediate.dense, layer.output.dense)
        for kind, module in zip(MATMUL_INPUTS, modules, strict=True):
            handles.append(module.register_forward_hook(hook((i, kind))))
    with torch.no_grad():
        for enc in tok.encode_batch(list(texts)):
            ids = torch.tensor([enc.ids])
            bert(input_ids=ids, attention_mask=torch.ones_like(ids))
    for h in handles:
        h.remove()
    return amax


def outlier_channels(ranges: Ranges, counts: Mapping[str, int]) -> Ranges:
    """Per matmul input of a kind in ``counts``, its ``counts[kind]`` widest channels (sorted)."""
    return {
        (i, kind): v.argsort(descending=True)[: counts[kind]].sort().values
        for (i, kind), v in ranges.items()
        if counts.get(kind, 0) > 0
    }


def smoothing_scales(
    ranges: Ranges, kinds: Sequence[str], top: int = SMOOTH_TOP, alpha: float = SMOOTH_ALPHA
) -> Ranges:
    """Per matmul input of ``kinds``, ``s`` >= 1 per channel: ``(amax / t) ** alpha`` for the
    ``top`` widest channels, ``t`` being the range of the next one; 1 elsewhere."""
    out: Ranges = {}
    for (i, kind), v in ranges.items():
        if kind in kinds:
            t = v.sort(descending=True).values[top].clamp(min=1e-6)
            out[(i, kind)] = (v / t).clamp(min=1.0) ** alpha
    return out


def quantize_int8(src: Path, dst: Path, counts: Mapping[str, int]) -> None:
    """Dynamic 8-bit of ``src``'s MatMuls (uint8 weights per output channel, uint8 activations),
    except the outlier bypasses."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src))
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    # The outlier bypasses (weights with that few rows) stay float: that is their point.
    most = max(counts.values(), default=0)
    bypass = [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and 0 < weights.get(n.input[1], (0,))[0] <= most
    ]
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        # uint8 weights (u8u8): onnxruntime's u8s8 kernels on x86 CPUs without VNNI add pairs
        # of products in 16 bits and saturate; on an AVX2-only EPYC int8 weights measured min
        # cosine 0.9864, uint8 ones 0.9940 at ~6% more time per batch.
        weight_type=QuantType.QUInt8,
        op_types_to_quantize=["MatMul"],  # the embedding table: see quantize_embedding
        nodes_to_exclude=bypass,
    )


def quantize_embedding(path: Path, block: int = EMBEDDING_BLOCK) -> float:
    """Store the word embedding table of ``path`` 8-bit (in place), one scale per ``block``
    values of a row, looked up by GatherBlockQuantized. Returns the largest absolute error."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    # The word table is the only Gather from a weight with tens of thousands of rows.
    node = next(
        n
        for n in model.graph.node
        if n.op_type == "Gather" and n.input[0] in inits and inits[n.input[0]].dims[0] > 10_000
    )
    table = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
    rows, width = table.shape
    blocks = table.reshape(rows, width // block, block)
    scales = (np.abs(blocks).max(-1) / 127.0).astype(np.float32)
    scales[scales == 0] = 1.0
    q = np.clip(np.rint(blocks / scales[..., None]), -127, 127)
    error = float(np.abs(q * scales[..., None] - blocks).max())
    name = node.input[0]
    model.graph.initializer.remove(inits[name])
    model.graph.initializer.extend(
        [
            numpy_helper.from_array((q + 128).astype(np.uint8).reshape(rows, width), f"{name}/q"),
            numpy_helper.from_array(scales, f"{name}/scales"),
            numpy_helper.from_array(np.full(scales.shape, 128, np.uint8), f"{name}/zero_points"),
        ]
    )
    lookup = helper.make_node(
        "GatherBlockQuantized",
        [f"{name}/q", node.input[1], f"{name}/scales", f"{name}/zero_points"],
        list(node.output),
        name=f"{node.name}BlockQuantized",
        domain="com.microsoft",
        bits=8,
        block_size=block,
        gather_axis=0,
        quantize_axis=1,
    )
    position = list(model.graph.node).index(node)
    model.graph.node.remove(node)
    model.graph.node.insert(position, lookup)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(path))
    return error


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
    ranges = channel_ranges(bert, CALIBRATION_TEXTS, tok)
    module = encoder(
        bert,
        static=False,
        outliers=outlier_channels(ranges, OUTLIER_CHANNELS),
        smoothing=smoothing_scales(ranges, SMOOTHED_INPUTS),
    )
    split = export(module, work / "split.onnx", static_seq=None)
    quantize_int8(split.path, work / "int8.onnx", OUTLIER_CHANNELS)
    table_error = quantize_embedding(work / "int8.onnx")
    # Batched as the pipeline batches (the int8 activation scales are per batch) and one by one.
    held_out = [*VALIDATION_TEXTS, *paragraphs(VALIDATION_TEXTS, 6)]
    checks = [*feeds(tok, held_out, None, 8), *feeds(tok, held_out, None, 1)]
    worst = min_cosine(float_graph.path, work / "int8.onnx", checks)
    chosen = "int8" if worst >= MIN_COSINE else "float32"
    if chosen == "float32":
        logger.warning("int8 MiniLM measured cosine %.4f < %s: shipping float32", worst, MIN_COSINE)
    os.replace(work / ("int8.onnx" if chosen == "int8" else "float.onnx"), out / "model.onnx")
    shutil.rmtree(work)
    bypassed = ", ".join(f"{n} {kind}" for kind, n in OUTLIER_CHANNELS.items())
    quantization = (
        f"int8 dynamic (uint8 weights per output channel); outlier input channels smoothed "
        f"({SMOOTH_TOP} per {', '.join(SMOOTHED_INPUTS)}) or in float ({bypassed}); word "
        f"embeddings 8-bit per block of {EMBEDDING_BLOCK} (max error {table_error:.4f}); "
        f"min cosine to float {worst:.4f} on held-out texts"
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
