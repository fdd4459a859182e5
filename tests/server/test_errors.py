"""The error boundary: 413 for too much text, sanitized texts, Connection: close on a 5xx,
an unexpected exception answered as JSON, and the full Allow header on a 405."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.testing import fake_cards
from imagine_edge.sdk.types import ModelType
from imagine_edge.server.app import create_app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    engine = Engine(fake_cards(), data_dir=tmp_path_factory.mktemp("errors"))
    app = create_app(engine)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("broken at <_io.BytesIO object at 0x7f00deadbeef> in /srv/secret/x.py")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    engine.close()


def test_too_much_text_is_a_413_on_both_route_families(client):
    text = "x " * 600_000
    imagine = client.post(
        "/api/v2/completions", json={"model": "echo-llm", "prompt": text, "stream": False}
    )
    openai = client.post("/v1/completions", json={"model": "echo-llm", "prompt": text})
    assert imagine.status_code == 413, imagine.text
    assert "over the limit of 1000000 characters" in imagine.json()["detail"]
    assert openai.status_code == 413, openai.text
    assert "over the limit of 1000000 characters" in openai.json()["error"]["message"]


def test_an_unexpected_exception_is_a_clean_sanitized_500(client):
    response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["connection"] == "close"
    detail = response.json()["detail"]
    assert detail.startswith("internal error: RuntimeError: broken at <_io.BytesIO object>")
    assert "0x7f00" not in detail
    assert "/srv/secret" not in detail
    assert client.get("/api/v2/ping").status_code == 200


def test_a_model_failure_is_sanitized_and_closes_the_connection(make_live):
    with make_live() as server:
        embedder = server.fakes[ModelType.EMBEDDING]

        def fail(texts):
            raise MemoryError(
                "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : /onnxruntime_src/"
                "core/framework/bfc_arena.cc:376 Failed to allocate 131072000000"
            )

        embedder.embed = fail  # type: ignore[method-assign]
        url = urlsplit(server.root)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        body = json.dumps({"model": "hash-embedder", "input": "x"})
        conn.request("POST", "/api/v2/embeddings", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        detail = json.loads(response.read())["detail"]
        assert response.status == 500
        # The server ends a keep-alive connection after a 5xx, and says so.
        assert response.getheader("Connection") == "close"
        assert "ran out of memory" in detail
        assert "bfc_arena" not in detail
        assert "onnxruntime" not in detail
        conn.close()
        assert httpx.get(server.endpoint + "/ping").status_code == 200


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/v2/chat/completions", {"GET", "POST"}),
        ("/api/v2/translate", {"POST"}),
        ("/api/v2/ping", {"GET"}),
    ],
)
def test_405_lists_every_method_of_the_path(client, path, methods):
    response = client.request("OPTIONS", path)
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == methods
