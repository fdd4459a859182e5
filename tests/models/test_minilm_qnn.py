"""all-MiniLM-L6-v2 and its bi-encoder reranker on the QNN HTP (the simulator on x86-64): every
node on QNNExecutionProvider, agreement with the float CPU graph, and the EPContext cache reused
by a fresh process. The simulator takes about a second per call: few calls here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from imagine_edge.models.catalog import prepared
from imagine_edge.models.embedding import EMBEDDING_MODEL, SentenceEmbedder, open_embedder
from imagine_edge.models.prepare.minilm import QNN_BUCKETS
from imagine_edge.models.reranker import load_minilm_bi_encoder_reranker
from imagine_edge.models.sentence_encoder import QNN_OPTIONS
from imagine_edge.models.store import Manifest
from imagine_edge.runtime.providers import QNN_EP, qnn_unavailable_reason
from imagine_edge.runtime.session import shared_factory

pytestmark = [pytest.mark.qnn, pytest.mark.model]

TEXTS = [
    "A man is eating food.",
    "How many people live in Berlin?",
    "The quarterly report shows that revenue grew faster than costs.",
    # ~70 word pieces: runs in the 128-token graph.
    "The committee met on Tuesday to discuss the new budget, which includes more money for "
    "schools, hospitals and public transport, and a plan to repair the old bridge over the "
    "river before winter; several members asked for a detailed report on the costs before "
    "the final vote next month.",
]


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    reason = qnn_unavailable_reason()
    if reason:
        pytest.skip(f"QNN unavailable: {reason}")
    return prepared(EMBEDDING_MODEL, ["cpu-fp32", "qnn"])


@pytest.fixture(scope="module")
def npu(manifest: Manifest) -> SentenceEmbedder:
    return open_embedder(manifest, "qnn")


def test_every_graph_runs_entirely_on_the_htp(manifest: Manifest, npu: SentenceEmbedder) -> None:
    sessions = npu.encoder.sessions()
    assert sorted(int(s.path.stem.rsplit("_s", 1)[1]) for s in sessions) == list(QNN_BUCKETS)
    for s in sessions:
        assert s.provider == QNN_EP
        assert set(s.node_assignment) == {QNN_EP}
    assert npu.execution_provider.startswith(QNN_EP)  # "(sessions shared with ...)" if shared
    # The sessions above run compiled EPContext graphs (one node each). The QDQ graphs
    # themselves, placed with CPU fallback allowed, must not leave a single node to the CPU.
    import onnxruntime as ort

    from imagine_edge.runtime.providers import qnn_devices

    for role, graph in manifest.variant("qnn").graphs.items():
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        so.add_provider_for_devices(qnn_devices(), QNN_OPTIONS.provider_options())
        session = ort.InferenceSession(str(graph.path), so)
        placed: dict[str, int] = {}
        for sub in session.get_provider_graph_assignment_info():
            placed[sub.ep_name] = placed.get(sub.ep_name, 0) + len(sub.get_nodes())
        assert set(placed) == {QNN_EP}, f"{role}: {placed}"
        assert placed[QNN_EP] > 500  # the whole QDQ encoder, not a stub


def test_htp_agrees_with_the_float_cpu_graph(manifest: Manifest, npu: SentenceEmbedder) -> None:
    reference = open_embedder(manifest, "cpu-fp32").embed(TEXTS)
    out = npu.embed(TEXTS)
    assert out.prompt_tokens == reference.prompt_tokens
    lengths = [len(e.ids) for e in npu.tokenize(TEXTS)]
    assert max(lengths) > QNN_BUCKETS[0]  # the 128-token bucket ran too
    cosines = np.sum(out.vectors * reference.vectors, axis=1)
    assert cosines.min() >= 0.99, cosines
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)


def test_bi_encoder_reranker_on_the_htp(manifest: Manifest) -> None:
    reranker = load_minilm_bi_encoder_reranker("qnn")
    assert all(set(s.node_assignment) == {QNN_EP} for s in reranker.embedder.encoder.sessions())
    passages = [
        "Berlin is well known for its museums.",
        "Berlin has a population of about 3.5 million people.",
        "New York City is the most populous city in the United States.",
        "Whisk the eggs with sugar and bake the cake for forty minutes.",
    ]
    scores = reranker.rank("How many people live in Berlin?", passages).scores
    assert int(np.argmax(scores)) == 1
    cpu = load_minilm_bi_encoder_reranker("cpu-fp32").rank(
        "How many people live in Berlin?", passages
    )
    np.testing.assert_allclose(scores, cpu.scores, atol=0.02)


_CHILD = """
import json, sys
from imagine_edge.models.embedding import load_all_minilm_l6_v2
from imagine_edge.models.reranker import load_minilm_bi_encoder_reranker
embedder = load_all_minilm_l6_v2("qnn")
reranker = load_minilm_bi_encoder_reranker("qnn")
vector = embedder.embed(["How many people live in Berlin?"]).vectors[0]
json.dump({
    "embedder": {s.path.name: s.from_epcontext_cache for s in embedder.encoder.sessions()},
    "shared": [a is b for a, b in zip(
        embedder.encoder.sessions(), reranker.embedder.encoder.sessions(), strict=True
    )],
    "vector": vector.tolist(),
}, sys.stdout)
"""


def _child() -> dict[str, object]:
    # A fresh interpreter, not a fork: a process forked after using the HTP hangs (docs/qnn.md).
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "IMAGINE_EDGE_SHARED_THREAD_POOL": "0"},
        timeout=600,
    )
    # The simulator prints a line of its own on stdout before ours.
    report: dict[str, object] = json.loads(done.stdout[done.stdout.index("{") :])
    return report


def test_epcontext_cache_is_reused_across_process_starts(manifest: Manifest) -> None:
    smallest = manifest.variant("qnn").graphs[f"encoder_s{QNN_BUCKETS[0]}"].path
    cached = shared_factory().epcontext_path(smallest, QNN_OPTIONS)
    cached.unlink(missing_ok=True)  # a cache entry: the next load compiles it again
    first, second = _child(), _child()
    assert first["embedder"][smallest.name] is False  # type: ignore[index]
    # The reranker runs the embedder's graph bytes: it opens no sessions of its own.
    assert first["shared"] == second["shared"] == [True] * len(QNN_BUCKETS)
    assert all(second["embedder"].values())  # type: ignore[attr-defined]
    assert cached.is_file()
    # Compiled once or loaded from the cache, the HTP computes the same vector.
    assert first["vector"] == second["vector"]
