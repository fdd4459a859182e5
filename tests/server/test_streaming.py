"""SSE framing on the wire, cancellation on disconnect, the bounded queue, and no output mixing."""

from __future__ import annotations

import json
import threading

import httpx
import imagine
import pytest

from imagine_edge.server.sse import encode

CHAT = {"model": "echo-llm", "stream": True}


def sse_lines(response: httpx.Response) -> list[str]:
    return response.read().decode("ascii").split("\n")


def test_frames_are_ascii_data_lines_ending_with_done(live):
    body = {**CHAT, "messages": [{"role": "user", "content": "caf\u00e9 na\u00efve"}]}
    response = httpx.post(
        live.endpoint + "/chat/completions", json=body, headers={"Accept-Encoding": "gzip"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "content-encoding" not in response.headers  # never compressed
    raw = response.content
    assert raw.isascii()  # JSON is ASCII-escaped
    events = raw.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert "".join(p["choices"][0]["delta"]["content"] for p in payloads) == "caf\u00e9 na\u00efve"
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert payloads[-1]["usage"]["completion_tokens"] == 2
    assert all(p["choices"][0]["finish_reason"] is None for p in payloads[:-1])
    assert all("usage" not in p or p["usage"] is None for p in payloads[:-1])


def test_line_separators_inside_text_cannot_split_an_event():
    frame = encode({"text": "a\u2028b\u2029c\x85d\re\nf"})
    assert frame.isascii()
    assert frame.endswith(b"\n\n")
    assert frame.decode().splitlines() == [frame.decode().removesuffix("\n\n"), ""]
    assert json.loads(frame[6:])["text"] == "a\u2028b\u2029c\x85d\re\nf"


def test_keep_alive_comments_fill_quiet_gaps(make_live):
    with make_live(delay=0.3, heartbeat=0.05) as slow:
        body = {**CHAT, "messages": [{"role": "user", "content": "a b"}]}
        lines = sse_lines(httpx.post(slow.endpoint + "/chat/completions", json=body))
        assert ": keep-alive" in lines
        data = [line for line in lines if line.startswith("data: {")]
        assert len(data) == 2
        # The official client ignores the comments.
        client = imagine.ImagineClient(endpoint=slow.endpoint, api_key="k")
        chunks = list(client.chat_stream([{"role": "user", "content": "a b"}]))
        assert [c.first_content for c in chunks] == ["a", " b"]


def test_mid_stream_error_event_describes_the_failure(live):
    body = {**CHAT, "messages": [{"role": "user", "content": "a b FAIL MIDWAY"}]}
    lines = sse_lines(httpx.post(live.endpoint + "/chat/completions", json=body))
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert data[-1]["choices"][0]["finish_reason"] == "error"
    assert data[-1]["error"]["type"] == "ModelRunError"
    assert "failed on purpose" in data[-1]["error"]["message"]
    assert lines[-3:] == ["data: [DONE]", "", ""]


def test_disconnect_cancels_generation_and_frees_the_slot(make_live, wait):
    with make_live(delay=0.05, max_queue=1) as server:
        llm = server.fakes[imagine.ModelType.LLM]
        body = {**CHAT, "messages": [{"role": "user", "content": "w " * 2000}]}
        with httpx.stream("POST", server.endpoint + "/chat/completions", json=body) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            assert llm.active == 1
            # The slot is taken while the stream runs.
            small = {"model": "echo-llm", "prompt": "x", "stream": False}
            busy = httpx.post(server.endpoint + "/completions", json=small)
            assert busy.status_code == 429
        wait(lambda: llm.active == 0, "the cancelled generation to end")
        wait(lambda: server.engine.model_states()[0].queued == 0, "the slot to be freed")
        done = httpx.post(server.endpoint + "/completions",
                          json={"model": "echo-llm", "prompt": "x y", "stream": False})  # fmt: skip
        assert done.status_code == 200
        assert done.json()["choices"][0]["text"] == "x y"
        history = server.engine.recorder.usage().overall[0]
        assert history.total_output_tokens < 2000  # the long answer was not generated


def test_non_streaming_disconnect_cancels_too(make_live, wait):
    with make_live(delay=0.05, max_queue=1) as server:
        llm = server.fakes[imagine.ModelType.LLM]
        body = {"model": "echo-llm", "stream": False,
                "messages": [{"role": "user", "content": "w " * 2000}]}  # fmt: skip
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.endpoint + "/chat/completions", json=body, timeout=0.5)
        wait(lambda: llm.active == 0, "the abandoned generation to be cancelled")


def test_full_queue_answers_429_with_retry_after(make_live):
    with make_live(delay=0.05, max_queue=2) as server:
        body = {**CHAT, "messages": [{"role": "user", "content": "w " * 500}]}
        url = server.endpoint + "/chat/completions"
        with (
            httpx.stream("POST", url, json=body) as first,
            httpx.stream("POST", url, json=body) as second,
        ):
            lines = first.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)
            assert second.status_code == 200  # waiting in the queue, second of two slots
            full = httpx.post(url, json={**body, "stream": False})
            assert full.status_code == 429
            assert int(full.headers["retry-after"]) >= 1
            assert full.json()["error"] == "ImagineAPITooManyRequestsException"
            streamed = httpx.post(url, json=body)
            assert streamed.status_code == 409
            assert streamed.headers["retry-after"]


def test_concurrent_requests_never_mix_outputs(make_live):
    with make_live(delay=0.002) as server:
        client = imagine.ImagineClient(endpoint=server.endpoint, api_key="k")
        results: dict[int, str] = {}

        def ask(i: int) -> None:
            words = " ".join(f"r{i}w{j}" for j in range(8))
            if i % 2:
                chunks = client.chat_stream([{"role": "user", "content": words}])
                results[i] = "".join(c.first_content for c in chunks)
            else:
                results[i] = client.chat([{"role": "user", "content": words}]).first_content

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: " ".join(f"r{i}w{j}" for j in range(8)) for i in range(8)}
