"""The multi-client scenario over HTTP, its llama-server peer, the progress lines and the chart."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import uvicorn

from imagine_edge.benchmarks import llama_server as ls
from imagine_edge.benchmarks.cli import _Bar
from imagine_edge.benchmarks.multi_client import IMAGINE, LLAMA_SERVER, multi_client_points
from imagine_edge.benchmarks.peers import compare_multi_client
from imagine_edge.benchmarks.report import SCHEMA_PATH, write_chart
from imagine_edge.benchmarks.scenarios import BenchConfig, Point
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.testing import fake_cards, fake_models
from imagine_edge.sdk.types import ModelType
from imagine_edge.server.app import create_app

SCHEMA = json.loads(SCHEMA_PATH.read_text())


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n


@contextlib.contextmanager
def _our_server(tmp_path: Path, delay: float) -> Iterator[str]:
    engine = Engine(fake_cards(fake_models(delay), [ModelType.LLM]), data_dir=tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.close()


def test_clients_stream_from_our_server(tmp_path):
    config = BenchConfig(llm_concurrency=(1, 2), llm_max_tokens=8, llm_multi_prompt_tokens=16)
    progress = _Count()
    with _our_server(tmp_path, 0.0) as root:
        # Windows long enough for a first chunk on a loaded machine (0.3 s was not, at load 13).
        points = multi_client_points(root, IMAGINE, "echo-llm", config, progress, 2.0)
    assert [p.params["concurrency"] for p in points] == [1, 2]
    for p in points:
        assert p.errors == 0
        assert p.throughput["aggregate_tokens_per_s"] > 0
        assert p.throughput["finished_requests"] >= 1
        assert p.metrics["ttft_s"]["n"] >= 1
        assert p.metrics["tpot_s"]["n"] >= 1
    # One progress tick per call; a call cut at its point's end before its first chunk has no
    # TTFT, and each client has at most one such call.
    with_ttft = sum(p.metrics["ttft_s"]["n"] for p in points)
    assert with_ttft <= progress.n <= with_ttft + sum(config.llm_concurrency)


def test_streams_still_running_at_the_deadline_are_cut(tmp_path):
    # The fake echoes ~100 words at 0.05 s each: far longer than the point's 1.5 s.
    config = BenchConfig(llm_concurrency=(2,), llm_max_tokens=128, llm_multi_prompt_tokens=128)
    with _our_server(tmp_path, 0.05) as root:
        (point,) = multi_client_points(root, IMAGINE, "echo-llm", config, _Count(), 1.5)
    assert point.throughput["finished_requests"] == 0
    assert point.throughput["aggregate_tokens_per_s"] > 0  # what arrived inside the window
    assert point.metrics["ttft_s"]["n"] >= 1
    assert "tpot_s" not in point.metrics  # only finished requests have a TPOT


def test_llama_server_requests_and_chunks():
    body = LLAMA_SERVER.body("m", "a prompt", 128)
    assert (body["n_predict"], body["ignore_eos"], body["stream"]) == (128, True, True)
    assert body["repeat_penalty"] == IMAGINE.body("m", "p", 1)["repetition_penalty"]
    assert LLAMA_SERVER.read({"content": " the", "stop": False}) == (" the", None)
    assert LLAMA_SERVER.read({"content": "", "stop": True, "tokens_predicted": 128}) == ("", 128)


def test_llama_server_is_found_by_option_environment_or_path(tmp_path, monkeypatch):
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.delenv(ls.LLAMA_SERVER_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ls.find_llama_server() == binary
    monkeypatch.setenv(ls.LLAMA_SERVER_ENV, str(tmp_path / "missing"))
    assert ls.find_llama_server() is None
    assert ls.find_llama_server(str(binary)) == binary


def test_a_missing_llama_server_is_reported_with_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ls.LLAMA_SERVER_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    scenario = {"model_type": "llm", "model": "m", "points": [], "peers": []}
    compare_multi_client(scenario, BenchConfig(), _Count())
    (peer,) = scenario["peers"]
    assert peer["points"] == []
    assert peer["error"].startswith("not installed: llama-server not found")
    assert "docs/bench.md" in peer["error"]


def test_a_failing_llama_server_leaves_our_points_measured(tmp_path, monkeypatch):
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\nexit 1\n")
    binary.chmod(0o755)
    monkeypatch.setenv(ls.LLAMA_SERVER_ENV, str(binary))
    scenario = {"model_type": "llm", "model": "no-such-model", "points": [], "peers": []}
    config = BenchConfig(llm_concurrency=(1, 4, 2))

    def ours(n):
        return Point(f"{n} clients", {"concurrency": n}, {}, {"aggregate_tokens_per_s": 1.0})

    compare_multi_client(scenario, config, _Count(), ours=ours)
    (peer,) = scenario["peers"]
    assert peer["error"].startswith("failed: ")
    assert [p["params"]["concurrency"] for p in scenario["points"]] == [1, 4, 2]


def test_progress_off_a_terminal_is_one_line_per_scenario():
    out = io.StringIO()  # not a terminal
    bar = _Bar(out)
    bar.describe("llm http")
    for _ in range(50):
        bar.update()
    bar.describe("embedding in-process")
    bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("bench: llm http: 50 calls")
    assert lines[1].startswith("bench: embedding in-process: 1 calls")


def _point(label, params, ttft, throughput):
    summary = {"n": 3, "p50": ttft, "min": ttft, "max": ttft, "mean": ttft, "few_samples": True}
    metrics = {"ttft_s": summary, "tpot_s": summary | {"p50": 0.01}}
    return {"label": label, "params": params, "metrics": metrics, "throughput": throughput,
            "errors": 0}  # fmt: skip


def test_chart_draws_peers_beside_ours(tmp_path):
    clients = [
        _point(f"{n} clients", {"concurrency": n}, 0.05 * n, {"aggregate_tokens_per_s": 100.0})
        for n in (1, 2, 4)
    ]
    batches = [
        _point(f"batch {b}", {"batch_size": b}, 0.01 * b, {"sentences_per_s": 50.0 * b})
        for b in (1, 8)
    ]
    report = {
        "created": "now",
        "machine": {"cpu_model": "cpu", "cores": 2, "load_average": [0.5, 0.4, 0.3]},
        "scenarios": [
            {"model_type": "llm", "model": "m", "transport": "http", "points": clients,
             "peers": [{"name": "llama-server", "points": clients}]},
            {"model_type": "embedding", "model": "e", "transport": "in-process",
             "points": batches, "peers": [{"name": "torch", "points": batches}]},
        ],
    }  # fmt: skip
    write_chart(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.model
def test_llama_server_peer_on_the_real_gguf(tmp_path):
    if ls.find_llama_server() is None:
        pytest.skip(ls.NOT_FOUND)
    from imagine_edge.models.catalog import lookup
    from imagine_edge.models.registry import model_cards

    card = next(c for c in model_cards() if c.model_type == ModelType.LLM)
    if lookup(card.name).manifest is None:
        pytest.skip(f"{card.name} is not prepared: run `make prepare`")
    config = BenchConfig(llm_concurrency=(1, 2), llm_max_tokens=8, point_seconds=4.0)
    scenario = {"model_type": "llm", "model": card.name, "transport": "http", "points": [],
                "peers": [], "execution_provider": "-"}  # fmt: skip
    measured = []

    def ours(n):  # stands for our server's point at n clients
        measured.append(n)
        return Point(f"{n} clients", {"concurrency": n}, {}, {"aggregate_tokens_per_s": 1.0})

    compare_multi_client(scenario, config, _Count(), ours=ours)
    (peer,) = scenario["peers"]
    assert "error" not in peer, peer
    assert measured == [1, 2]
    assert [p["label"] for p in scenario["points"]] == ["1 clients", "2 clients"]
    assert "aggregate tokens/s vs llama-server (2 clients), higher is better" in scenario["ratios"]
    assert [p["params"]["concurrency"] for p in peer["points"]] == [1, 2]
    # Streamed tokens arrived (a point can get none on badly overloaded cores: not each one).
    assert sum(p["throughput"]["aggregate_tokens_per_s"] for p in peer["points"]) > 0
    assert re.search(
        r"OMP_WAIT_POLICY (default|PASSIVE) \(the faster per token of default "
        r"[\d.]+ ms, PASSIVE [\d.]+ ms\)",
        peer["note"],
    ), peer["note"]
    point_schema = {"$defs": SCHEMA["$defs"], "$ref": "#/$defs/point"}
    jsonschema.validate(peer["points"][0], point_schema)


def test_a_server_that_sends_nothing_does_not_hold_the_point(tmp_path):
    # The fake's first word comes after 3 s; the point ends after 0.3 s: the request is hung up
    # on, without a first token, instead of waiting for it.
    config = BenchConfig(llm_concurrency=(1,), llm_max_tokens=4, llm_multi_prompt_tokens=8)
    with _our_server(tmp_path, 3.0) as root:
        (point,) = multi_client_points(root, IMAGINE, "echo-llm", config, _Count(), 1.5)
    assert point.errors == 0
    assert point.metrics.get("ttft_s", {"n": 0})["n"] == 0
    assert point.throughput["finished_requests"] == 0


def test_llama_server_threads_wait_as_told_else_as_chosen(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert ls.server_environment()["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in ls.server_environment("default")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert ls.server_environment("PASSIVE")["OMP_WAIT_POLICY"] == "ACTIVE"
