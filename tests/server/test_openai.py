"""The ``openai`` client against the /v1 routes."""

from __future__ import annotations

import json

import httpx
import numpy as np
import openai
import pytest

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def oai(live):
    return openai.OpenAI(base_url=live.root + "/v1", api_key="unused", max_retries=0)


def test_chat(oai):
    response = oai.chat.completions.create(
        model="echo-llm", messages=[{"role": "user", "content": "hello from openai"}]
    )
    assert response.choices[0].message.content == "hello from openai"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.completion_tokens == 3
    assert isinstance(response.created, int)


def test_chat_streams_with_usage(oai):
    stream = oai.chat.completions.create(
        model="Llama-3.1-8B",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "a b c"}],
        stream=True,
        stream_options={"include_usage": True},
        max_completion_tokens=2,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a b"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 2


def test_tool_calls_plain_and_streamed(oai):
    messages = [{"role": "user", "content": "use tool Rome"}]
    response = oai.chat.completions.create(model="echo-llm", messages=messages, tools=TOOLS)
    message = response.choices[0].message
    assert response.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert json.loads(message.tool_calls[0].function.arguments) == {"text": "Rome"}
    chunks = list(
        oai.chat.completions.create(model="echo-llm", messages=messages, tools=TOOLS, stream=True)
    )
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    # As OpenAI streams a call: its id, type and name first, then the arguments.
    assert [(c.index, c.function.name) for c in calls] == [(0, "lookup"), (0, None)]
    assert calls[0].id
    assert calls[0].type == "function"
    assert calls[0].function.arguments == ""
    assert json.loads("".join(c.function.arguments for c in calls)) == {"text": "Rome"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    none = oai.chat.completions.create(
        model="echo-llm", messages=messages, tools=TOOLS, tool_choice="none"
    )
    assert none.choices[0].message.content == "use tool Rome"


def test_completions(oai):
    response = oai.completions.create(model="echo-llm", prompt="x y z", max_tokens=2)
    assert response.choices[0].text == "x y"
    chunks = list(oai.completions.create(model="echo-llm", prompt="x y z", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == "x y z"


def test_embeddings_base64_and_float(oai, live):
    encoded = oai.embeddings.create(model="hash-embedder", input=["one", "two"])
    floats = oai.embeddings.create(
        model="hash-embedder", input=["one", "two"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1]
    np.testing.assert_allclose(encoded.data[1].embedding, floats.data[1].embedding, rtol=1e-6)
    imagine = httpx.post(live.endpoint + "/embeddings",
                         json={"model": "hash-embedder", "input": "two"}).json()  # fmt: skip
    np.testing.assert_allclose(floats.data[1].embedding, imagine["data"][0]["embedding"])


def test_models_and_errors(oai):
    names = [m.id for m in oai.models.list()]
    assert "echo-llm" in names
    assert oai.models.retrieve("Llama-3.1-8B").id == "echo-llm"
    with pytest.raises(openai.NotFoundError) as missing:
        oai.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert "gpt-9" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        oai.chat.completions.create(
            model="echo-llm", messages=[{"role": "user", "content": "x"}], n=5
        )
    assert "n must be in [1, 4]" in bad.value.message


def test_n_choices_seeds_and_usage(oai):
    messages = [{"role": "user", "content": "one two three"}]
    response = oai.chat.completions.create(model="echo-llm", messages=messages, n=3, seed=9)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert all(c.message.content == "one two three" for c in response.choices)
    assert response.usage.completion_tokens == 9  # three choices of three tokens
    assert (
        response.usage.prompt_tokens
        == oai.chat.completions.create(model="echo-llm", messages=messages).usage.prompt_tokens
    )  # the prompt counted once
    assert response.usage.model_extra["seed"] == 9
    fresh = oai.completions.create(model="echo-llm", prompt="a b", n=2)
    assert len(fresh.choices) == 2
    assert isinstance(fresh.usage.model_extra["seed"], int)
    with pytest.raises(openai.BadRequestError, match="not supported with stream"):
        oai.chat.completions.create(model="echo-llm", messages=messages, n=2, stream=True)


def test_bad_tool_choice_and_format_are_refused_before_queuing(oai):
    messages = [{"role": "user", "content": "x"}]
    for case in [
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "other"}}},
        {"tool_choice": "required"},
    ]:
        with pytest.raises(openai.BadRequestError):
            oai.chat.completions.create(model="echo-llm", messages=messages, **case)
    for case in [  # not of the documented shape: the body's validation answers
        {"tools": TOOLS, "tool_choice": "sometimes"},
        {"response_format": {"type": "yaml"}},
    ]:
        with pytest.raises(openai.UnprocessableEntityError):
            oai.chat.completions.create(model="echo-llm", messages=messages, **case)


def test_the_imagine_route_reports_the_seed_and_refuses_streamed_logprobs(live):
    body = {"model": "echo-llm", "messages": [{"role": "user", "content": "a b"}], "stream": False}
    seeded = httpx.post(live.endpoint + "/chat/completions", json={**body, "seed": 3}).json()
    assert seeded["usage"]["seed"] == 3
    fresh = httpx.post(live.endpoint + "/chat/completions", json=body).json()
    assert isinstance(fresh["usage"]["seed"], int)
    refused = httpx.post(
        live.endpoint + "/chat/completions", json={**body, "stream": True, "logprobs": True}
    )
    assert refused.status_code == 422
    assert "logprobs are not supported with stream" in refused.text
