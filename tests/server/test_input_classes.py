"""Reproducers of the abuse run's input classes, on both route families: each is a clear 4xx."""

from __future__ import annotations

import struct
import threading

import httpx
import pytest

LONE = '"a\\ud800b"'  # JSON text: the escape decodes to a lone surrogate

IMAGINE_BODIES = {
    "embeddings": '{"model":"hash-embedder","input":%s}',
    "reranker": '{"model":"overlap-reranker","query":%s,"documents":["d"]}',
    "translate": '{"model":"upper-translator","prompt":%s,"stream":false}',
    "completions": '{"model":"echo-llm","prompt":%s,"stream":false}',
    "chat/completions": '{"model":"echo-llm","stream":false,"messages":[{"role":"user",'
    '"content":%s}]}',
    "images/generations": '{"model":"solid-image","prompt":%s,"stream":false,"size":"64x64"}',
}
OPENAI_BODIES = {
    "embeddings": '{"model":"hash-embedder","input":[%s]}',
    "completions": '{"model":"echo-llm","prompt":%s}',
    "chat/completions": '{"model":"echo-llm","messages":[{"role":"user","content":%s}]}',
}
TOOLS = (
    '{"model":"echo-llm","stream":false,"messages":[{"role":"user","content":"use tool"}],'
    '"tools":[{"type":"function","function":{"name":%s}}]}'
)


def _post(url: str, body: str) -> httpx.Response:
    return httpx.post(url, content=body.encode(), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("path", sorted(IMAGINE_BODIES))
def test_lone_surrogate_on_the_imagine_routes(live, path):
    response = _post(f"{live.endpoint}/{path}", IMAGINE_BODIES[path] % LONE)
    assert response.status_code == 422, response.text
    assert "lone UTF-16 surrogate" in response.json()["detail"]


@pytest.mark.parametrize("path", sorted(OPENAI_BODIES))
def test_lone_surrogate_on_the_openai_routes(live, path):
    response = _post(f"{live.root}/v1/{path}", OPENAI_BODIES[path] % LONE)
    assert response.status_code == 422, response.text
    assert "lone UTF-16 surrogate" in response.json()["error"]["message"]


def test_lone_surrogate_in_a_tool_name(live):
    response = _post(f"{live.endpoint}/chat/completions", TOOLS % LONE)
    assert response.status_code == 422, response.text
    assert "tools.0.function.name contains a lone UTF-16 surrogate" in response.text


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("top_k", 2**63, "top_k must be an integer in [-1, 2147483647] (-1 or 0 = off)"),
        ("max_tokens", 2**64 + 1, "max_tokens must be in [1, 2147483647]"),
        ("repetition_penalty", 1e-300, "repetition_penalty must be in [0.001, 1000]"),
        ("temperature", float("nan"), "temperature must be a finite number"),
    ],
)
def test_huge_and_tiny_numbers_on_both_families(live, field, value, expected):
    number = "NaN" if value != value else repr(value)  # JSON as Python's json reads it
    extra = f',"{field}":{number}}}'
    imagine = _post(
        f"{live.endpoint}/completions", '{"model":"echo-llm","prompt":"hi","stream":false' + extra
    )
    openai = _post(f"{live.root}/v1/completions", '{"model":"echo-llm","prompt":"hi"' + extra)
    assert imagine.status_code == 422, imagine.text
    assert expected in imagine.json()["detail"]
    assert openai.status_code == 422, openai.text
    assert expected in openai.json()["error"]["message"]


def test_seed_beyond_64_bits_on_v1(live):
    response = httpx.post(f"{live.root}/v1/completions",
                          json={"model": "echo-llm", "prompt": "hi", "seed": 2**80})  # fmt: skip
    assert response.status_code == 422
    assert "seed must be in" in response.json()["error"]["message"]


def test_truncated_wav_header_is_a_422(live):
    header = (
        b"RIFF" + struct.pack("<I", 1000) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + b"\x01\x00"
    )
    assert len(header) == 22
    for audio in (header, header + b"\x00" * 8):
        response = httpx.post(live.endpoint + "/transcribe", files={"file": ("a.wav", audio)},
                              data={"model": "byte-transcriber"})  # fmt: skip
        assert response.status_code == 422, response.text
        assert "WAV file is truncated" in response.json()["detail"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"aggregation_duration": "99999999999999999999 weeks"},
         "aggregation_duration must be at most 9999 weeks"),
        ({"from": "0001-01-01"}, "from must be a date and time between 1970 and 9999"),
        ({"to": "0001-01-01 00:00:00"}, "to must be a date and time between 1970 and 9999"),
        ({"from": "not a date"}, "from must be a date and time"),
    ],
)  # fmt: skip
def test_odd_usage_queries_are_422(live, params, expected):
    response = httpx.get(live.endpoint + "/usage", params=params)
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]


def test_a_huge_prompt_is_refused_and_ping_keeps_answering(live):
    big = {"model": "echo-llm", "stream": False,
           "messages": [{"role": "user", "content": "word " * 2_000_000}]}  # fmt: skip
    answers: list[int] = []

    def send() -> None:
        answers.append(httpx.post(live.endpoint + "/chat/completions", json=big,
                                  timeout=60).status_code)  # fmt: skip

    sender = threading.Thread(target=send)
    sender.start()
    pings = [httpx.get(live.endpoint + "/ping", timeout=60).status_code for _ in range(5)]
    sender.join(timeout=60)
    assert answers == [413]
    assert pings == [200] * 5
