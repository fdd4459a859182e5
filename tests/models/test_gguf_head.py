"""The opt-in 4-bit LM head: the embedding stays exact, the logits move by the head's rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from imagine_edge.models.prepare.gguf_head import head_to_4bit, quantize_4bit

VOCAB, HIDDEN = 96, 128
RNG = np.random.default_rng(3)


def _q8_head() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q8_0-like codes (q + 128) [VOCAB, K/32, 32], scales [VOCAB, K/32], and the floats."""
    w = RNG.normal(0, 0.05, (VOCAB, HIDDEN)).astype(np.float32)
    blocks = w.reshape(VOCAB, HIDDEN // 32, 32)
    d = np.abs(blocks).max(-1) / 127.0
    q = np.clip(np.rint(blocks / d[..., None]), -127, 127)
    return (q + 128).astype(np.uint8), d.astype(np.float32), (q * d[..., None]).reshape(w.shape)


def _graph(path: Path, codes: np.ndarray, scales: np.ndarray) -> None:
    """gguf_graph's tied layout: one 8-bit table gathered for the embedding and read as head."""
    inits = [
        numpy_helper.from_array(codes, "head.B"),
        numpy_helper.from_array(scales, "head.S"),
        numpy_helper.from_array(np.full(scales.size, 128, np.uint8), "head.Z"),
        numpy_helper.from_array(np.full(scales.shape, 128, np.uint8), "emb.Z"),
        numpy_helper.from_array(np.array([VOCAB, HIDDEN], np.int64), "emb.shape"),
    ]
    nodes = [
        helper.make_node("Reshape", ["head.B", "emb.shape"], ["table"], name="/gguf/emb"),
        helper.make_node(
            "GatherBlockQuantized", ["table", "ids", "head.S", "emb.Z"], ["x"],
            domain="com.microsoft", bits=8, block_size=32, gather_axis=0, quantize_axis=1,
        ),
        helper.make_node(
            "MatMulNBits", ["x", "head.B", "head.S", "head.Z"], ["logits"],
            name="/lm_head/MatMul_Q4", domain="com.microsoft", K=HIDDEN, N=VOCAB, bits=8,
            block_size=32, accuracy_level=0,
        ),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "tied",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "logits")],
        inits,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))


def _run(path: Path, ids: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(session.run(None, {"ids": ids}))


def test_head_becomes_4bit_and_the_embedding_stays_exact(tmp_path: Path) -> None:
    codes, scales, w = _q8_head()
    path = tmp_path / "model.onnx"
    _graph(path, codes, scales)
    ids = np.array([[0, 41, VOCAB - 1]], np.int64)
    x8, logits8 = _run(path, ids)

    errors = head_to_4bit(path)

    x4, logits4 = _run(path, ids)
    np.testing.assert_array_equal(x4, x8)  # the lookup still reads the exact 8-bit table
    np.testing.assert_array_equal(x8[0], w[ids[0]])
    head = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits")
    assert {a.name: helper.get_attribute_value(a) for a in head.attribute}["bits"] == 4
    # A 4-bit grid's rounding: well below the logits' own spread, far from zero.
    assert 0.01 < errors["relative_rms"] < 0.12, errors
    spread = float(np.std(logits8))
    assert 0 < float(np.abs(logits4 - logits8).max()) < 0.5 * spread
    want = w[ids[0]].astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(logits8[0], want, rtol=1e-4, atol=1e-5)


def test_refuses_a_graph_without_an_8bit_head(tmp_path: Path) -> None:
    codes, scales, _ = _q8_head()
    path = tmp_path / "model.onnx"
    _graph(path, codes, scales)
    head_to_4bit(path)
    with pytest.raises(ValueError, match="4-bit, not 8-bit"):
        head_to_4bit(path)


def test_the_scale_search_beats_plain_min_max() -> None:
    w = RNG.standard_t(4, (64, 256)).astype(np.float32)  # heavy tails, like real weights
    codes, scales, zeros = quantize_4bit(w)
    back = ((codes.astype(np.float32) - zeros[..., None]) * scales[..., None]).reshape(w.shape)
    blocks = w.reshape(64, -1, 32)
    lo, hi = blocks.min(-1, keepdims=True), blocks.max(-1, keepdims=True)
    s = (hi - lo) / 15
    z = np.clip(np.rint(-lo / s), 0, 15)
    plain = (np.clip(np.rint(blocks / s) + z, 0, 15) - z) * s
    assert codes.max() <= 15
    assert np.square(back - w).sum() < np.square(plain.reshape(w.shape) - w).sum()
