"""Opening an LLM decoder for a target: the CPU graph with its thread policy, the refusals and
fallbacks of qnn and auto, and closing, on the tiny builder-style decoder (conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from imagine_edge.runtime.kv_cache import DecoderSpec
from imagine_edge.runtime.llm_decoder import DecoderGraphs, open_decoder
from imagine_edge.runtime.shared_buffer_decoder import SharedBufferDecoder
from imagine_edge.runtime.targets import NO_QNN_GRAPHS
from imagine_edge.sdk.errors import ModelUnavailableError

CONTEXT = 48


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGINE_EDGE_CACHE", str(tmp_path / "cache"))


def _graphs(cpu: Path, qnn: tuple[Path, Path] | None = None) -> DecoderGraphs:
    return DecoderGraphs(name="tiny", cpu=cpu, qnn=qnn, context_length=CONTEXT)


def _first_logits(decoder, ids: list[int]) -> np.ndarray:
    with decoder.pool.lease(np.array(ids, np.int64)) as (slot, _):
        slot.tokens[: len(ids)] = ids
        return decoder.forward(slot, len(ids)).copy()


def test_cpu_opens_the_builder_graph_with_the_chosen_thread_mode(tiny_decoder: Path) -> None:
    opened = open_decoder(_graphs(tiny_decoder), "cpu", threads="sleep")
    assert isinstance(opened.decoder, SharedBufferDecoder)
    assert len(opened.sessions) == 1
    assert opened.provider == "CPUExecutionProvider"
    assert opened.fallback is None
    assert opened.policy is not None
    assert opened.policy.describe() == "workers sleep"
    assert opened.decoder.spec.max_length == CONTEXT
    assert tiny_decoder in opened.graph_files()
    session = ort.InferenceSession(str(tiny_decoder), providers=["CPUExecutionProvider"])
    spec = DecoderSpec.from_session(session, max_length=CONTEXT)
    reference = SharedBufferDecoder(session, spec)
    ids = [72, 101, 108, 108, 111]
    np.testing.assert_allclose(
        _first_logits(opened.decoder, ids), _first_logits(reference, ids), rtol=1e-5, atol=1e-5
    )
    opened.close()
    assert opened.sessions == []


def test_auto_threads_keep_a_sleeping_and_a_spinning_session(tiny_decoder: Path) -> None:
    opened = open_decoder(_graphs(tiny_decoder), "cpu", threads="auto")
    assert len(opened.sessions) == 2
    assert all(s.prepacked is not None for s in opened.sessions)
    assert opened.policy is not None
    assert opened.policy.describe().startswith("adaptive")
    sessions = list(opened.sessions)
    opened.close()
    assert all(s.session is None for s in sessions)


def test_max_length_is_capped_by_the_context(tiny_decoder: Path) -> None:
    for asked, got in ((None, CONTEXT), (32, 32), (10_000, CONTEXT)):
        opened = open_decoder(_graphs(tiny_decoder), "cpu", max_length=asked, threads="sleep")
        assert opened.decoder.spec.max_length == got
        opened.close()


def test_qnn_without_qnn_graphs_is_unavailable(tiny_decoder: Path) -> None:
    with pytest.raises(ModelUnavailableError, match=f"tiny has {NO_QNN_GRAPHS}"):
        open_decoder(_graphs(tiny_decoder), "qnn")


def test_auto_falls_back_to_the_cpu_graph_and_says_why(tiny_decoder: Path, tmp_path: Path) -> None:
    opened = open_decoder(_graphs(tiny_decoder), "auto", threads="sleep")
    assert opened.provider == f"CPUExecutionProvider (fallback: {NO_QNN_GRAPHS})"
    opened.close()
    missing = (tmp_path / "prefill.onnx", tmp_path / "decode.onnx")
    opened = open_decoder(_graphs(tiny_decoder, missing), "auto", threads="sleep")
    assert opened.fallback is not None
    assert "prefill.onnx does not exist" in opened.fallback
    assert opened.provider.startswith("CPUExecutionProvider (fallback: load: model file")
    assert len(opened.sessions) == 1
    opened.close()
