"""``imagine-edge serve``: model loading, the banner, and the hand-over to uvicorn."""

from __future__ import annotations

import pytest
import uvicorn

from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.errors import ModelUnavailableError
from imagine_edge.sdk.testing import fake_cards
from imagine_edge.server import cli


def test_serve_preloads_models_prints_the_banner_and_runs_uvicorn(monkeypatch, capsys, tmp_path):
    engines: list[Engine] = []

    def from_catalog(names, **kwargs):
        engine = Engine(fake_cards(), data_dir=tmp_path, **kwargs)
        engines.append(engine)
        return engine

    ran = {}
    monkeypatch.setattr(Engine, "from_catalog", staticmethod(from_catalog))

    def run(app, **kwargs):
        ran.update(kwargs, states=app.state.engine.model_states())

    monkeypatch.setattr(uvicorn, "run", run)
    monkeypatch.setenv("IMAGINE_EDGE_API_KEY", "from-env")
    argv = ["--host", "0.0.0.0", "--port", "8123", "--max-queue", "3", "--preload"]
    assert cli.serve_command(argv) == 0
    banner = capsys.readouterr().out
    assert "http://0.0.0.0:8123/api/v2" in banner
    assert (
        "echo-llm: CPUExecutionProvider (fake) (default; answers to 'Llama-3.1-8B' too)" in banner
    )
    assert "API key required" in banner
    assert "from-env" not in banner
    assert (ran["host"], ran["port"]) == ("0.0.0.0", 8123)
    assert {s.state for s in ran["states"]} == {"loaded"}  # loaded before serving
    with pytest.raises(ModelUnavailableError, match="closed"):  # and closed afterwards
        engines[0].load(["echo-llm"])


def test_serve_loads_models_lazily_by_default(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(
        Engine,
        "from_catalog",
        staticmethod(lambda names, **kw: Engine(fake_cards(), data_dir=tmp_path, **kw)),
    )
    ran = {}
    monkeypatch.setattr(
        uvicorn, "run", lambda app, **kw: ran.update(states=app.state.engine.model_states())
    )
    assert cli.serve_command(["--port", "8124"]) == 0
    assert not any(s.state == "loaded" for s in ran["states"])  # nothing takes memory yet
    assert "echo-llm: loads on first use (default" in capsys.readouterr().out
