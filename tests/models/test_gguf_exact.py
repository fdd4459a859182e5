"""The GGUF re-encoding on tiny builder-shaped graphs: ORT output equals the float math."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

from imagine_edge.models.prepare.gguf_exact import encode_q4, encode_q8, encode_u8
from imagine_edge.models.prepare.gguf_exact import reencode_builder_graph as reencode

HIDDEN, VOCAB, KV, SEQ, MLP = 64, 40, 32, 5, 96
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


def test_encodings_reproduce_q4_1_and_q8_0_blocks() -> None:
    w = _q4_1(6, 128)
    packed, scales, offsets, err = encode_q4(w)
    nibbles = np.stack([packed & 15, packed >> 4], axis=-1).reshape(6, 4, 32).astype(np.float32)
    back = (nibbles - 8) * scales.reshape(6, 4, 1) + offsets.T[..., None]
    assert err < 1e-6
    np.testing.assert_allclose(back.reshape(6, 128), w, atol=1e-6)

    b8, s8, z8, err8 = encode_u8(w)
    back8 = (b8.astype(np.float32) - z8.reshape(6, 4, 1)) * s8.reshape(6, 4, 1)
    d = (w.reshape(6, 4, 32).max(-1) - w.reshape(6, 4, 32).min(-1)) / 15
    assert err8 <= d.max() / 32 + 1e-7  # the block offset rounded to d/32, nothing else
    np.testing.assert_allclose(back8.reshape(6, 128), w, atol=float(d.max()) / 32 + 1e-7)

    h = _q8_0(3, 64)
    bh, sh, errh = encode_q8(h)
    assert errh < 1e-7
    backh = (bh.astype(np.float32) - 128) * sh.reshape(3, 2, 1)
    np.testing.assert_allclose(backh.reshape(3, 64), h, atol=1e-7)


def _nbits(name: str, n: int, bits: int) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """A MatMulNBits named like the builder's, with placeholder weights."""
    width = 32 * bits // 8
    b = numpy_helper.from_array(np.full((n, HIDDEN // 32, width), 0x88, np.uint8), f"{name}.B")
    s = numpy_helper.from_array(np.ones((n, HIDDEN // 32), np.float32), f"{name}.scales")
    node = helper.make_node(
        "MatMulNBits", ["x", b.name, s.name], [name.split("/")[-2]], name=name,
        domain="com.microsoft", K=HIDDEN, N=n, bits=bits, block_size=32, accuracy_level=1,
    )  # fmt: skip
    return node, [b, s]


def _builder_graph(path: Path, weights: dict[str, np.ndarray], int8: bool) -> None:
    """The builder's layout: its int4 graph gathers the embedding from the packed 4-bit head,
    its int8 graph from a float copy."""
    bits = 8 if int8 else 4
    qkv, qkv_init = _nbits("/model/layers.0/attn/qkv_proj/MatMul_Q", HIDDEN + 2 * KV, bits)
    gate, gate_init = _nbits("/model/layers.0/mlp/gate_proj/MatMul_Q", MLP, bits)
    up, up_init = _nbits("/model/layers.0/mlp/up_proj/MatMul_Q", MLP, bits)
    head, head_init = _nbits("/lm_head/MatMul_Q", VOCAB, bits)
    inits = [*qkv_init, *gate_init, *up_init, *head_init]
    if int8:
        inits.append(numpy_helper.from_array(weights["model.embed_tokens.weight"], "emb"))
        inits[-1].name = "model.embed_tokens.weight"
        embed = [helper.make_node("Gather", ["model.embed_tokens.weight", "ids"], ["x"])]
    else:
        shape = helper.make_node(
            "Constant", [], ["shape4"], value=numpy_helper.from_array(np.array([VOCAB, 32]))
        )
        table = "/model/embed_tokens/Reshape/output_0"
        embed = [
            shape,
            helper.make_node("Reshape", [head_init[0].name, "shape4"], [table]),
            helper.make_node(
                "GatherBlockQuantized", [table, "ids", head_init[1].name], ["x"],
                domain="com.microsoft", bits=4, block_size=32, gather_axis=0, quantize_axis=1,
            ),
        ]  # fmt: skip
    outputs = [
        helper.make_tensor_value_info("qkv_proj", TensorProto.FLOAT, [1, SEQ, HIDDEN + 2 * KV]),
        helper.make_tensor_value_info("lm_head", TensorProto.FLOAT, [1, SEQ, VOCAB]),
        helper.make_tensor_value_info("gate_proj", TensorProto.FLOAT, [1, SEQ, MLP]),
        helper.make_tensor_value_info("up_proj", TensorProto.FLOAT, [1, SEQ, MLP]),
    ]
    graph = helper.make_graph(
        [*embed, qkv, gate, up, head],
        "tiny",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, SEQ])],
        outputs,
        inits,
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))


@pytest.mark.parametrize(("layers", "int8"), [("q4", False), ("u8", True)])
def test_reencoded_builder_graph_computes_the_gguf_weights(
    tmp_path: Path, layers: str, int8: bool
) -> None:
    weights = {
        "model.embed_tokens.weight": _q8_0(VOCAB, HIDDEN),
        "model.layers.0.self_attn.q_proj.weight": _q4_1(HIDDEN, HIDDEN),
        "model.layers.0.self_attn.k_proj.weight": _q4_1(KV, HIDDEN),
        "model.layers.0.self_attn.v_proj.weight": _q4_1(KV, HIDDEN),
        "model.layers.0.mlp.gate_proj.weight": _q4_1(MLP, HIDDEN),
        "model.layers.0.mlp.up_proj.weight": _q4_1(MLP, HIDDEN),
    }
    (tmp_path / "hf").mkdir()
    save_file(weights, str(tmp_path / "hf" / "model.safetensors"))
    path = tmp_path / "model.onnx"
    _builder_graph(path, weights, int8)

    errors = reencode(path, tmp_path / "hf", layers)

    assert errors["head"] < 1e-6
    w_qkv = np.concatenate([weights[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"])
    tolerance = 1e-6 if layers == "q4" else float(np.abs(w_qkv).max()) / 100
    assert errors["layers"] < tolerance
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    assert "Gather" not in {n.op_type for n in nodes}  # the embedding reads the 8-bit head bytes
    # gate and up read one input: one MatMulNBits of twice the width, split in two
    mlp = [n.op_type for n in nodes if n.name.startswith("/model/layers.0/mlp/")]
    assert mlp.count("MatMulNBits") == 1
    assert "Split" in mlp
    ids = np.array([[0, 7, 39, 3, 7]], np.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_qkv, got_logits, got_gate, got_up = session.run(None, {"ids": ids})
    x = weights["model.embed_tokens.weight"][ids[0]]
    np.testing.assert_allclose(got_logits[0], x @ weights["model.embed_tokens.weight"].T, atol=2e-5)
    reference = x @ w_qkv.T
    atol = 2e-5 if layers == "q4" else errors["layers"] * float(np.abs(x).sum(-1).max())
    np.testing.assert_allclose(got_qkv[0], reference, atol=atol)
    for got, proj in ((got_gate, "gate_proj"), (got_up, "up_proj")):
        w = weights[f"model.layers.0.mlp.{proj}.weight"]
        tolerance = 2e-5 if layers == "q4" else errors["layers"] * float(np.abs(x).sum(-1).max())
        np.testing.assert_allclose(got[0], x @ w.T, atol=tolerance)
