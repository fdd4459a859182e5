"""The abuse suite: generated bad input on every endpoint of both route families.

Bounded (a fixed number of derandomized examples per endpoint) and loopback only (a uvicorn
server on 127.0.0.1 over the fake models). Each example takes a valid request and replaces one
field, or adds one, with a hostile value: text with lone surrogates and control characters,
huge and negative integers, NaN and infinities (as the JSON literals Python reads), wrong types
and oversized lists. The answer must not be a 5xx, and the server must still answer afterwards.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = 40

texts = st.one_of(
    st.text(
        st.characters(codec=None, categories=None, exclude_categories=()), max_size=40
    ),  # any code point, lone surrogates and controls included
    st.text(st.sampled_from(["\ud800", "\udfff", "\x00", "\x1b", "\u2028", "\ufeff", "a"]),
            max_size=20),
)  # fmt: skip
numbers = st.one_of(
    st.integers(min_value=-(2**130), max_value=2**130),
    st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e-300, 5e-324, 1e308]),
)
DEEP: list[object] = []
for _ in range(900):
    DEEP = [DEEP]
wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.just({}),
    st.just([]),
    st.just({"a": [1, {"b": None}]}),
    st.just({"deep": DEEP}),  # nesting that pydantic could not serialize again
)
big_lists = st.sampled_from([["x"] * 5_000, [1] * 5_000, [[1]] * 2_000, [{}] * 1_000])
hostile = st.one_of(texts, numbers, wrong_types, big_lists, st.lists(texts, max_size=5))

CHAT = [{"role": "user", "content": "hi"}]
IMAGINE_POSTS: dict[str, dict[str, Any]] = {
    "embeddings": {"model": "hash-embedder", "input": ["a", "b"]},
    "reranker": {"model": "overlap-reranker", "query": "q", "documents": ["a", "b"], "top_n": 1},
    "translate": {"model": "upper-translator", "prompt": "hi", "stream": False},
    "completions": {"model": "echo-llm", "prompt": "hi", "stream": False, "max_tokens": 4,
                    "top_k": 5, "temperature": 0.5, "stop": ["x"], "stop_token_ids": [[1]]},
    "chat/completions": {"model": "echo-llm", "messages": CHAT, "stream": False,
                         "top_p": 0.9, "repetition_penalty": 1.1,
                         "tools": [{"type": "function", "function": {"name": "f"}}]},
    "images/generations": {"model": "solid-image", "prompt": "p", "stream": False,
                           "size": "64x64", "n": 1, "seed": 1, "guidance_scale": 2.0,
                           "num_inference_steps": 2, "response_format": "url"},
}  # fmt: skip
OPENAI_POSTS: dict[str, dict[str, Any]] = {
    "chat/completions": {"model": "echo-llm", "messages": CHAT, "max_tokens": 4, "n": 1,
                         "stop": "x", "seed": 3, "stream_options": {"include_usage": True}},
    "completions": {"model": "echo-llm", "prompt": "hi", "top_k": 2, "logprobs": 0},
    "embeddings": {"model": "hash-embedder", "input": "a", "encoding_format": "float"},
}  # fmt: skip
GETS: dict[str, list[str]] = {
    "/api/v2/usage": ["aggregation_duration", "from", "to", "model"],
    "/api/v2/models": ["model_type"],
    "/api/v2/chat/completions": ["max_items"],
    "/api/v2/embeddings": ["max_items"],
    "/api/v2/ping": ["x"],
    "/api/v2/health": ["x"],
    "/v1/models": ["x"],
}


def _mutated(base: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    body = json.loads(json.dumps(base))
    field = data.draw(st.sampled_from([*base, "stream", "extra"]), label="field")
    body[field] = data.draw(hostile, label="value")
    if data.draw(st.booleans(), label="nested") and "messages" in body:
        body["messages"] = [{"role": data.draw(texts), "content": data.draw(hostile)}]
    return body


def _send(client: httpx.Client, url: str, body: dict[str, Any]) -> httpx.Response:
    # Python's json writes NaN/Infinity literals and escapes lone surrogates as \\ud800.
    raw = json.dumps(body, allow_nan=True)
    return client.post(url, content=raw, headers={"Content-Type": "application/json"})


def _quoted(text: str) -> str:
    """Every byte percent-encoded; a lone surrogate becomes the (invalid UTF-8) bytes a raw
    client would send."""
    return "".join(f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass"))


def _check(response: httpx.Response, client: httpx.Client, root: str) -> None:
    assert response.status_code < 500, f"{response.request.url}: {response.text[:500]}"
    assert client.get(root + "/api/v2/ping").status_code == 200


_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))  # fmt: skip


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=60) as c:
        yield c


@pytest.mark.parametrize("path", sorted(IMAGINE_POSTS))
def test_imagine_posts(live, client, path):
    @_SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        body = _mutated(IMAGINE_POSTS[path], data)
        _check(_send(client, f"{live.endpoint}/{path}", body), client, live.root)

    run()


@pytest.mark.parametrize("path", sorted(OPENAI_POSTS))
def test_openai_posts(live, client, path):
    @_SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        body = _mutated(OPENAI_POSTS[path], data)
        _check(_send(client, f"{live.root}/v1/{path}", body), client, live.root)

    run()


def test_streaming_posts(live, client):
    @_SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(["completions", "chat/completions"]))
        body = _mutated(IMAGINE_POSTS[path], data) | {"stream": True}
        _check(_send(client, f"{live.endpoint}/{path}", body), client, live.root)
        body = _mutated(OPENAI_POSTS[path], data) | {"stream": True}
        _check(_send(client, f"{live.root}/v1/{path}", body), client, live.root)

    run()


@pytest.mark.parametrize("path", sorted(GETS))
def test_queries(live, client, path):
    @_SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(GETS[path]))
        value = data.draw(st.one_of(texts, numbers.map(str)))
        url = f"{live.root}{path}?{name}={_quoted(value)}"
        _check(client.get(url), client, live.root)

    run()


def test_model_ids_on_v1(live, client):
    @_SETTINGS
    @given(model_id=texts.filter(lambda t: t.strip("/")))
    def run(model_id: str) -> None:
        quoted = model_id.encode("utf-8", "surrogatepass").hex()
        url = (
            live.root
            + "/v1/models/"
            + "".join(f"%{quoted[i : i + 2]}" for i in range(0, len(quoted), 2))
        )
        _check(client.get(url), client, live.root)

    run()


def test_transcribe_uploads(live, client):
    riff = st.binary(max_size=64).map(lambda b: b"RIFF" + b[:4] + b"WAVE" + b[4:])

    @_SETTINGS
    @given(audio=st.one_of(st.binary(max_size=64), riff), model=texts)
    def run(audio: bytes, model: str) -> None:
        # Form fields travel as bytes: a surrogate arrives as invalid UTF-8.
        form = {"model": model.encode("utf-8", "surrogatepass")}
        response = client.post(
            live.endpoint + "/transcribe", files={"file": ("a", audio)}, data=form
        )
        _check(response, client, live.root)

    run()
