"""The cache of optimized CPU graphs whose pre-packed weights are memory-mapped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from imagine_edge.runtime import prepacked as prepacked_module
from imagine_edge.runtime.memory import process_resident_bytes
from imagine_edge.runtime.prepacked import (
    cpu_identity,
    orphaned_copies,
    prepacked_copy,
    prepacked_dir,
)
from imagine_edge.runtime.session import SessionFactory, file_digest

# A 4-bit MatMulNBits weight (the LLM's layers): 8 MiB, and onnxruntime's pre-packed copy of it
# is larger. (A float MatMul's pre-packed panels are not saved to the file: not shareable.)
K, N, BLOCK = 4096, 4096, 32


def _model(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    packed = rng.integers(0, 256, (N, K // BLOCK, BLOCK // 2), dtype=np.uint8)
    scales = ((rng.random(N * K // BLOCK) + 0.5) * 0.01).astype(np.float32)
    node = helper.make_node(
        "MatMulNBits", ["x", "B", "scales"], ["y"], domain="com.microsoft",
        K=K, N=N, bits=4, block_size=BLOCK, accuracy_level=4,
    )  # fmt: skip
    graph = helper.make_graph(
        [node, helper.make_node("Relu", ["y"], ["z"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, N])],
        [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(scales, "scales")],
    )
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    onnx.save(model, path, save_as_external_data=True, location=path.name + ".data")
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMAGINE_EDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return so


def _open(path: Path, *, optimized: bool = False) -> ort.InferenceSession:
    so = _options()
    if optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


X = np.random.default_rng(1).standard_normal((1, K)).astype(np.float32)


def test_the_copy_computes_what_the_graph_does(cache: Path, tmp_path: Path) -> None:
    source = _model(tmp_path / "m.onnx")
    copy = prepacked_copy(source, file_digest(source), _options())
    assert copy.is_relative_to(prepacked_dir())
    assert prepacked_dir().is_relative_to(cache)
    assert (
        copy.with_name("model.data").stat().st_size > source.with_name("m.onnx.data").stat().st_size
    )
    (expected,) = _open(source).run(None, {"x": X})
    (got,) = _open(copy, optimized=True).run(None, {"x": X})
    np.testing.assert_array_equal(got, expected)


def test_the_copy_is_saved_once_and_keyed_by_content(cache: Path, tmp_path: Path) -> None:
    source = _model(tmp_path / "m.onnx")
    first = prepacked_copy(source, file_digest(source), _options())
    stamp = first.stat().st_mtime_ns
    assert prepacked_copy(source, file_digest(source), _options()) == first
    assert first.stat().st_mtime_ns == stamp
    other = (
        _model(tmp_path / "other" / "m.onnx", seed=5)
        if (tmp_path / "other").mkdir() is None
        else None
    )
    assert other is not None
    assert prepacked_copy(other, file_digest(other), _options()) != first
    # Nothing half-written is left beside the entries.
    assert sorted(p.name.startswith(".saving-") for p in prepacked_dir().iterdir()) == [
        False,
        False,
    ]


def test_the_key_includes_this_cpu(
    monkeypatch: pytest.MonkeyPatch, cache: Path, tmp_path: Path
) -> None:
    source = _model(tmp_path / "m.onnx")
    here = prepacked_copy(source, file_digest(source), _options())
    monkeypatch.setattr(prepacked_module, "cpu_identity", lambda: "another cpu")
    there = prepacked_copy(source, file_digest(source), _options())
    assert here.parent != there.parent
    assert "flags" in cpu_identity() or "machine" in cpu_identity()


def test_the_factory_opens_the_copy_and_falls_back_when_it_cannot_save(
    monkeypatch: pytest.MonkeyPatch, cache: Path, tmp_path: Path
) -> None:
    factory = SessionFactory(intra_op_threads=1, shared_pool=False)
    source = _model(tmp_path / "m.onnx")
    loaded = factory.create(source, target="cpu", prepacked=True)
    assert loaded.prepacked is not None
    assert loaded.path == source
    (expected,) = _open(source).run(None, {"x": X})
    np.testing.assert_array_equal(loaded.session.run(None, {"x": X})[0], expected)

    def full_disk(*_: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("imagine_edge.runtime.session.prepacked_copy", full_disk)
    plain = factory.create(_model(tmp_path / "n.onnx", seed=2), target="cpu", prepacked=True)
    assert plain.prepacked is None
    assert plain.session.run(None, {"x": X})[0].shape == (1, N)


_GROWTH = """
import sys, onnxruntime as ort, numpy as np
from imagine_edge.runtime.memory import process_resident_bytes
so = ort.SessionOptions(); so.intra_op_num_threads = 1
if sys.argv[2] == "optimized":
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
x = np.ones((1, int(sys.argv[3])), np.float32)
sessions, sizes = [], []
for _ in range(2):
    before = process_resident_bytes()
    sessions.append(ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"]))
    sessions[-1].run(None, {"x": x})
    sizes.append(process_resident_bytes() - before)
print(sizes[0], sizes[1])
"""


def _growth(path: Path, mode: str) -> tuple[int, int]:
    """Resident memory added by a first and a second session of ``path``, in a fresh process."""
    command = [sys.executable, "-c", _GROWTH, str(path), mode, str(K)]
    # A fixed mmap threshold: onnxruntime packs a weight while loading even when the mapped copy
    # then serves it, and with glibc's adaptive threshold that freed buffer would stay on the
    # heap and count as resident, hiding what each session keeps.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    first, second = out.stdout.split()
    return int(first), int(second)


@pytest.mark.skipif(process_resident_bytes() is None, reason="reads /proc")
def test_a_second_session_shares_the_mapped_weights(cache: Path, tmp_path: Path) -> None:
    source = _model(tmp_path / "m.onnx")
    copy = prepacked_copy(source, file_digest(source), _options())
    os.sync()  # the copy's pages are clean page cache, as after any later start
    _, second_plain = _growth(source, "plain")
    _, second_mapped = _growth(copy, "optimized")
    # A plain session holds its own pre-packed copy of the weight; a mapped one shares it.
    assert second_plain > 8 * 2**20, second_plain / 2**20
    assert second_mapped < second_plain / 3, (second_mapped / 2**20, second_plain / 2**20)


def test_a_copy_whose_source_is_gone_is_orphaned(cache: Path, tmp_path: Path) -> None:
    kept = _model(tmp_path / "kept.onnx")
    (tmp_path / "old").mkdir()
    gone = _model(tmp_path / "old" / "m.onnx", seed=3)
    copies = [prepacked_copy(p, file_digest(p), _options()).parent for p in (kept, gone)]
    assert orphaned_copies() == []
    assert orphaned_copies([tmp_path / "old"]) == [copies[1]]  # about to be removed
    gone.unlink()
    assert orphaned_copies() == [copies[1]]
