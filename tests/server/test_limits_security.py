"""Limits (413/422), the API key, the image file route and the serve command's safety checks."""

from __future__ import annotations

import httpx
import imagine
import pytest

from imagine_edge.sdk.limits import Limits
from imagine_edge.server.cli import is_loopback, serve_command

SMALL = Limits(
    max_body_bytes=4096,
    max_messages=3,
    max_rerank_documents=2,
    max_embedding_inputs=2,
    max_audio_bytes=1000,
    max_images=2,
    max_image_side=128,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from imagine_edge.sdk.engine import Engine
    from imagine_edge.sdk.testing import fake_cards
    from imagine_edge.server.app import create_app

    engine = Engine(fake_cards(), data_dir=tmp_path_factory.mktemp("small"), limits=SMALL)
    from fastapi.testclient import TestClient

    with TestClient(create_app(engine)) as client:
        yield client
    engine.close()


def post(client, path, body):
    return client.post("/api/v2/" + path, json=body)


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("chat/completions", {"model": "echo-llm", "stream": False,
         "messages": [{"role": "user", "content": "x"}] * 4}, 413, "too many messages: 4"),
        ("reranker", {"model": "overlap-reranker", "query": "q", "documents": ["a", "b", "c"]},
         413, "too many documents: 3, the limit is 2"),
        ("embeddings", {"model": "hash-embedder", "input": ["a", "b", "c"]}, 413,
         "too many input texts: 3"),
        ("embeddings", {"model": "hash-embedder", "input": []}, 422, "non-empty list"),
        ("images/generations", {"model": "solid-image", "prompt": "p", "stream": False,
         "size": "256x256"}, 422, "multiple of 8 in [64, 128], got '256x256'"),
        ("images/generations", {"model": "solid-image", "prompt": "p", "stream": False,
         "size": "big"}, 422, "size must look like '512x512'"),
        ("images/generations", {"model": "solid-image", "prompt": "p", "stream": False,
         "n": 3, "size": "64x64"}, 422, "n must be in [1, 2], got 3"),
        ("images/generations", {"model": "solid-image", "prompt": "p", "stream": True,
         "n": 3, "size": "64x64"}, 422, "n must be in [1, 2], got 3"),
        ("chat/completions", {"model": "echo-llm", "stream": False, "messages": []}, 422,
         "at least one message"),
        ("chat/completions", {"model": "echo-llm", "stream": False, "messages": "hi"}, 422,
         "messages"),
        ("completions", {"model": "echo-llm", "stream": False, "prompt": "x", "max_tokens": 0},
         422, "max_tokens must be in [1, 2147483647], got 0"),
        ("translate", {"model": "upper-translator", "stream": True, "prompt": "x"}, 422,
         "translate does not stream"),
    ],
)  # fmt: skip
def test_limits_and_bad_values(small, path, body, status, message):
    response = post(small, path, body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_body_and_audio_size(small):
    big = post(small, "embeddings", {"model": "hash-embedder", "input": "x" * 5000})
    assert big.status_code == 413
    assert "exceeds the limit of 4096 bytes" in big.json()["detail"]
    audio = small.post("/api/v2/transcribe", files={"file": ("a.wav", b"0" * 2000)},
                       data={"model": "whisper-tiny"})  # fmt: skip
    assert audio.status_code == 413
    assert "audio file is 2000 bytes, the limit is 1000" in audio.json()["detail"]


def test_malformed_json_and_get_bodies(small):
    broken = small.post("/api/v2/chat/completions", content=b"{not json",
                        headers={"Content-Type": "application/json"})  # fmt: skip
    assert broken.status_code == 422
    # The official client sends '{}' with every GET.
    ping = small.request("GET", "/api/v2/ping", content=b"{}",
                         headers={"Content-Type": "application/json"})  # fmt: skip
    assert ping.json() == {"message": "pong", "status": "ok"}
    assert (
        small.get("/api/v2/usage", params={"aggregation_duration": "1 fortnight"}).status_code
        == 422
    )
    assert small.get("/api/v2/usage", params={"from": "yesterday"}).status_code == 422
    assert small.get("/api/v2/chat/completions", params={"max_items": 0}).status_code == 422
    assert small.get("/api/v2/chat/completions", params={"max_items": 10**6}).status_code == 422
    assert small.get("/api/v2/models", params={"model_type": "llama"}).status_code == 422


def test_api_key(make_live):
    with make_live(api_key="s3cret") as server:
        url = server.endpoint + "/ping"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        client = imagine.ImagineClient(endpoint=server.endpoint, api_key="s3cret")
        image = client.images_generate("x", size="64x64", response_format="url")
        assert httpx.get(image.data[0].url).status_code == 200  # files need no key
        wrong = imagine.ImagineClient(endpoint=server.endpoint, api_key="guess")
        with pytest.raises(imagine.exceptions.ImagineAPIException) as info:
            wrong.ping()
        assert info.value.http_status == 401
        assert "s3cret" not in str(info.value)
        v1 = httpx.get(server.root + "/v1/models")
        assert v1.status_code == 401
        assert v1.json()["error"]["type"] == "authentication_error"


def test_without_a_key_any_bearer_is_accepted(live):
    for headers in ({}, {"Authorization": "Bearer whatever"}):
        assert httpx.get(live.endpoint + "/ping", headers=headers).status_code == 200


def test_image_files_resolve_on_any_prefix_and_only_for_real_files(live):
    client = imagine.ImagineClient(endpoint=live.endpoint + "/", api_key="k")
    url = client.images_generate("x", size="64x64", response_format="url").data[0].url
    # With a trailing slash the client builds '.../api/v2/v2/files/<id>.png' (CONTRACT §2.10).
    assert "/api/v2/v2/files/" in url
    assert httpx.get(url).status_code == 200
    assert httpx.get(live.root + "/api/v2/files/img-missing-0.png").status_code == 404
    assert httpx.get(live.root + "/api/v2/files/..%2Fusage.sqlite3").status_code == 404


def test_serve_refuses_an_open_interface_without_a_key(monkeypatch, capsys):
    monkeypatch.delenv("IMAGINE_EDGE_API_KEY", raising=False)
    assert serve_command(["--host", "0.0.0.0"]) == 2
    assert "without an API key" in capsys.readouterr().err
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("192.168.1.10")
