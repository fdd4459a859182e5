"""The session factory: CPU sessions, strict QNN placement on the HTP simulator, the EPContext
cache, and the explicit CPU fallback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config

from imagine_edge.runtime.providers import CPU_EP, QNN_EP, qnn_unavailable_reason
from imagine_edge.runtime.session import SessionFactory, brief_reason, orphaned_compilations
from imagine_edge.sdk.errors import ModelRunError

needs_qnn = pytest.mark.skipif(
    qnn_unavailable_reason() is not None, reason=f"QNN unavailable: {qnn_unavailable_reason()}"
)
WEIGHTS = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)


def _float_model(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor("W", TensorProto.FLOAT, [16, 8], WEIGHTS.flatten())],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    return path


class _Calibration(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self._batches = iter([{"x": rng.standard_normal((1, 16)).astype(np.float32)}] * 8)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qdq")
    float_path = _float_model(root / "float.onnx")
    config = get_qnn_qdq_config(
        str(float_path),
        _Calibration(),
        activation_type=QuantType.QUInt16,
        weight_type=QuantType.QUInt8,
    )
    quantize(str(float_path), str(root / "qdq.onnx"), config)
    return root / "qdq.onnx"


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SessionFactory:
    monkeypatch.setenv("IMAGINE_EDGE_CACHE", str(tmp_path / "cache"))
    # Per-session threads: this process also runs the quantizer's own sessions.
    return SessionFactory(intra_op_threads=1, shared_pool=False)


X = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)


def test_cpu_session_runs_and_reports_placement(factory: SessionFactory, tmp_path: Path) -> None:
    loaded = factory.create(_float_model(tmp_path / "m.onnx"), target="cpu")
    assert loaded.provider == CPU_EP
    assert loaded.fallback_reason is None
    assert loaded.node_assignment == {CPU_EP: 2}
    (out,) = loaded.session.run(None, {"x": X})
    np.testing.assert_allclose(out, np.maximum(X @ WEIGHTS, 0), rtol=1e-5, atol=1e-5)


def test_missing_model_is_a_load_error(factory: SessionFactory, tmp_path: Path) -> None:
    with pytest.raises(ModelRunError, match="does not exist") as info:
        factory.create(tmp_path / "nope.onnx", target="cpu")
    assert info.value.phase == "load"


@needs_qnn
def test_qdq_graph_runs_entirely_on_qnn_and_caches_its_context(
    factory: SessionFactory, qdq_model: Path
) -> None:
    first = factory.create(qdq_model, target="qnn")
    assert first.provider == QNN_EP
    assert set(first.node_assignment) == {QNN_EP}
    assert not first.from_epcontext_cache
    cached = factory.epcontext_path(qdq_model, factory_options := _options())
    assert cached.is_file(), factory_options
    # The context binary sits beside its wrapper, with the record of its source graph (for
    # `models prune`); nothing of the staging folder is left.
    assert cached.with_name(cached.stem + "_qnn.bin").is_file()
    assert sorted(p.name for p in cached.parent.iterdir()) == sorted(
        [cached.name, cached.stem + "_qnn.bin", cached.stem + ".source.json"]
    )
    assert orphaned_compilations() == []
    assert orphaned_compilations([qdq_model.parent]) == sorted(cached.parent.iterdir())
    (on_npu,) = first.session.run(None, {"x": X})

    second = factory.create(qdq_model, target="qnn")
    assert second.from_epcontext_cache
    (again,) = second.session.run(None, {"x": X})
    np.testing.assert_array_equal(on_npu, again)

    (on_cpu,) = factory.create(qdq_model, target="cpu").session.run(None, {"x": X})
    np.testing.assert_allclose(on_npu, on_cpu, atol=0.05)


def _options():  # the defaults the factory uses when none are given
    from imagine_edge.runtime.providers import QnnOptions

    return QnnOptions()


def _unsupported_model(path: Path) -> Path:
    # A float Range is not supported by the HTP backend (docs/qnn.md), so strict QNN must refuse it.
    graph = helper.make_graph(
        [helper.make_node("Range", ["start", "limit", "delta"], ["r"])],
        "range",
        [helper.make_tensor_value_info("start", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, [None])],
        [
            helper.make_tensor("limit", TensorProto.FLOAT, [], [4.0]),
            helper.make_tensor("delta", TensorProto.FLOAT, [], [1.0]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    return path


@needs_qnn
def test_strict_qnn_refuses_a_graph_it_cannot_place(
    factory: SessionFactory, tmp_path: Path
) -> None:
    with pytest.raises(ModelRunError) as info:
        factory.create(_unsupported_model(tmp_path / "r.onnx"), target="qnn")
    assert info.value.phase == "load"


_AUDIO_AFTER_QNN = """
import io, sys
import numpy as np
from imagine_edge.runtime.session import SessionFactory, brief_reason, orphaned_compilations
from imagine_edge.sdk.errors import ModelRunError
try:
    SessionFactory(1, shared_pool=False).create(sys.argv[1], target="qnn")
