"""An opt-in, NOT exact, 4-bit LM head for a graph that ``gguf_graph`` re-encoded exactly.

A tied 8-bit head (Gemma 3 270M's Q8_0 table of 262,144 x 640, 168 MB) is read whole for every
generated token. ``head_to_4bit`` re-quantizes that head alone to 4-bit MatMulNBits (block 32,
an asymmetric grid per block whose scale is searched for the least squared error against the
8-bit values), which halves those bytes. The embedding lookup keeps gathering the exact 8-bit
table (it reads one row per token), so the only change is the logits' rounding; its cost is
measured as perplexity in docs/gguf.md. The graph grows by the 4-bit copy (~90 MB for Gemma).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from imagine_edge.models.prepare.gguf_exact import save_rewritten_graph

__all__ = ["BLOCK", "HEAD_PREFIX", "head_to_4bit", "quantize_4bit"]

logger = logging.getLogger(__name__)

BLOCK: Final = 32
HEAD_PREFIX: Final = "/lm_head/"
# Candidate grid widths (levels spanned by a block's range): 15 is plain min/max; the others
# clip the extremes a little, which often lowers the block's squared error.
_WIDTHS: Final = (15.0, 14.5, 14.0, 13.5, 13.0, 12.0)
_ROWS_PER_CHUNK: Final = 4096
_F32 = npt.NDArray[np.float32]
_U8 = npt.NDArray[np.uint8]


def quantize_4bit(w: _F32) -> tuple[_U8, _F32, _U8]:
    """[N, K] floats -> (codes [N, K/32, 32] in 0..15, scales [N, K/32], zero points [N, K/32]),
    ``w ~ scale * (code - zero)``, per block the candidate grid of least squared error."""
    n, k = w.shape
    blocks = w.reshape(n, k // BLOCK, BLOCK).astype(np.float32)
    lo, hi = blocks.min(-1, keepdims=True), blocks.max(-1, keepdims=True)
    span = np.maximum(hi - lo, np.float32(1e-30))
    best_err = np.full(lo.shape, np.inf, np.float32)
    best_s, best_z = np.ones_like(lo), np.zeros_like(lo)
    for width in _WIDTHS:
        s = span / np.float32(width)
        z = np.clip(np.rint(-lo / s), 0, 15)
        c = np.clip(np.rint(blocks / s) + z, 0, 15)
        err = np.square((c - z) * s - blocks).sum(-1, keepdims=True)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s, best_z = np.where(better, s, best_s), np.where(better, z, best_z)
    codes = np.clip(np.rint(blocks / best_s) + best_z, 0, 15).astype(np.uint8)
    return codes, best_s[..., 0].astype(np.float32), best_z[..., 0].astype(np.uint8)


def _pack4(a: _U8) -> _U8:
    """Pairs of 4-bit values along the last axis into bytes, the first in the low nibble."""
    if a.shape[-1] % 2:
        a = np.concatenate([a, np.zeros((*a.shape[:-1], 1), np.uint8)], axis=-1)
    return np.asarray(a[..., 0::2] | (a[..., 1::2] << 4), np.uint8)


def _dequantize_8bit(
    b: npt.NDArray[Any], scales: npt.NDArray[Any], zeros: npt.NDArray[Any] | None, block: int
) -> _F32:
    """The float [rows, K] of an 8-bit MatMulNBits weight (codes [rows, K/block, block])."""
    rows, nblk, _ = b.shape
    z = np.full((rows, nblk), 128.0, np.float32) if zeros is None else zeros.reshape(rows, nblk)
    s = scales.reshape(rows, nblk, 1).astype(np.float32)
    return ((b.astype(np.float32) - z[..., None].astype(np.float32)) * s).reshape(rows, -1)


def head_to_4bit(model_path: Path) -> dict[str, float]:
    """Re-quantize the 8-bit LM head MatMulNBits of ``model_path`` to 4-bit, in place.

    The embedding keeps its exact 8-bit table. Returns the head's largest absolute weight error
    and its root-mean-square error relative to the weights' RMS.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    heads = [n for n in graph.node if n.op_type == "MatMulNBits" and n.name.startswith(HEAD_PREFIX)]
    if len(heads) != 1:
        raise ValueError(f"{model_path}: expected one LM head MatMulNBits, found {len(heads)}")
    head = heads[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    if attrs["bits"] != 8:
        raise ValueError(f"{model_path}: the LM head is {attrs['bits']}-bit, not 8-bit")
    n, k, block = attrs["N"], attrs["K"], attrs["block_size"]
    b = numpy_helper.to_array(inits[head.input[1]]).reshape(n, k // block, block)
    s = numpy_helper.to_array(inits[head.input[2]])
    has_zero = len(head.input) > 3 and head.input[3] != ""
    z = numpy_helper.to_array(inits[head.input[3]]) if has_zero else None
    packed = np.empty((n, k // BLOCK, BLOCK // 2), np.uint8)
    scales = np.empty((n, k // BLOCK), np.float32)
    zeros = np.empty((n, k // BLOCK), np.uint8)
    max_err, sq_err, sq_w = 0.0, 0.0, 0.0
    nblk = k // block
    for r0 in range(0, n, _ROWS_PER_CHUNK):
        r1 = min(n, r0 + _ROWS_PER_CHUNK)
        zc = None if z is None else z.reshape(n, nblk)[r0:r1]
        w = _dequantize_8bit(b[r0:r1], s.reshape(n, nblk)[r0:r1], zc, block)
        codes, scales[r0:r1], zeros[r0:r1] = quantize_4bit(w)
        packed[r0:r1] = _pack4(codes)
        back = (codes.astype(np.float32) - zeros[r0:r1, :, None]) * scales[r0:r1, :, None]
        diff = back.reshape(w.shape) - w
        max_err = max(max_err, float(np.abs(diff).max()))
        sq_err += float(np.square(diff, dtype=np.float64).sum())
        sq_w += float(np.square(w, dtype=np.float64).sum())
    prefix = f"{head.input[1]}/head4"
    names = (f"{prefix}/codes", f"{prefix}/scales", f"{prefix}/zero_points")
    arrays = (packed, scales, _pack4(zeros).reshape(-1))
    for name, array in zip(names, arrays, strict=True):
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    new = helper.make_node(
        "MatMulNBits", [head.input[0], *names], list(head.output), name=head.name,
        domain="com.microsoft", K=k, N=n, bits=4, block_size=BLOCK,
        accuracy_level=int(attrs.get("accuracy_level", 0)),
    )  # fmt: skip
    nodes = [new if node is head else node for node in graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for node in graph.node for i in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    save_rewritten_graph(model, model_path)
    errors = {"max_abs": max_err, "relative_rms": (sq_err / max(sq_w, 1e-30)) ** 0.5}
    logger.info("LM head of %s re-quantized to 4-bit: %s", model_path, errors)
    return errors
