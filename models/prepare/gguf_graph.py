"""The model builder's graph with every weight re-encoded from a GGUF file's own blocks.

``reencode_from_gguf`` replaces each MatMulNBits of the builder's graph (and its embedding
lookup) by operators that compute the GGUF's dequantized weights exactly (``gguf_blocks`` says
how, per block type):

- A quantized projection becomes a MatMulNBits with the grid's codes, scales and explicit zero
  points, plus ``blocksum(x) @ offsets`` when the format has a per-block offset (Q4_1, Q5_1,
  Q4_K, Q5_K). A node computing several projections of one input (the builder's fused qkv, our
  fused gate/up) stacks their grids along N: the wider bit width and the smaller block win (a
  4-bit code is an 8-bit code; a block of 32 is two blocks of 16 with the same scale), zero
  points are per block, and a grid without offsets gets zero offsets. All exact.
- A float projection (F32, F16, BF16), or a fused node with one, becomes a float MatMul.
- The embedding becomes GatherBlockQuantized over the same codes (for a tied head, the head's
  bytes), plus the gathered offsets when there are any, or a float Gather for a float table.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imagine_edge.models.prepare.gguf_blocks import Grid
from imagine_edge.models.prepare.gguf_exact import (
    BUILDER_LAYER_NODE,
    FUSED_PROJECTIONS,
    fuse_gate_up,
    save_rewritten_graph,
)
from imagine_edge.models.prepare.gguf_tensors import load_grids

__all__ = ["Encoded", "describe", "merge", "reencode_from_gguf"]

logger = logging.getLogger(__name__)
_F32 = npt.NDArray[np.float32]
_U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Encoded:
    """Grids stacked along N: ``bits`` 0 means float ``values`` [N, K]; else codes ``q``
    [N, K], and per block of ``block``: ``scale``, ``zero`` (uint8) and ``offset`` (or None)."""

    bits: int
    block: int
    q: _U8 | None
    scale: _F32 | None
    zero: _U8 | None
    offset: _F32 | None
    values: _F32 | None


def _widen(a: npt.NDArray[Any], factor: int) -> npt.NDArray[Any]:
    """Per-block values of blocks ``factor`` times smaller (each block split in ``factor``)."""
    return np.repeat(a, factor, axis=1) if factor > 1 else a


def merge(grids: Sequence[Grid]) -> Encoded:
    """One encoding of several [N_i, K] grids stacked along N (see the module doc)."""
    if any(g.bits == 0 for g in grids):
        values = np.concatenate([g.dequantize() for g in grids])
        return Encoded(0, 0, None, None, None, None, np.asarray(values, np.float32))
    bits, block = max(g.bits for g in grids), min(g.block for g in grids)
    qs, scales, zeros, offsets = [], [], [], []
    for g in grids:
        assert g.q is not None
        assert g.scale is not None
        factor = g.block // block
        qs.append(g.q)
        scales.append(_widen(g.scale, factor))
        zeros.append(np.full(scales[-1].shape, g.zero, np.uint8))
        off = np.zeros_like(g.scale) if g.offset is None else g.offset
        offsets.append(_widen(off, factor))
    has_offset = any(g.offset is not None for g in grids)
    return Encoded(
        bits, block, np.concatenate(qs), np.concatenate(scales).astype(np.float32),
        np.concatenate(zeros), np.concatenate(offsets).astype(np.float32) if has_offset else None,
        None,
    )  # fmt: skip


def _pack4(a: _U8) -> _U8:
    """Pairs of 4-bit values along the last axis into bytes, the first in the low nibble."""
    if a.shape[-1] % 2:
        a = np.concatenate([a, np.zeros((*a.shape[:-1], 1), np.uint8)], axis=-1)
    return np.asarray(a[..., 0::2] | (a[..., 1::2] << 4), np.uint8)


class _Rewriter:
    def __init__(self, model: Any, grids: Mapping[str, Grid]) -> None:
        self.graph = model.graph
        self.grids = grids
        self.inits: dict[str, Any] = {i.name: i for i in self.graph.initializer}
        self.nodes: list[Any] = []
        self.block_sums: dict[tuple[str, int], str] = {}
        self.head: tuple[Encoded, str, str] | None = None  # tied head: (encoding, B, scales)
        self.kinds: Counter[str] = Counter()

    def add_init(self, array: npt.NDArray[Any], name: str) -> str:
        from onnx import numpy_helper

        if name in self.inits:
            self.graph.initializer.remove(self.inits[name])
        self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        self.graph.initializer.append(self.inits[name])
        return name

    def _names(self, node_name: str) -> list[str]:
        if node_name.startswith("/lm_head/"):
            head = "lm_head.weight" if "lm_head.weight" in self.grids else None
            return [head or "model.embed_tokens.weight"]
        match = BUILDER_LAYER_NODE.match(node_name)
        if match is None:
            raise ValueError(f"cannot map builder node {node_name!r} to a GGUF weight")
        layer, block, proj = match.groups()
        prefix = f"model.layers.{layer}.{'self_attn' if block == 'attn' else 'mlp'}"
        parts = FUSED_PROJECTIONS.get(proj, (proj,))
        return [f"{prefix}.{p}.weight" for p in parts]

    def matmul(self, node: Any) -> None:
        from onnx import helper

        names = self._names(node.name)
        missing = [n for n in names if n not in self.grids]
        if missing:
            raise ValueError(f"{node.name}: the GGUF file has no {', '.join(missing)}")
        grids = [self.grids[n] for n in names]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        n, k = sum(g.shape[0] for g in grids), grids[0].shape[1]
        if (attrs["N"], attrs["K"]) != (n, k):
            raise ValueError(
                f"{node.name}: builder shape N={attrs['N']} K={attrs['K']}, GGUF {n}x{k}"
            )
        enc = merge(grids)
        prefix = node.input[1]
        if enc.values is not None:
            self.kinds["float"] += 1
            w = self.add_init(enc.values.T, f"{prefix}/float")
            self.nodes.append(
                helper.make_node("MatMul", [node.input[0], w], list(node.output), name=node.name)
            )
            return
        assert enc.q is not None
        assert enc.scale is not None
        assert enc.zero is not None
        self.kinds[
            f"{enc.bits}-bit/{enc.block}{' + offsets' if enc.offset is not None else ''}"
        ] += 1
        nblk = k // enc.block
        q = enc.q.reshape(n, nblk, enc.block)
        b = _pack4(q) if enc.bits == 4 else q
        zero = _pack4(enc.zero) if enc.bits == 4 else enc.zero
        b_name = self.add_init(b, f"{prefix}/gguf")
        s_name = self.add_init(enc.scale, f"{prefix}/gguf_scales")
        z_name = self.add_init(zero.reshape(-1), f"{prefix}/gguf_zero_points")
        new = helper.make_node(
            "MatMulNBits", [node.input[0], b_name, s_name, z_name], list(node.output),
            name=node.name, domain="com.microsoft", K=k, N=n, bits=enc.bits,
            block_size=enc.block, accuracy_level=int(attrs.get("accuracy_level", 0)),
        )  # fmt: skip
        if node.name.startswith("/lm_head/") and enc.offset is None:
            self.head = (enc, b_name, s_name)
        if enc.offset is None:
            self.nodes.append(new)
        else:
            self._offset_correction(new, k, enc.block, enc.offset.T)

    def _offset_correction(self, node: Any, k: int, block: int, offsets: _F32) -> None:
        """Append ``node`` with ``y += blocksum(x) @ offsets`` around it."""
        from onnx import helper

        x, y = node.input[0], node.output[0]
        if (x, block) not in self.block_sums:
            self.block_sums[x, block] = f"{x}/block_sum_{block}"
            ones = np.kron(np.eye(k // block, dtype=np.float32), np.ones((block, 1), np.float32))
            indicator = self.add_init(ones, f"/gguf/block_indicator_{k}_{block}")
            self.nodes.append(
                helper.make_node(
                    "MatMul", [x, indicator], [self.block_sums[x, block]], name=f"{x}/bs{block}"
                )
            )
        offset = self.add_init(np.ascontiguousarray(offsets), f"{node.input[1]}/offsets")
        node.output[0] = f"{y}/uncorrected"
        self.nodes += [
            node,
            helper.make_node(
                "MatMul",
                [self.block_sums[x, block], offset],
                [f"{y}/offset"],
                name=f"{node.name}/off",
            ),
            helper.make_node(
                "Add", [f"{y}/uncorrected", f"{y}/offset"], [y], name=f"{node.name}/corrected"
            ),
        ]

    def embedding(self) -> None:
        """Replace the builder's embedding lookup by one over the GGUF's embedding grid."""
        for i, node in enumerate(self.nodes):
            ids = _embedding_ids(node)
            if ids is not None:
                self.nodes[i : i + 1] = self._gather(ids, node.output[0])
                return
        raise ValueError("the builder graph has no embedding lookup")

    def _gather(self, ids: str, out: str) -> list[Any]:
        from onnx import helper

        grid = self.grids["model.embed_tokens.weight"]
        tied = "lm_head.weight" not in self.grids
        enc = self.head[0] if tied and self.head is not None else merge([grid])
        rows, k = grid.shape
        if enc.values is not None:
            table = self.add_init(enc.values, "/gguf/emb_float")
            self.kinds["embedding float"] += 1
            return [helper.make_node("Gather", [table, ids], [out], name="/gguf/emb_gather")]
        assert enc.q is not None
        assert enc.scale is not None
        assert enc.zero is not None
        nblk = k // enc.block
        if tied and self.head is not None:
            _, b_name, s_name = self.head
        else:
            q = enc.q.reshape(rows, nblk, enc.block)
            b_name = self.add_init(_pack4(q) if enc.bits == 4 else q, "/gguf/emb_codes")
            s_name = self.add_init(enc.scale, "/gguf/emb_scales")
        width = k * enc.bits // 8
        shape = self.add_init(np.array([rows, width], np.int64), "/gguf/emb_shape")
        zero = _pack4(enc.zero) if enc.bits == 4 else enc.zero
        z_name = self.add_init(zero, "/gguf/emb_zero_points")
        self.kinds[f"embedding {enc.bits}-bit/{enc.block}"] += 1
        gathered = out if enc.offset is None else f"{out}/no_offset"
        nodes = [
            helper.make_node("Reshape", [b_name, shape], ["/gguf/emb_table"], name="/gguf/emb"),
            helper.make_node(
                "GatherBlockQuantized", ["/gguf/emb_table", ids, s_name, z_name], [gathered],
                name="/model/embed_tokens/GatherBlockQuantized", domain="com.microsoft",
                bits=enc.bits, block_size=enc.block, gather_axis=0, quantize_axis=1,
            ),
        ]  # fmt: skip
        if enc.offset is not None:
            # Each gathered row's block offsets, repeated over its blocks: [.., K/block, block].
            off = self.add_init(enc.offset, "/gguf/emb_offsets")
            ones = self.add_init(np.ones(enc.block, np.float32), "/gguf/emb_block_ones")
            axes = self.add_init(np.array([-1], np.int64), "/gguf/emb_axes")
            nodes += [
                helper.make_node("Gather", [off, ids], ["/gguf/emb_off"], name="/gguf/emb_off"),
                helper.make_node("Unsqueeze", ["/gguf/emb_off", axes], ["/gguf/emb_off_u"]),
                helper.make_node("Mul", ["/gguf/emb_off_u", ones], ["/gguf/emb_off_rep"]),
                helper.make_node("Shape", [gathered], ["/gguf/emb_out_shape"]),
                helper.make_node(
                    "Reshape", ["/gguf/emb_off_rep", "/gguf/emb_out_shape"], ["/gguf/emb_off_all"]
                ),
                helper.make_node("Add", [gathered, "/gguf/emb_off_all"], [out], name="/gguf/emb+"),
            ]  # fmt: skip
        return nodes


def _embedding_ids(node: Any) -> str | None:
    if node.op_type == "GatherBlockQuantized" or (
        node.op_type == "Gather" and node.input[0] == "model.embed_tokens.weight"
    ):
        return str(node.input[1])
    return None


def _live(nodes: Sequence[Any], outputs: set[str]) -> tuple[list[Any], set[str]]:
    """The nodes whose results reach ``outputs`` (in order), and the names they read."""
    used = set(outputs)
    live: list[Any] = []
    for node in reversed(nodes):
        if any(o in used for o in node.output):
            live.append(node)
            used.update(node.input)
    return live[::-1], used


def reencode_from_gguf(model_path: Path, gguf_path: Path) -> dict[str, int]:
    """Rewrite the builder graph at ``model_path`` in place from the blocks of ``gguf_path``.

    Returns how many nodes got each encoding (e.g. ``{"8-bit/32": 54, "4-bit/32 + offsets": 18}``).
    """
    import onnx

    arch, grids = load_grids(gguf_path)
    model = onnx.load(str(model_path))
    fused = fuse_gate_up(model)
    rw = _Rewriter(model, grids)
    for node in list(model.graph.node):
        if node.op_type == "MatMulNBits":
            rw.matmul(node)
        else:
            rw.nodes.append(node)
    rw.embedding()
    nodes, used = _live(rw.nodes, {o.name for o in model.graph.output})
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    save_rewritten_graph(model, model_path)
    logger.info(
        "re-encoded %s from %s (%s, %d gate/up pairs fused): %s",
        model_path,
        gguf_path.name,
        arch,
        fused,
        dict(rw.kinds),
    )
    return dict(rw.kinds)


def describe(kinds: Mapping[str, int]) -> str:
    """The manifest's quantization text for the encodings ``reencode_from_gguf`` reported."""
    parts = ", ".join(f"{count} x {kind}" for kind, count in sorted(kinds.items()))
    return (
        "every GGUF weight re-encoded exactly from its own blocks (MatMulNBits with explicit "
        f"zero points, per-block offsets where the format has them): {parts}"
    )
