"""Fixtures: an engine over the fake models and a real uvicorn server on a free local port."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.limits import Limits
from imagine_edge.sdk.testing import FakeModel, fake_cards, fake_models
from imagine_edge.sdk.types import ModelType
from imagine_edge.server.app import create_app


@dataclass
class Live:
    """A running server: its root URL, the Imagine endpoint, the engine and the fakes."""

    root: str
    engine: Engine
    fakes: dict[ModelType, FakeModel]

    @property
    def endpoint(self) -> str:
        return self.root + "/api/v2"


@contextlib.contextmanager
def serving(app: FastAPI, **config: Any) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 and a free port (``config``: more uvicorn
    settings); yields the root URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", **config
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def live_server(
    tmp_path: object,
    *,
    delay: float = 0.0,
    max_queue: int = 16,
    limits: Limits | None = None,
    api_key: str | None = None,
    heartbeat: float = 10.0,
    types: list[ModelType] | None = None,
    **app_options: object,
) -> Iterator[Live]:
    """An engine over fresh fakes, served; everything is closed afterwards."""
    fakes = fake_models(delay)
    engine = Engine(
        fake_cards(fakes, types),
        data_dir=tmp_path,
        max_queue=max_queue,
        limits=limits,  # type: ignore[arg-type]
    )
    app = create_app(engine, api_key=api_key, heartbeat_seconds=heartbeat, **app_options)  # type: ignore[arg-type]
    try:
        with serving(app) as root:
            yield Live(root, engine, fakes)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One fast server shared by a module's tests (histories accumulate across them)."""
    with live_server(tmp_path_factory.mktemp("data")) as server:
        yield server


def wait_until(condition: object, what: str, timeout: float = 10.0) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` if it never becomes true."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def make_live(tmp_path: object) -> object:
    """``make_live(delay=..., max_queue=..., ...)``: a context manager serving fresh fakes."""
    return lambda **kwargs: live_server(tmp_path, **kwargs)


@pytest.fixture
def wait() -> object:
    """``wait(condition, what)``: poll until true (a bounded wait, not a timing assertion)."""
    return wait_until


@pytest.fixture(scope="session")
def serve() -> object:
    """``serve(app)``: a context manager running ``app`` on a free local port; yields its root."""
    return serving


@contextlib.contextmanager
def serving_smollm2(data_dir: Any) -> Iterator[str]:
    """The real SmolLM2 (prepared if needed) loaded behind a live server; yields its root."""
    from imagine_edge.models.catalog import prepared
    from imagine_edge.models.llm import SMOLLM2
    from imagine_edge.models.registry import model_cards

    prepared(SMOLLM2, ["cpu"])
    card = next(c for c in model_cards() if c.name == SMOLLM2)
    engine = Engine([card], data_dir=data_dir)
    try:
        engine.load()
        with serving(create_app(engine)) as url:
            yield url
    finally:
        engine.close()
