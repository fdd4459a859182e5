"""Idle unload (a keep-alive per model, as Ollama's) and health's account of the whole process's
memory, on the real embedding model."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from imagine_edge.models.registry import model_cards
from imagine_edge.runtime.memory import process_resident_bytes
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.engine.memory_report import memory_accounting
from imagine_edge.sdk.engine.workers import parse_keep_alive
from imagine_edge.sdk.types import EmbeddingRequest
from imagine_edge.server.cli import keep_alive_option

MODEL = "all-minilm-l6-v2"


def _cards():  # type: ignore[no-untyped-def]
    cards = [c for c in model_cards() if c.name == MODEL]
    if not cards:
        pytest.skip(f"{MODEL} is not in the catalog")
    return cards


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 120
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _embed(engine: Engine) -> None:
    out = engine.embeddings(EmbeddingRequest(model=MODEL, input=["a", "b"])).result()
    assert len(out.data) == 2


def test_an_idle_model_unloads_after_its_keep_alive_and_its_memory_comes_back(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    with Engine(_cards(), data_dir=tmp_path, keep_alive={MODEL: 1.0}) as engine:
        _embed(engine)  # a first load imports the runtime's libraries, which stay
        engine.unload(MODEL)
        before = process_resident_bytes()
        _embed(engine)
        (state,) = engine.model_states()
        assert state.state == "loaded"
        assert state.load_rss_bytes
        assert "unloads after 1 s idle" in engine.health().models
        loaded = process_resident_bytes()
        _until(lambda: engine.model_states()[0].state.startswith("not loaded"), "the idle unload")
        assert engine.model_states()[0].state == "not loaded (unloaded after 1 s idle)"
        after = process_resident_bytes()
        if before is not None and loaded is not None and after is not None:
            # Most of what the load took is back.
            assert after - before < 0.5 * (loaded - before), (before, loaded, after)
        _embed(engine)  # it reloads on next use
        assert engine.model_states()[0].state == "loaded"


def test_keep_alive_defaults_never_in_process_minutes_on_the_server(
    tmp_path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with Engine(_cards(), data_dir=tmp_path) as engine:
        assert engine.workers.keep_alive_of(MODEL) is None
    monkeypatch.delenv("IMAGINE_EDGE_KEEP_ALIVE", raising=False)
    assert keep_alive_option(None) == {"*": 300.0}
    monkeypatch.setenv("IMAGINE_EDGE_KEEP_ALIVE", "30s")
    assert keep_alive_option([f"{MODEL}=never", "tiny-sd-random=1h"]) == {
        "*": 30.0,
        MODEL: None,
        "tiny-sd-random": 3600.0,
    }
    assert [parse_keep_alive(t) for t in ("5m", "300", "0", "-1", "1.5h")] == [
        300.0,
        300.0,
        0.0,
        None,
        5400.0,
    ]
    with pytest.raises(ValueError, match="keep-alive must be a duration"):
        parse_keep_alive("soon")


def test_health_accounts_for_the_whole_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Engine(_cards(), data_dir=tmp_path) as engine:
        _embed(engine)
        text = engine.health().models
        match = re.search(r"process memory ([\d.]+) MiB \(proportional\): (.*)$", text)
        assert match, text
        parts = {
            name.strip(): float(value)
            for name, value in re.findall(r"([a-zA-Z ,]+?) ([\d.]+)(?:,|$)", match.group(2))
        }
        assert set(parts) >= {"models", "runtime libraries", "arenas, tensors and caches"}
        assert parts["models"] > 1.0
        total = process_resident_bytes()
        accounting = memory_accounting(engine.model_states(), engine.memory_at_start)
        if total is None or accounting is None:
            pytest.skip("no /proc")
        named = sum(v for k, v in accounting.items() if k != "the rest")
        assert abs(named - total) <= 0.15 * total, (accounting, total)
