"""``runtime/session_pool.py``: one session per graph content, closed with its last lease."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from imagine_edge.runtime.session import SessionFactory
from imagine_edge.runtime.session_pool import SessionPool


def _graph(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_holders_of_the_same_bytes_share_one_session_closed_with_the_last(tmp_path: Path) -> None:
    pool, factory = SessionPool(), SessionFactory(1, shared_pool=False)
    first = _graph(tmp_path / "a.onnx")
    copy = tmp_path / "b.onnx"
    shutil.copy(first, copy)  # another file, the same content

    a = pool.open("embedder", factory, first, "cpu")
    b = pool.open("reranker", factory, copy, "cpu")
    assert a.loaded is b.loaded
    assert (a.counts_memory(), b.counts_memory()) == (True, False)
    assert (a.others(), b.others()) == (["reranker"], ["embedder"])

    a.release()
    assert b.counts_memory()  # the remaining holder now counts the memory
    assert b.loaded.session is not None
    a.release()  # twice: no effect
    b.release()
    assert b.loaded.session is None  # closed with its last lease


def test_other_session_settings_get_their_own_session(tmp_path: Path) -> None:
    pool, factory = SessionPool(), SessionFactory(1, shared_pool=False)
    path = _graph(tmp_path / "a.onnx")
    plain = pool.open("one", factory, path, "cpu")
    tuned = pool.open(
        "two", factory, path, "cpu", session_config={"session.use_env_allocators": "0"}
    )
    assert plain.loaded is not tuned.loaded
    assert plain.counts_memory()
    assert tuned.counts_memory()
    plain.release()
    tuned.release()
