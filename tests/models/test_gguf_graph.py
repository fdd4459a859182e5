"""The GGUF-block re-encoding on tiny builder-shaped graphs: onnxruntime computes exactly the
``gguf`` package's dequantized weights, for every block type, mixed within fused nodes."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from gguf.quants import dequantize, quantize
from onnx import TensorProto, helper, numpy_helper

from imagine_edge.models.prepare.gguf_graph import reencode_from_gguf
from imagine_edge.models.prepare.gguf_tensors import (
    UnsupportedArchitecture,
    _llama_rows,
    load_grids,
)

HIDDEN, VOCAB, KV, MLP, SEQ = 256, 48, 64, 96, 5
T = gguf.GGMLQuantizationType
RNG = np.random.default_rng(1)
# fp16 field offsets of the K-quant super-blocks (random bytes elsewhere are valid codes).
_K_SCALES = {T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}


def _tensor(qtype: T, rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(stored data, float32 dequantized [rows, k]) of a random tensor of ``qtype``."""
    w = RNG.normal(0, 0.05, (rows, k)).astype(np.float32)
    if qtype == T.F32:
        return w, w
    if qtype == T.F16:
        return w.astype(np.float16), w.astype(np.float16).astype(np.float32)
    if qtype in _K_SCALES:
        block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
        raw = RNG.integers(0, 256, (rows * k // block, nbytes), dtype=np.uint8)
        for at in _K_SCALES[qtype]:
            scale = RNG.uniform(1e-4, 2e-3, len(raw)).astype(np.float16)
            raw[:, at : at + 2] = scale.view(np.uint8).reshape(-1, 2)
        raw = raw.reshape(rows, -1)
    else:
        raw = quantize(w, qtype)
    return raw, dequantize(raw, qtype).reshape(rows, k).astype(np.float32)


def _write_gguf(path: Path, types: dict[str, T]) -> dict[str, np.ndarray]:
    """A qwen2 GGUF with one layer's q/k/v/gate/up and the tied embedding; returns the floats."""
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_head_count(HIDDEN // 64)
    writer.add_head_count_kv(KV // 64)
    shapes = {
        "token_embd": (VOCAB, HIDDEN), "blk.0.attn_q": (HIDDEN, HIDDEN),
        "blk.0.attn_k": (KV, HIDDEN), "blk.0.attn_v": (KV, HIDDEN),
        "blk.0.ffn_gate": (MLP, HIDDEN), "blk.0.ffn_up": (MLP, HIDDEN),
    }  # fmt: skip
    floats = {}
    for name, (rows, k) in shapes.items():
        data, floats[name] = _tensor(types[name], rows, k)
        raw_dtype = None if types[name] in (T.F32, T.F16) else types[name]
        writer.add_tensor(f"{name}.weight", data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return floats


def _nbits(name: str, n: int) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """A 4-bit MatMulNBits named like the builder's, with placeholder weights."""
    b = numpy_helper.from_array(np.full((n, HIDDEN // 32, 16), 0x88, np.uint8), f"{name}.B")
    s = numpy_helper.from_array(np.ones((n, HIDDEN // 32), np.float32), f"{name}.scales")
    node = helper.make_node(
        "MatMulNBits", ["x", b.name, s.name], [name.split("/")[-2]], name=name,
        domain="com.microsoft", K=HIDDEN, N=n, bits=4, block_size=32, accuracy_level=0,
    )  # fmt: skip
    return node, [b, s]


def _builder_graph(path: Path) -> None:
    """The builder's int4 layout: the embedding is gathered from the packed 4-bit head."""
    qkv, qkv_init = _nbits("/model/layers.0/attn/qkv_proj/MatMul_Q4", HIDDEN + 2 * KV)
    gate, gate_init = _nbits("/model/layers.0/mlp/gate_proj/MatMul_Q4", MLP)
    up, up_init = _nbits("/model/layers.0/mlp/up_proj/MatMul_Q4", MLP)
    head, head_init = _nbits("/lm_head/MatMul_Q4", VOCAB)
    shape = numpy_helper.from_array(np.array([VOCAB, HIDDEN // 2]), "shape4")
    embed = [
        helper.make_node("Reshape", [head_init[0].name, "shape4"], ["table"]),
        helper.make_node(
            "GatherBlockQuantized", ["table", "ids", head_init[1].name], ["x"],
            domain="com.microsoft", bits=4, block_size=32, gather_axis=0, quantize_axis=1,
        ),
    ]  # fmt: skip
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
        for n in ("x", "qkv_proj", "gate_proj", "up_proj", "lm_head")
    ]
    graph = helper.make_graph(
        [*embed, qkv, gate, up, head], "tiny",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, SEQ])], outputs,
        [*qkv_init, *gate_init, *up_init, *head_init, shape],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))


_ROLES = ("token_embd", "q", "k", "v", "gate", "up")
CASES = {
    # SmolLM2's and Gemma 3's mixes, then every other type, K-quants mixed with legacy ones.
    "q4_1": (T.Q8_0, T.Q4_1, T.Q4_1, T.Q4_1, T.Q4_1, T.Q4_1),
    "gemma": (T.Q8_0, T.Q5_0, T.Q5_0, T.Q8_0, T.Q6_K, T.Q4_K),
    "k_quants": (T.Q4_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q5_K, T.Q4_0),
    "legacy": (T.Q6_K, T.Q4_0, T.Q5_1, T.Q4_1, T.Q5_0, T.Q5_1),
    "float": (T.F16, T.F32, T.Q8_0, T.F16, T.BF16, T.BF16),
}
_GGUF = {"q": "blk.0.attn_q", "k": "blk.0.attn_k", "v": "blk.0.attn_v"}
_GGUF |= {"gate": "blk.0.ffn_gate", "up": "blk.0.ffn_up", "token_embd": "token_embd"}


@pytest.mark.parametrize("case", CASES)
def test_reencoded_graph_computes_the_dequantized_gguf_weights(tmp_path: Path, case: str) -> None:
    floats = _write_gguf(
        tmp_path / "tiny.gguf", {_GGUF[r]: t for r, t in zip(_ROLES, CASES[case], strict=True)}
    )
    path = tmp_path / "model.onnx"
    _builder_graph(path)

    kinds = reencode_from_gguf(path, tmp_path / "tiny.gguf")

    assert sum(kinds.values()) == 4  # qkv, gate/up fused, head, embedding
    ids = np.array([[0, 7, 47, 3, 7]], np.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, qkv, gate, up, logits = session.run(None, {"ids": ids})
    emb = floats["token_embd"]
    np.testing.assert_array_equal(x[0], emb[ids[0]])  # the lookup is exact, bit for bit
    w_qkv = np.concatenate([floats[_GGUF[p]] for p in "qkv"])
    for got, w in ((qkv, w_qkv), (gate, floats["blk.0.ffn_gate"]), (up, floats["blk.0.ffn_up"])):
        want = emb[ids[0]].astype(np.float64) @ w.T.astype(np.float64)
        np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)
    want = emb[ids[0]].astype(np.float64) @ emb.T.astype(np.float64)
    np.testing.assert_allclose(logits[0], want, rtol=1e-4, atol=1e-5)


def test_llama_rows_undo_the_converters_permutation() -> None:
    """The row index equals transformers' reverse permutation of a llama GGUF's q/k rows."""
    heads, rows = 3, 3 * 8
    w = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    dim = rows // heads // 2
    expected = w.reshape(heads, dim, 2, 4).swapaxes(2, 1).reshape(rows, 4)
    np.testing.assert_array_equal(w[_llama_rows(rows, heads)], expected)


def test_unsupported_architecture_is_named(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "mamba")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedArchitecture, match="'mamba' is not supported"):
        load_grids(tmp_path / "x.gguf")
