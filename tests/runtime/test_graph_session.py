"""The session contract models run graphs through: inputs, outputs, run and close, on a real
CPU session of a small graph with inputs of several element types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from imagine_edge.runtime.graph_session import LoadedSession, TensorInfo, session_summary
from imagine_edge.runtime.ort_names import TENSOR_DTYPES, numpy_dtype
from imagine_edge.runtime.session import SessionFactory
from imagine_edge.sdk.errors import ModelRunError


def _graph(path: Path) -> Path:
    """ids (int64, [batch, 3]) and scale (float16, [1]) -> doubled (int64), half (float32)."""
    nodes = [
        helper.make_node("Add", ["ids", "ids"], ["doubled"]),
        helper.make_node("Cast", ["scale"], ["scale32"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids32", "scale32"], ["half"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 3]),
            helper.make_tensor_value_info("scale", TensorProto.FLOAT16, [1]),
        ],
        [
            helper.make_tensor_value_info("doubled", TensorProto.INT64, ["batch", 3]),
            helper.make_tensor_value_info("half", TensorProto.FLOAT, ["batch", 3]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    return path


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoadedSession:
    monkeypatch.setenv("IMAGINE_EDGE_CACHE", str(tmp_path / "cache"))
    factory = SessionFactory(intra_op_threads=1, shared_pool=False)
    return factory.create(_graph(tmp_path / "mixed.onnx"), target="cpu")


IDS = np.array([[1, 2, 3], [4, 5, 6]], np.int64)
SCALE = np.array([0.5], np.float16)


def test_inputs_and_outputs_carry_names_shapes_and_numpy_dtypes(loaded: LoadedSession) -> None:
    assert loaded.inputs == (
        TensorInfo("ids", ("batch", 3), np.int64),
        TensorInfo("scale", (1,), np.float16),
    )
    assert loaded.outputs == (
        TensorInfo("doubled", ("batch", 3), np.int64),
        TensorInfo("half", ("batch", 3), np.float32),
    )
    assert [i.static for i in loaded.inputs] == [False, True]
    assert loaded.input_names == ["ids", "scale"]
    assert loaded.output_names == ["doubled", "half"]


def test_run_returns_every_output_in_graph_order_or_those_asked(loaded: LoadedSession) -> None:
    doubled, half = loaded.run({"ids": IDS, "scale": SCALE})
    np.testing.assert_array_equal(doubled, IDS * 2)
    np.testing.assert_array_equal(half, IDS.astype(np.float32) / 2)
    (only,) = loaded.run({"ids": IDS, "scale": SCALE}, ["half"])
    np.testing.assert_array_equal(only, half)
    reordered = loaded.run({"ids": IDS, "scale": SCALE}, ("half", "doubled"))
    np.testing.assert_array_equal(reordered[1], doubled)


def test_run_passes_a_bad_feed_error_through(loaded: LoadedSession) -> None:
    with pytest.raises(Exception, match="Unexpected input data type") as caught:
        loaded.run({"ids": IDS.astype(np.float32), "scale": SCALE})
    assert not isinstance(caught.value, ModelRunError)


def test_a_closed_session_refuses_to_run(loaded: LoadedSession) -> None:
    summary = session_summary(loaded)
    assert summary["file"] == "mixed.onnx"
    assert summary["provider"] == "CPUExecutionProvider"
    loaded.close()
    assert loaded.session is None
    with pytest.raises(ModelRunError, match=r"the session of mixed\.onnx is closed"):
        loaded.run({"ids": IDS, "scale": SCALE})
    with pytest.raises(ModelRunError, match="closed"):
        _ = loaded.inputs


def test_the_dtype_table_names_onnxruntimes_type_strings() -> None:
    assert numpy_dtype("tensor(float)") is np.float32
    assert numpy_dtype("tensor(float16)") is np.float16
    assert numpy_dtype("tensor(double)") is np.float64
    assert numpy_dtype("tensor(int32)") is np.int32
    assert numpy_dtype("tensor(int64)") is np.int64
    assert numpy_dtype("tensor(string)") is None
    assert len(TENSOR_DTYPES) == 5
