"""The MiniLM int8 recipe's steps: calibration without dropout, smoothing that keeps the float
function, and the 8-bit word embedding table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imagine_edge.models.catalog import prepared
from imagine_edge.models.embedding import EMBEDDING_MODEL
from imagine_edge.models.prepare.minilm_graph import encoder_class, export, load_bert
from imagine_edge.models.prepare.minilm_int8 import (
    SMOOTHED_INPUTS,
    channel_ranges,
    quantize_embedding,
    smoothing_scales,
)
from imagine_edge.models.prepare.minilm_texts import CALIBRATION_TEXTS


@pytest.mark.model
def test_smoothing_keeps_the_float_function_and_calibration_is_repeatable(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer

    manifest = prepared(EMBEDDING_MODEL, [])
    assert manifest.float_weights is not None
    bert = load_bert(manifest.float_weights)
    tok = Tokenizer.from_file(str(manifest.tokenizer))
    texts = CALIBRATION_TEXTS[:8]
    plain = encoder_class()(bert, static=False, outliers={})
    # The exporter restores the module's mode: the wrapped BertModel must stay in eval mode,
    # or the calibration after an export runs with dropout (different channels every time).
    export(plain, tmp_path / "float.onnx", static_seq=None)
    assert not bert.training
    ranges = channel_ranges(bert, texts, tok)
    again = channel_ranges(bert, texts, tok)
    assert all(torch.equal(ranges[k], again[k]) for k in ranges)
    scales = smoothing_scales(ranges, SMOOTHED_INPUTS)
    assert {kind for _, kind in scales} == set(SMOOTHED_INPUTS)
    assert all(bool((s >= 1).all()) and float(s.max()) > 2 for s in scales.values())
    smoothed = encoder_class()(bert, static=False, outliers={}, smoothing=scales)
    enc = tok.encode_batch(list(texts[:2]))
    width = max(len(e.ids) for e in enc)
    ids = torch.zeros((2, width), dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(enc):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        mask[row, : len(e.ids)] = 1
    with torch.no_grad():
        torch.testing.assert_close(smoothed(ids, mask), plain(ids, mask), rtol=1e-4, atol=1e-4)


def test_word_embeddings_go_8_bit_per_block(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = (rng.standard_normal((10_001, 64)) * 0.05).astype(np.float32)
    table[7, 3] = 0.9  # one wide value: only its block's scale grows
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["out"], name="/word_embeddings/Gather")],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "s", 64])],
        [numpy_helper.from_array(table, "table")],
    )
    path = tmp_path / "gather.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    error = quantize_embedding(path, block=32)
    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node] == ["GatherBlockQuantized"]
    ids = np.array([[7, 0, 10_000]], np.int64)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"ids": ids}
    )[0]
    assert np.abs(out - table[ids]).max() <= error + 1e-7
    assert error <= 0.9 / 254 + 1e-7  # half a step of the widest block
    assert np.abs(out[0, 1] - table[0]).max() < 0.25 / 254  # other blocks keep their own step