except ModelRunError:
    pass  # refused, but the HTP backend's libraries are loaded now
import soundfile  # first imported after them, as in a server that transcribes later
buffer = io.BytesIO()
soundfile.write(buffer, np.linspace(-0.5, 0.5, 1600, dtype=np.float32), 16000, format="WAV")
samples, rate = soundfile.read(io.BytesIO(buffer.getvalue()), dtype="float32")
print(rate, samples.shape[0])
"""


@needs_qnn
def test_audio_decoding_still_works_after_a_qnn_session(tmp_path: Path) -> None:
    # libQnnHtp.so exports an old libffi; cffi loaded after it broke soundfile (see providers).
    model = _unsupported_model(tmp_path / "r.onnx")
    env = {**os.environ, "IMAGINE_EDGE_CACHE": str(tmp_path / "cache")}
    out = subprocess.run(
        [sys.executable, "-c", _AUDIO_AFTER_QNN, str(model)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1].split() == ["16000", "1600"]  # QNN prints above it


@needs_qnn
def test_auto_falls_back_to_cpu_as_a_reported_decision(
    factory: SessionFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = factory.create(_unsupported_model(tmp_path / "r.onnx"), target="auto")
    assert loaded.provider == CPU_EP
    assert loaded.fallback_reason
    assert "fallback" in loaded.describe()
    decisions = [r.message for r in caplog.records if "on the CPU EP, not QNN" in r.message]
    assert decisions == [
        f"{tmp_path.name}/r.onnx: on the CPU EP, not QNN: {loaded.fallback_reason}"
    ]
    (out,) = loaded.session.run(None, {"start": np.array(0.0, np.float32)})
    np.testing.assert_array_equal(out, [0.0, 1.0, 2.0, 3.0])


@needs_qnn
def test_a_graph_qnn_cannot_take_prints_no_node_list(
    factory: SessionFactory, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # QNN's capability check logged every unsupported node as an onnxruntime error (134 KB of
    # stderr for a float UNet); the decision is the one log line above, the reason one line.
    loaded = factory.create(_unsupported_model(tmp_path / "r.onnx"), target="auto")
    err = capfd.readouterr().err
    assert "Unsupported nodes" not in err
    assert "[E:onnxruntime" not in err
    assert loaded.fallback_reason is not None
    assert len(loaded.fallback_reason) <= 200
    assert "\n" not in loaded.fallback_reason


def test_brief_reason_is_one_short_line() -> None:
    long = "load: QNN could not compile m.onnx: [ONNXRuntimeError] : 11 : EP_FAIL : " + "x " * 300
    reason = brief_reason(long)
    assert reason.startswith("load: QNN could not compile m.onnx: x x")
    assert len(reason) <= 200
    assert reason.endswith("...")
    refused = (
        "QNN could not compile unet.onnx: [ONNXRuntimeError] : 1 : FAIL : This session contains "
        "graph nodes that are assigned to the default CPU EP, but fallback to CPU EP has been "
        "explicitly disabled by the user."
    )
    assert brief_reason(refused) == "the QNN EP does not support every node of the graph"


def test_shared_pool_serves_several_sessions(tmp_path: Path) -> None:
    # A fresh process, as in the server: every session comes from the factory and shares one pool.
    script = f"""
import numpy as np
from imagine_edge.runtime.session import SessionFactory, brief_reason, orphaned_compilations
f = SessionFactory(intra_op_threads=2, shared_pool=True)
a = f.create({str(_float_model(tmp_path / "a.onnx"))!r}, target="cpu")
b = f.create({str(_float_model(tmp_path / "b.onnx"))!r}, target="cpu")
x = np.ones((1, 16), np.float32)
assert f.shared_pool
assert (a.session.run(None, {{"x": x}})[0] == b.session.run(None, {{"x": x}})[0]).all()
print("shared ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "shared ok" in done.stdout
