"""One JSON log line per HTTP request, joined with the model's report; usage timings."""

from __future__ import annotations

import json
import logging

import httpx
import imagine
import pytest

from imagine_edge.server.request_log import REQUEST_LOGGER

MESSAGES = [{"role": "user", "content": "one two three four"}]


def lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == REQUEST_LOGGER]


def test_one_line_per_request_with_tokens_and_timings(make_live, caplog, wait):
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    with make_live() as live:
        client = imagine.ImagineClient(endpoint=live.endpoint, api_key="k")
        answer = client.chat(MESSAGES, model="echo-llm")
        wait(lambda: len(lines(caplog)) == 1, "the chat's line")
        httpx.post(live.endpoint + "/chat/completions", json={"model": "echo-llm"})
        wait(lambda: len(lines(caplog)) == 2, "the refused request's line")
    chat, refused = lines(caplog)
    assert chat["request_id"] == answer.id
    assert chat["endpoint"] == "/api/v2/chat/completions"
    assert (chat["method"], chat["status"], chat["outcome"]) == ("POST", 200, "ok")
    assert chat["model"] == "echo-llm"
    assert (chat["prompt_tokens"], chat["completion_tokens"]) == (4, 4)
    for key in ("queue_ms", "load_ms", "prefill_ms", "decode_ms", "duration_ms"):
        assert chat[key] >= 0, key
    assert chat["tokens_per_s"] > 0
    # Refused before the engine: no model, no request id, the status and the route.
    assert refused["status"] == 422
    assert "request_id" not in refused
    assert refused["endpoint"] == "/api/v2/chat/completions"


def test_a_dropped_stream_logs_once_when_the_model_lets_go(make_live, caplog, wait):
    caplog.set_level(logging.INFO, logger=REQUEST_LOGGER)
    body = {
        "model": "echo-llm",
        "stream": True,
        "messages": [{"role": "user", "content": " ".join(["w"] * 400)}],
    }
    with make_live(delay=0.02) as live:
        with httpx.stream("POST", live.endpoint + "/chat/completions", json=body) as response:
            assert response.status_code == 200
            next(response.iter_lines())  # the first event; then hang up
        wait(lambda: len(lines(caplog)) == 1, "the dropped stream's line")
    (line,) = lines(caplog)
    assert line["status"] == 200
    assert line["outcome"] == "cancelled"
    assert line["completion_tokens"] < 400  # (the fake reports counts on its last chunk only)


def test_imagine_usage_carries_timings_the_official_client_ignores(make_live):
    with make_live() as live:
        raw = httpx.post(
            live.endpoint + "/chat/completions",
            json={"model": "echo-llm", "messages": MESSAGES, "stream": False},
        ).json()
        client = imagine.ImagineClient(endpoint=live.endpoint, api_key="k")
        parsed = client.chat(MESSAGES, model="echo-llm")
        events = list(client.chat_stream(MESSAGES, model="echo-llm"))
        embedded = httpx.post(
            live.endpoint + "/embeddings", json={"model": "hash-embedder", "input": ["a b c"]}
        ).json()
    timings = raw["usage"]["timings"]
    assert timings["decode_ms"] > 0
    assert timings["queue_ms"] >= 0
    assert timings["tokens_per_s"] == pytest.approx(4 / (timings["decode_ms"] / 1e3), rel=0.01)
    # The client's DTOs keep their own fields and parse as before.
    assert parsed.usage.completion_tokens == 4
    assert events[-1].usage is not None
    assert events[-1].usage.completion_tokens == 4
    assert embedded["usage"]["timings"]["prefill_ms"] >= 0
    assert embedded["usage"]["timings"]["tokens_per_s"] is None
