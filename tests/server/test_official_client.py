"""The official python-imagine-sdk 0.5.0 client, unchanged, against our server (docs/contract.md).

Every call of the contract, sync and async, over a real uvicorn server with the fake models.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import json
import wave

import httpx
import imagine
import pytest
from imagine import ImagineAsyncClient, ImagineClient, ModelType
from imagine.exceptions import ImagineAPIException, ImagineAPITooManyRequestsException

PNG = b"\x89PNG\r\n\x1a\n"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(live):
    return ImagineClient(endpoint=live.endpoint, api_key="any-key")


def test_ping_and_health(client):
    assert client.ping() == imagine.PingResponse(message="pong", status="ok")
    health = client.health_check()
    assert health.postgres == "not used"
    assert health.redis == "not used"
    assert "echo-llm (llm)" in health.models


def test_models_keyed_by_type_with_aliases(client, live):
    by_type = client.get_available_models_by_type()
    assert by_type[ModelType.LLM] == ["echo-llm"]
    assert set(by_type) == set(ModelType)
    assert client.get_available_models(ModelType.RERANKER) == ["overlap-reranker"]
    body = httpx.get(live.endpoint + "/models", params={"model_type": "llm"}).json()
    assert body["llm"] == ["echo-llm"]
    assert body["aliases"]["Llama-3.1-8B"] == "echo-llm"
    assert body["defaults"]["llm"] == "echo-llm"
    assert "solid-image" in body["untrained"]  # the fakes say they are not trained


def test_chat_answers_with_usage(client):
    response = client.chat([{"role": "user", "content": "hello small world"}])
    assert response.first_content == "hello small world"
    assert response.model == "echo-llm"  # the client's default name resolves to it
    assert response.id.startswith("chatcmpl-")
    assert response.choices[0].finish_reason == imagine.FinishReason.stop
    assert response.usage.completion_tokens == 3
    assert response.usage.total_tokens == response.usage.prompt_tokens + 3


def test_chat_stream_equals_non_stream_and_ends_with_usage(client):
    messages = [imagine.ChatMessage(role="user", content="one two three four")]
    chunks = list(client.chat_stream(messages, stream_options={"include_usage": True}))
    assert "".join(c.first_content for c in chunks) == client.chat(messages).first_content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].choices[0].finish_reason == imagine.FinishReason.stop
    assert chunks[-1].usage.completion_tokens == 4
    assert len({c.id for c in chunks}) == 1


def test_chat_stops_at_max_tokens_and_stop_strings(client):
    cut = client.chat([{"role": "user", "content": "a b c d e"}], max_tokens=2, temperature=0.0)
    assert (cut.first_content, cut.choices[0].finish_reason) == ("a b", "length")
    stopped = client.chat([{"role": "user", "content": "a b c d e"}], stop=["c"])
    assert (stopped.first_content, stopped.choices[0].finish_reason) == ("a b c", "stop")


def test_tool_call_shape(client):
    response = client.chat([{"role": "user", "content": "use tool Paris"}], tools=TOOLS)
    choice = response.choices[0]
    assert choice.finish_reason == imagine.FinishReason.tool_calls
    assert choice.message.content == ""
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"text": "Paris"}
    # A tool result turn (content omitted on the assistant turn) is accepted.
    follow_up = client.chat(
        [
            {"role": "user", "content": "weather?"},
            imagine.ChatMessage(role="assistant", content=None, tool_calls=[call]),
            {"role": "tool", "content": "sunny", "tool_call_id": call.id},
            {"role": "user", "content": "thanks"},
        ],
        tools=TOOLS,
    )
    assert follow_up.first_content == "thanks"


def test_streamed_tool_call_finishes_with_tool_calls(client):
    chunks = list(client.chat_stream([{"role": "user", "content": "use tool Oslo"}], tools=TOOLS))
    assert chunks[-1].choices[0].finish_reason == imagine.FinishReason.tool_calls
    assert all(isinstance(c.first_content, str) for c in chunks)


def test_completion_and_stream(client):
    response = client.completion("Once upon a time", max_tokens=3)
    assert response.first_text == "Once upon a"
    assert response.object == "text_completion"
    assert response.generation_time is not None
    chunks = list(client.completion_stream("Once upon a time"))
    assert "".join(c.choices[0].delta.content for c in chunks) == "Once upon a time"
    assert chunks[-1].usage.completion_tokens == 4


def test_translate(client):
    response = client.translate("hello there", model="upper-translator")
    assert response.first_text == "HELLO THERE"
    assert response.object == "translation"
    # The client's default translate name (English to Spanish) is not aliased to a local pair.
    with pytest.raises(ImagineAPIException, match="404"):
        client.translate("hi", model=client.default_model_translate)


def test_embeddings_single_and_batch(client):
    single = client.embeddings("the cat sat")
    batch = client.embeddings(["the cat sat", "a dog ran", "the cat sat"])
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert batch.data[0].embedding == single.first_embedding
    assert batch.data[2].embedding == batch.data[0].embedding
    assert batch.data[1].embedding != batch.data[0].embedding
    assert abs(sum(x * x for x in single.first_embedding) - 1.0) < 1e-5
    assert batch.usage.prompt_tokens == 9


def test_reranker_sorts_and_cuts(client):
    docs = ["dogs bark", "cats purr and dogs bark", "fish swim"]
    everything = client.reranker("cats dogs", docs)
    assert [d.index for d in everything.data] == [1, 0, 2]
    assert all(d.document is None for d in everything.data)
    scores = [d.relevance_score for d in everything.data]
    assert scores == sorted(scores, reverse=True)
    top = client.reranker("cats dogs", docs, top_n=1, return_documents=True)
    assert [(d.index, d.document) for d in top.data] == [(1, docs[1])]


def test_images_b64_url_and_stream(client, live):
    image = client.images_generate("a red square", size="64x64")
    png = base64.b64decode(image.data[0].b64_json)
    assert png.startswith(PNG)
    by_url = client.images_generate("a red square", size="64x64", response_format="url")
    url = by_url.data[0].url
    assert url.startswith(live.endpoint + "/files/")
    fetched = httpx.get(url)  # no key needed, and the bytes are the same image
    assert fetched.status_code == 200
    assert fetched.content == png
    events = list(client.images_generate_stream("x", n=2, size="64x64", response_format="url"))
    assert len(events) == 2
    assert all(e.data[0].url.startswith(live.endpoint) for e in events)
    different = client.images_generate("x", n=2, size="64x64").data
    assert different[0].b64_json != different[1].b64_json  # seed + i * seed_increment


def test_transcribe_path_and_file_object(client, tmp_path):
    path = tmp_path / "speech.wav"
    path.write_bytes(wav_bytes(1.5))
    assert client.transcribe(str(path)).text == "1.50 seconds of wav audio"
    response = client.transcribe(io.BytesIO(b"not really audio"))
    assert response.text == "16 bytes of audio"
    assert response.id.startswith("asr-")
    assert response.ts is not None


def test_usage_aggregates_per_model_and_bin(client):
    client.chat([{"role": "user", "content": "count these four words"}])
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    usage = client.usage(aggregation_duration="1 hour", since=since, model="Llama-3.1-8B")
    assert [r.model for r in usage.overall] == ["echo-llm"]
    assert usage.overall[0].total_output_tokens >= 4
    assert sum(r.total_tokens for r in usage.usage) == usage.overall[0].total_tokens
    assert all(r.date_bin.minute == 0 for r in usage.usage)
    nothing = client.usage(until=dt.datetime(2001, 1, 2))
    assert (nothing.usage, nothing.overall) == ([], [])


def test_histories_newest_first(client):
    client.chat([{"role": "user", "content": "first"}])
    client.chat([{"role": "user", "content": "second"}])
    history = client.get_chat_history(max_items=2)
    assert [pair[0]["choices"][0]["message"]["content"] for pair in history] == [
        "second",
        "first",
    ]
    assert history[0][1]["messages"] == [{"role": "user", "content": "second"}]
    client.embeddings("x")
    client.reranker("x", ["x"])
    client.completion("y")
    for get in (client.get_embedding_history, client.get_reranker_history,
                client.get_completion_history):  # fmt: skip
        assert len(get()) == 1


def test_empty_history_is_404(make_live):
    with make_live() as fresh:
        client = ImagineClient(endpoint=fresh.endpoint, api_key="k")
        with pytest.raises(ImagineAPIException) as info:
            client.get_chat_history()
        assert info.value.http_status == 404
        assert "no chat/completions request has been recorded yet" in str(info.value)


def test_errors_surface_as_the_right_exceptions(client):
    with pytest.raises(ImagineAPIException) as unknown:
        client.chat([{"role": "user", "content": "x"}], model="no-such-model")
    assert unknown.value.http_status == 404
    assert "no-such-model" in str(unknown.value)
    with pytest.raises(ImagineAPIException) as invalid:
        client.chat([{"role": "user", "content": "x"}], top_p=1.5)
    assert invalid.value.http_status == 422
    assert "top_p must be in (0, 1], got 1.5" in str(invalid.value)
    with pytest.raises(ImagineAPIException) as wrong_type:
        client.embeddings("x", model="echo-llm")
    assert wrong_type.value.http_status == 422
    with pytest.raises(ImagineAPIException) as too_long:
        list(client.chat_stream([{"role": "user", "content": "TOO LONG"}]))
    assert too_long.value.http_status == 400


def test_type_without_model_says_so(make_live):
    with make_live(types=[ModelType.LLM]) as llm_only:
        client = ImagineClient(endpoint=llm_only.endpoint, api_key="k")
        assert client.get_available_models_by_type()[ModelType.TEXT_TO_IMAGE] == []
        with pytest.raises(ImagineAPIException) as info:
            client.images_generate("x")
        assert info.value.http_status == 409
        assert "no text_to_image model is available here" in str(info.value)


def test_mid_stream_failure_ends_with_finish_reason_error(client):
    chunks = list(client.chat_stream([{"role": "user", "content": "a b FAIL MIDWAY"}]))
    assert chunks[0].first_content == "a"
    assert chunks[-1].choices[0].finish_reason == imagine.FinishReason.error


def test_full_queue_is_429_with_retry_after(make_live, wait):
    with make_live(delay=0.2, max_queue=1) as busy:
        client = ImagineClient(endpoint=busy.endpoint, api_key="k", max_retries=1)
        stream = client.chat_stream([{"role": "user", "content": "w " * 50}])
        next(iter(stream))  # the only slot is taken
        with pytest.raises(ImagineAPITooManyRequestsException) as info:
            client.chat([{"role": "user", "content": "x"}])
        assert info.value.http_status == 429
        assert int(info.value.headers["retry-after"]) >= 1
        # On a stream the official client cannot read a 429 (docs/contract.md, Errors): 409 instead.
        with pytest.raises(ImagineAPIException) as streamed:
            list(client.chat_stream([{"role": "user", "content": "x"}]))
        assert streamed.value.http_status == 409
        assert "busy" in str(streamed.value)
        stream.close()


def test_async_client(live):
    async def run() -> None:
        client = ImagineAsyncClient(endpoint=live.endpoint, api_key="k")
        try:
            assert (await client.ping()).status == "ok"
            assert (await client.health_check()).redis == "not used"
            assert (await client.get_available_models(ModelType.LLM)) == ["echo-llm"]
            chat = await client.chat([{"role": "user", "content": "async hello"}])
            assert chat.first_content == "async hello"
            chunks = [c async for c in client.chat_stream([{"role": "user", "content": "x y"}])]
            assert [c.first_content for c in chunks] == ["x", " y"]
            assert chunks[-1].usage is not None  # usage without stream_options
            completion = [c async for c in client.completion_stream("p q")]
            assert completion[-1].choices[0].finish_reason == "stop"
            assert (await client.completion("p q r", max_tokens=1)).first_text == "p"
            assert len((await client.embeddings(["a", "b"])).data) == 2
            assert (await client.reranker("a", ["b", "a"])).data[0].index == 1
            assert (await client.translate("x", model="upper-translator")).first_text == "X"
            images = [i async for i in client.images_generate_stream("x", size="64x64", n=2)]
            assert len(images) == 2
            image = await client.images_generate("x", size="64x64")
            assert base64.b64decode(image.data[0].b64_json).startswith(PNG)
            assert (await client.transcribe(io.BytesIO(b"abc"))).text == "3 bytes of audio"
            assert (await client.usage(aggregation_duration="15 minutes")).overall
            assert len(await client.get_chat_history(max_items=1)) == 1
            assert await client.get_embedding_history()
            assert await client.get_reranker_history()
            assert await client.get_completion_history()
            with pytest.raises(ImagineAPIException) as unknown:
                await client.chat([{"role": "user", "content": "x"}], model="nope")
            assert unknown.value.http_status == 404
            with pytest.raises(ImagineAPIException) as invalid:
                [c async for c in client.chat_stream([{"role": "user", "content": "x"}],
                                                     temperature=3)]  # fmt: skip
            assert invalid.value.http_status == 422
        finally:
            await client.close()

    asyncio.run(run())
