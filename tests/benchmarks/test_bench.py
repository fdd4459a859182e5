"""``imagine-edge bench`` smoke runs: every scenario, JSON validated against the schema."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

from imagine_edge.benchmarks.cli import parse_args, run_bench
from imagine_edge.benchmarks.report import SCHEMA_PATH, render_table, write_chart, write_json
from imagine_edge.benchmarks.stats import summarize
from imagine_edge.python_command import python_module
from imagine_edge.sdk.client import ImagineEdge
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.testing import fake_cards, fake_models
from imagine_edge.sdk.types import ModelType

SCHEMA = json.loads(SCHEMA_PATH.read_text())


def test_summary_percentiles() -> None:
    s = summarize([float(x) for x in range(1, 101)])
    assert (s["n"], s["min"], s["max"]) == (100, 1.0, 100.0)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p99"] == pytest.approx(99.01)
    assert "few_samples" not in s
    assert summarize([]) == {"n": 0}


def test_percentiles_only_from_enough_samples() -> None:
    few = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert few["few_samples"] is True
    assert "p95" not in few
    assert "p99" not in few
    assert (few["p50"], few["max"]) == (3.0, 100.0)
    twenty = summarize([float(x) for x in range(20)])
    assert "p95" in twenty
    assert "p99" not in twenty
    assert twenty["few_samples"] is True


@pytest.fixture
def fake_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A short WAV for the transcribe scenario (the fake transcriber only describes the bytes).
    import wave

    audio = tmp_path / "tone.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 16000)
    monkeypatch.setenv("IMAGINE_EDGE_DATA_DIR", str(tmp_path))
    engine = Engine(fake_cards(fake_models()), data_dir=tmp_path)
    client = ImagineEdge(engine=engine)
    yield client, audio
    client.close()


def test_smoke_run_of_every_scenario_validates_against_the_schema(fake_client, tmp_path: Path):
    client, audio = fake_client
    args = parse_args(["--all", "--smoke", "--audio", str(audio), "--image-size", "64x64"])
    report = run_bench(args, local=client)
    jsonschema.validate(report, SCHEMA)
    measured = {s["model_type"] for s in report["scenarios"]}
    assert measured == {t.value for t in ModelType}
    for scenario in report["scenarios"]:
        assert "error" not in scenario, scenario
        assert scenario["points"], scenario["model_type"]
        for point in scenario["points"]:
            assert all(m["n"] >= 1 for m in point["metrics"].values())
            assert all(v > 0 for v in point["throughput"].values()), point
    llm = next(s for s in report["scenarios"] if s["model_type"] == "llm")
    assert {p["params"]["concurrency"] for p in llm["points"]} == {1, 2}
    assert "ttft_s" in llm["points"][0]["metrics"]
    # --duration is the whole run's: every point gets an equal share of it.
    points = sum(len(s["points"]) for s in report["scenarios"])
    assert report["config"]["point_seconds"] == pytest.approx(report["config"]["duration"] / points)
    assert len(report["machine"]["load_average"]) == len(report["load_average_end"]) == 3

    write_json(report, tmp_path / "bench.json")
    write_chart(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "llm" in render_table(report)


@pytest.mark.model
def test_cli_smoke_on_the_real_models_in_process_and_over_http(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [
            *python_module("imagine_edge"),
            "bench",
            "--type",
            "llm",
            "--smoke",
            "--http",
            "auto",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "bench.json").read_text())
    jsonschema.validate(report, SCHEMA)
    transports = {s["transport"] for s in report["scenarios"]}
    assert transports == {"in-process", "http"}
    assert (out / "bench.png").is_file()
    assert "CPUExecutionProvider" in done.stdout or "QNNExecutionProvider" in done.stdout
