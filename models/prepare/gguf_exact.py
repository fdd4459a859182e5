"""Lossless re-encoding of GGUF Q4_1 / Q8_0 weights into the builder's MatMulNBits graph.

Why: the package ships SmolLM2 already quantized (Q4_1 layers, a Q8_0 tied embedding). Quantizing
the dequantized weights again to the builder's symmetric int4 grid stacks a second rounding on the
first and costs ~30% perplexity on prose (18.4 -> 24.0); int8 everywhere costs ~1% but is ~25%
slower. Both GGUF formats fit MatMulNBits exactly, so this module re-encodes them without loss:

- Q4_1 (a block of 32 is ``d*q + m``, q in 0..15) has a float offset ``m``, and MatMulNBits'
  integer zero points cannot hold it (its float zero points take a ~20x slower kernel). Written
  as ``d*(q - 8) + c`` with ``c = m + 8d``, the first term is a plain symmetric 4-bit MatMulNBits
  and the second is ``blocksum(x) @ C``: a ReduceSum over each block of 32 inputs and a small
  float MatMul ([.., K/32] x [K/32, N], 1/32 of the weights). Every block of a Q4_1 tensor holds
  q = 0 (its minimum) and q = 15 (its maximum), so ``m`` and ``d`` are recovered from the float
  weights exactly; other weights get asymmetric int4 with a float offset, still a good encoding.
- Q8_0 (``d*q``, q in -127..127, ``d = amax/127``) is symmetric 8-bit MatMulNBits with the same
  scale: the lm_head and, through the builder's GatherBlockQuantized, the tied embedding.

Blocks run along K (the input features) in both GGUF and MatMulNBits, and transformers' row
permutation of q/k for rotary embeddings moves whole rows, so blocks line up.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["BLOCK", "reencode_builder_graph"]

logger = logging.getLogger(__name__)

BLOCK: Final = 32
_LAYER = re.compile(
    r"^/model/layers\.(\d+)/(attn|mlp)/(qkv_proj|o_proj|gate_proj|up_proj|down_proj)/"
)
_F32 = npt.NDArray[np.float32]


def _source_weight(node_name: str, weights: Mapping[str, _F32]) -> tuple[_F32, bool]:
    """The float [N, K] weight behind a builder MatMulNBits node; True for the lm_head."""
    if node_name.startswith("/lm_head/"):
        head = weights.get("lm_head.weight")
        return (weights["model.embed_tokens.weight"] if head is None else head), True
    match = _LAYER.match(node_name)
    if match is None:
        raise ValueError(f"cannot map builder node {node_name!r} to a weight")
    layer, block, proj = match.groups()
    prefix = f"model.layers.{layer}.{'self_attn' if block == 'attn' else 'mlp'}"
    if proj == "qkv_proj":
        parts = [weights[f"{prefix}.{p}.weight"] for p in ("q_proj", "k_proj", "v_proj")]
        return np.concatenate(parts, axis=0), False
    return weights[f"{prefix}.{proj}.weight"], False


def encode_q4(w: _F32) -> tuple[npt.NDArray[np.uint8], _F32, _F32, float]:
    """[N, K] -> (packed B [N, K/32, 16], scales [N*K/32], offsets C [K/32, N], max error)."""
    n, k = w.shape
    blocks = w.reshape(n, k // BLOCK, BLOCK).astype(np.float64)
    lo, hi = blocks.min(-1, keepdims=True), blocks.max(-1, keepdims=True)
    d = (hi - lo) / 15.0
    safe = np.where(d == 0, 1.0, d)
    q = np.clip(np.rint((blocks - lo) / safe), 0, 15)
    err = float(np.abs(q * d + lo - blocks).max())
    packed = (q[..., 0::2] + 16 * q[..., 1::2]).astype(np.uint8)
    offsets = (lo + 8.0 * d)[..., 0].T.astype(np.float32)
    return packed, d.reshape(-1).astype(np.float32), np.ascontiguousarray(offsets), err


def encode_q8(w: _F32) -> tuple[npt.NDArray[np.uint8], _F32, float]:
    """[N, K] -> (B [N, K/32, 32] as q + 128, scales [N*K/32], max error)."""
    n, k = w.shape
    blocks = w.reshape(n, k // BLOCK, BLOCK).astype(np.float64)
    d = np.abs(blocks).max(-1, keepdims=True) / 127.0
    q = np.clip(np.rint(blocks / np.where(d == 0, 1.0, d)), -127, 127)
    err = float(np.abs(q * d - blocks).max())
    return (q + 128).astype(np.uint8), d.reshape(-1).astype(np.float32), err


def reencode_builder_graph(model_path: Path, hf_dir: Path) -> dict[str, float]:
    """Rewrite the builder's int4 graph at ``model_path`` in place with exact GGUF encodings.

    Returns the largest absolute weight error of the layers ("q4") and the head ("q8") relative
    to the float weights, which is ~1e-7 of the weights' scale for a GGUF Q4_1/Q8_0 source.
    """
    import onnx
    from onnx import helper, numpy_helper
    from safetensors.numpy import load_file

    weights: dict[str, _F32] = load_file(str(hf_dir / "model.safetensors"))
    model = onnx.load(str(model_path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    new_nodes: list[Any] = []
    block_sums: dict[str, str] = {}
    errors = {"q4": 0.0, "q8": 0.0}
    for node in graph.node:
        if node.op_type != "MatMulNBits":
            new_nodes.append(node)
            continue
        w, is_head = _source_weight(node.name, weights)
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (attrs["N"], attrs["K"], attrs["block_size"]) != (w.shape[0], w.shape[1], BLOCK):
            raise ValueError(f"{node.name}: builder shape {attrs} does not match {w.shape}")
        if is_head:
            b8, s8, err = encode_q8(w)
            errors["q8"] = max(errors["q8"], err)
            _set(inits, node.input[1], b8)
            _set(inits, node.input[2], s8, scales=True)
            _set_attr(node, "bits", 8)
            new_nodes.append(node)
            continue
        b4, s4, offsets, err = encode_q4(w)
        errors["q4"] = max(errors["q4"], err)
        _set(inits, node.input[1], b4)
        _set(inits, node.input[2], s4, scales=True)
        x, y = node.input[0], node.output[0]
        if x not in block_sums:
            block_sums[x] = f"{x}/block_sum"
            shape = f"{x}/block_shape"
            k = attrs["K"]
            graph.initializer.append(
                numpy_helper.from_array(np.array([0, 0, k // BLOCK, BLOCK], np.int64), shape)
            )
            new_nodes += [
                helper.make_node("Reshape", [x, shape], [f"{x}/blocks"], name=f"{x}/blocks"),
                helper.make_node(
                    "ReduceSum",
                    [f"{x}/blocks", "/gguf_exact/axis_-1"],
                    [block_sums[x]],
                    name=block_sums[x],
                    keepdims=0,
                ),
            ]
        offset_name = f"{node.input[1]}/block_offsets"
        graph.initializer.append(numpy_helper.from_array(offsets, offset_name))
        node.output[0] = f"{y}/uncorrected"
        new_nodes += [
            node,
            helper.make_node(
                "MatMul", [block_sums[x], offset_name], [f"{y}/offset"], name=f"{node.name}/offset"
            ),
            helper.make_node(
                "Add", [f"{y}/uncorrected", f"{y}/offset"], [y], name=f"{node.name}/corrected"
            ),
        ]
    graph.initializer.append(
        numpy_helper.from_array(np.array([-1], np.int64), "/gguf_exact/axis_-1")
    )
    _retarget_embedding(graph, inits)
    del graph.node[:]
    graph.node.extend(new_nodes)
    data = model_path.name + ".data"
    (model_path.parent / data).unlink(missing_ok=True)
    onnx.save(
        model, str(model_path), save_as_external_data=True, location=data, size_threshold=1024
    )
    logger.info("re-encoded %s exactly: max weight error %s", model_path, errors)
    return errors


def _set(
    inits: Mapping[str, Any], name: str, value: npt.NDArray[Any], *, scales: bool = False
) -> None:
    from onnx import numpy_helper

    if scales:  # keep the builder's [N, K/32]: the head's are shared with GatherBlockQuantized
        value = value.reshape(tuple(inits[name].dims))
    inits[name].CopyFrom(numpy_helper.from_array(value, name))


def _set_attr(node: Any, name: str, value: int) -> None:
    for a in node.attribute:
        if a.name == name:
            a.i = value
            return
    raise ValueError(f"{node.name} has no attribute {name!r}")


def _retarget_embedding(graph: Any, inits: Mapping[str, Any]) -> None:
    """Point the tied embedding's GatherBlockQuantized at the 8-bit head weights."""
    from onnx import numpy_helper

    for node in graph.node:
        if node.op_type != "GatherBlockQuantized":
            continue
        reshape = next(n for n in graph.node if node.input[0] in n.output)
        data = inits[reshape.input[0]]
        rows, blocks, width = data.dims
        shape_name = f"{node.name}/shape_q8"
        graph.initializer.append(
            numpy_helper.from_array(np.array([rows, blocks * width], np.int64), shape_name)
        )
        reshape.input[1] = shape_name
        stale = [v for v in graph.value_info if v.name == reshape.output[0]]
        for v in stale:
            graph.value_info.remove(v)
        zp_name = f"{node.name}/zero_points_q8"
        graph.initializer.append(
            numpy_helper.from_array(np.full((rows, blocks), 128, np.uint8), zp_name)
        )
        while len(node.input) < 4:
            node.input.append("")
        node.input[3] = zp_name
        _set_attr(node, "bits", 8)
