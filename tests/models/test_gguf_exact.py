"""The exact GGUF re-encoding on a tiny builder-shaped graph: ORT output equals float math."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

from imagine_edge.models.prepare.gguf_exact import reencode_builder_graph

HIDDEN, VOCAB, KV = 64, 40, 32
RNG = np.random.default_rng(0)


def _q4_1(rows: int, cols: int) -> np.ndarray:
    """Weights on a Q4_1 grid: per block of 32, d*q + m with q spanning 0..15 (fp16 d and m)."""
    q = RNG.integers(0, 16, size=(rows, cols // 32, 32))
    q[..., 0], q[..., 1] = 0, 15
    d = RNG.uniform(0.005, 0.05, (rows, cols // 32, 1)).astype(np.float16).astype(np.float32)
    m = RNG.uniform(-0.4, 0.0, (rows, cols // 32, 1)).astype(np.float16).astype(np.float32)
    return (d * q + m).astype(np.float32).reshape(rows, cols)


def _q8_0(rows: int, cols: int) -> np.ndarray:
    q = RNG.integers(-127, 128, size=(rows, cols // 32, 32))
    q[..., 0] = -127
    d = RNG.uniform(0.001, 0.01, (rows, cols // 32, 1)).astype(np.float16).astype(np.float32)
    return (d * q).astype(np.float32).reshape(rows, cols)


def _nbits(name: str, x: str, y: str, n: int) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """A MatMulNBits named like the builder's, with placeholder symmetric 4-bit weights."""
    b = numpy_helper.from_array(np.full((n, HIDDEN // 32, 16), 0x88, np.uint8), f"{name}.B")
    s = numpy_helper.from_array(np.ones((n, HIDDEN // 32), np.float32), f"{name}.scales")
    node = helper.make_node(
        "MatMulNBits", [x, b.name, s.name], [y], name=name, domain="com.microsoft",
        K=HIDDEN, N=n, bits=4, block_size=32, accuracy_level=1,
    )  # fmt: skip
    return node, [b, s]


def test_reencoded_graph_computes_the_float_weights_exactly(tmp_path: Path) -> None:
    weights = {
        "model.embed_tokens.weight": _q8_0(VOCAB, HIDDEN),
        "model.layers.0.self_attn.q_proj.weight": _q4_1(HIDDEN, HIDDEN),
        "model.layers.0.self_attn.k_proj.weight": _q4_1(KV, HIDDEN),
        "model.layers.0.self_attn.v_proj.weight": _q4_1(KV, HIDDEN),
    }
    (tmp_path / "hf").mkdir()
    save_file(weights, str(tmp_path / "hf" / "model.safetensors"))
    qkv, qkv_init = _nbits("/model/layers.0/attn/qkv_proj/MatMul_Q4", "x", "qkv", HIDDEN + 2 * KV)
    head, head_init = _nbits("/lm_head/MatMul_Q4", "x", "logits", VOCAB)
    shape = numpy_helper.from_array(np.array([VOCAB, HIDDEN // 2], np.int64), "shape4")
    nodes = [
        helper.make_node("Reshape", [head_init[0].name, "shape4"], ["table"], name="/e/Reshape"),
        helper.make_node(
            "GatherBlockQuantized", ["table", "ids", head_init[1].name], ["x"],
            name="/model/embed_tokens/GatherBlockQuantized", domain="com.microsoft",
            bits=4, block_size=32, gather_axis=0, quantize_axis=1,
        ),
        qkv,
        head,
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
        [
            helper.make_tensor_value_info("qkv", TensorProto.FLOAT, [1, 5, HIDDEN + 2 * KV]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5, VOCAB]),
        ],
        [*qkv_init, *head_init, shape],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))

    errors = reencode_builder_graph(path, tmp_path / "hf")

    assert errors["q4"] < 1e-6
    assert errors["q8"] < 1e-6
    ids = np.array([[0, 7, 39, 3, 7]], np.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_qkv, got_logits = session.run(None, {"ids": ids})
    x = weights["model.embed_tokens.weight"][ids[0]]
    w_qkv = np.concatenate([weights[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"])
    np.testing.assert_allclose(got_qkv[0], x @ w_qkv.T, atol=2e-5)
    np.testing.assert_allclose(got_logits[0], x @ weights["model.embed_tokens.weight"].T, atol=2e-5)
