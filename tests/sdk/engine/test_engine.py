"""The engine in process: names, responses built from chunks, queue, cancellation, lifecycle."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from imagine_edge.models.base import ModelCard
from imagine_edge.sdk.engine import CLIENT_DEFAULT_NAMES, Engine
from imagine_edge.sdk.errors import (
    ImagineAPITooManyRequestsException,
    InvalidRequestError,
    ModelNotFoundError,
    ModelRunError,
    ModelUnavailableError,
)
from imagine_edge.sdk.paths import Endpoint
from imagine_edge.sdk.testing import fake_cards, fake_models
from imagine_edge.sdk.types import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ImageRequest,
    ModelType,
    ReRankerRequest,
)


def chat(text: str, stream: bool = False, **params) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        messages=[{"role": "user", "content": text}], model="echo-llm", stream=stream, **params
    )


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def fakes():
    return fake_models(delay=0.0)


@pytest.fixture
def engine(fakes, tmp_path):
    with Engine(fake_cards(fakes), data_dir=tmp_path, max_queue=2) as engine:
        yield engine


def test_names_aliases_and_defaults(engine):
    for model_type, alias in CLIENT_DEFAULT_NAMES.items():
        if model_type is ModelType.TRANSLATE:
            # A language pair is never guessed: the client's en->es default is not an alias.
            with pytest.raises(ModelNotFoundError, match="opus-mt-en-es"):
                engine.index.resolve(alias, model_type)
            continue
        assert engine.index.resolve(alias, model_type) is engine.index.default_card(model_type)
    assert engine.index.resolve("ECHO-LLM", ModelType.LLM).name == "echo-llm"
    assert engine.index.aliases()["Llama-3.1-8B"] == "echo-llm"
    assert "Helsinki-NLP/opus-mt-en-es" not in engine.index.aliases()
    with pytest.raises(ModelNotFoundError, match="unknown llm model 'gpt'; available: echo-llm"):
        engine.index.resolve("gpt", ModelType.LLM)
    with pytest.raises(InvalidRequestError, match="'hash-embedder' is of type 'embedding'"):
        engine.index.resolve("hash-embedder", ModelType.LLM)


def test_a_type_without_models(tmp_path):
    with Engine(fake_cards(types=[ModelType.LLM]), data_dir=tmp_path) as llm_only:
        models = llm_only.index.models()
        assert set(models) == set(ModelType)
        assert models[ModelType.RERANKER] == []
        with pytest.raises(ModelUnavailableError, match="no reranker model is available here"):
            llm_only.index.resolve("BAAI/bge-reranker-base", ModelType.RERANKER)
        assert llm_only.index.models(ModelType.LLM) == {ModelType.LLM: ["echo-llm"]}


def test_card_names_must_be_unique(tmp_path):
    cards = fake_cards(types=[ModelType.LLM])
    with pytest.raises(ValueError, match="unique"):
        Engine(cards + cards, data_dir=tmp_path)


def test_stream_and_result_come_from_the_same_chunks(engine):
    call = engine.chat(chat("one two three", stream=True))
    events = list(call.events())
    final = call.consumed_result()
    assert "".join(e.first_content for e in events) == final.first_content == "one two three"
    assert {e.id for e in events} == {final.id}
    assert final.id.startswith("chatcmpl-")
    assert isinstance(final.created, float)
    assert events[-1].usage == final.usage
    assert events[-1].choices[0].finish_reason == final.choices[0].finish_reason == "stop"
    plain = engine.chat(chat("one two three")).result()
    assert plain.first_content == final.first_content


def test_tool_calls_have_empty_content_and_finish_reason(engine):
    tools = [{"type": "function", "function": {"name": "f"}}]
    response = engine.chat(chat("use tool now", tools=tools)).result()
    message = response.choices[0].message
    assert (message.content, response.choices[0].finish_reason) == ("", "tool_calls")
    assert message.tool_calls[0].id.startswith("call_")
    assert message.tool_calls[0].function.arguments == '{"text": "now"}'


def test_embeddings_rerank_and_images(engine):
    embedded = engine.embeddings(
        EmbeddingRequest(input=["b", "a", "b"], model="hash-embedder")
    ).result()
    assert [d.index for d in embedded.data] == [0, 1, 2]
    assert embedded.data[0].embedding == embedded.data[2].embedding
    ranked = engine.rerank(
        ReRankerRequest(
            query="red car",
            documents=["car", "red car", "boat", "red"],
            top_n=3,
            model="overlap-reranker",
            return_documents=True,
        )
    ).result()
    assert [d.index for d in ranked.data] == [1, 0, 3]  # ties keep input order
    assert ranked.data[0].document == "red car"
    images = engine.images(
        ImageRequest(prompt="p", model="sdxl-turbo", stream=True, n=2, size="64x72")
    )
    events = list(images.events())
    assert len(events) == 2
    assert [len(e.data) for e in events] == [1, 1]
    assert len(images.consumed_result().data) == 2


def test_breaking_out_of_a_stream_cancels_generation(tmp_path):
    fakes = fake_models(delay=0.02)
    with Engine(fake_cards(fakes), data_dir=tmp_path, max_queue=1) as engine:
        call = engine.chat(chat("w " * 1000, stream=True))
        for _ in call.events():
            break
        assert call.cancelled
        # The slot is free at once, even before the generation noticed.
        follow = engine.completion(CompletionRequest(prompt="x y", model="echo-llm", stream=False))
        assert follow.result().first_text == "x y"
        wait_for(lambda: fakes[ModelType.LLM].active == 0, "the generation to stop")
        statuses = engine.recorder._db.execute("SELECT status FROM requests").fetchall()
        assert sorted(s for (s,) in statuses) == ["cancelled", "ok"]


def test_full_queue_raises_429_with_retry_after(tmp_path):
    with Engine(fake_cards(fake_models(delay=0.02)), data_dir=tmp_path, max_queue=1) as engine:
        running = engine.chat(chat("w " * 500, stream=True))
        events = running.events()  # kept: dropping the iterator would cancel the call
        next(events)
        with pytest.raises(ImagineAPITooManyRequestsException, match="busy") as info:
            engine.chat(chat("x"))
        assert info.value.http_status == 429
        assert int(info.value.headers["Retry-After"]) >= 1
        running.cancel()


def test_retry_after_is_the_queues_expected_wait(tmp_path):
    with Engine(fake_cards(fake_models(delay=0.02)), data_dir=tmp_path, max_queue=3) as engine:
        running = [engine.chat(chat("w " * 500, stream=True)) for _ in range(3)]
        events = [r.events() for r in running]  # kept: dropping them would cancel the calls
        next(events[0])
        worker = engine.workers.worker(engine.index.lookup_strict("echo-llm"))
        worker._avg_seconds = 2.0  # jobs of this model have taken 2 s each
        with pytest.raises(ImagineAPITooManyRequestsException, match="retry after 6 s") as info:
            engine.chat(chat("x"))
        assert float(info.value.headers["Retry-After"]) >= 6  # three jobs of 2 s before it
        for r in running:
            r.cancel()


def test_async_consumption_does_not_block_the_loop(tmp_path):
    async def run(engine: Engine) -> tuple[list[str], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        call = engine.chat(chat("a b c d", stream=True))
        texts = [e.first_content async for e in call.aevents(heartbeat=5.0)]
        task.cancel()
        return texts, ticks

    with Engine(fake_cards(fake_models(delay=0.03)), data_dir=tmp_path) as engine:
        texts, ticks = asyncio.run(run(engine))
    assert texts == ["a", " b", " c", " d"]
    assert ticks > 4  # the loop kept running while the worker generated


def test_load_failure_is_a_load_error_and_shows_in_health(tmp_path):
    def broken():
        raise OSError("weights missing")

    card = ModelCard("broken", ModelType.LLM, "fails to load", "MIT", broken, default=True)
    with Engine([card], data_dir=tmp_path) as engine:
        with pytest.raises(ModelRunError, match="load: model 'broken' could not be loaded"):
            engine.chat(ChatCompletionRequest(messages=[{"role": "user", "content": "x"}],
                                              model="broken", stream=False)).result()  # fmt: skip
        assert "failed: OSError: weights missing" in engine.health().models


def test_health_reports_how_much_resident_memory_a_load_took(tmp_path):
    from imagine_edge.sdk.testing import EchoLLM

    held: list[bytes] = []

    def heavy() -> EchoLLM:
        held.append(b"x" * (64 * 2**20))  # 64 MiB, every page written
        return EchoLLM()

    card = ModelCard("heavy", ModelType.LLM, "allocates 64 MiB", "MIT", heavy, default=True)
    with Engine([card], data_dir=tmp_path) as engine:
        assert engine.model_states()[0].load_rss_bytes is None  # not loaded yet
        engine.load(["heavy"])
        (state,) = engine.model_states()
        assert state.load_rss_bytes is not None
        assert 60 * 2**20 <= state.load_rss_bytes <= 80 * 2**20
        assert "MiB resident at load" in engine.health().models


def test_a_model_being_prepared_does_not_hold_up_another_models_load(tmp_path):
    from imagine_edge.sdk.testing import EchoLLM, HashEmbedder

    preparing, release = threading.Event(), threading.Event()

    def slow_prepare() -> None:
        preparing.set()
        assert release.wait(10)

    slow = ModelCard("slow", ModelType.LLM, "prepares slowly", "MIT", EchoLLM, default=True,
                     prepare=slow_prepare)  # fmt: skip
    quick = ModelCard("quick", ModelType.EMBEDDING, "ready", "MIT", HashEmbedder, default=True)
    with Engine([slow, quick], data_dir=tmp_path) as engine:
        loading = threading.Thread(target=engine.load, args=(["slow"],))
        loading.start()
        assert preparing.wait(5)
        engine.load(["quick"])  # not behind the other model's preparation
        assert {s.name: s.state for s in engine.model_states()} == {
            "slow": "loading", "quick": "loaded",
        }  # fmt: skip
        release.set()
        loading.join(5)
        assert {s.state for s in engine.model_states()} == {"loaded"}


def test_unload_and_close_free_the_models(fakes, tmp_path):
    engine = Engine(fake_cards(fakes), data_dir=tmp_path)
    engine.load(["echo-llm"])
    assert engine.model_states()[0].execution_provider == "CPUExecutionProvider (fake)"
    engine.unload("Llama-3.1-8B")
    assert fakes[ModelType.LLM].closed
    assert engine.model_states()[0].state == "not loaded"
    assert engine.chat(chat("back again")).result().first_content == "back again"
    engine.close()
    assert fakes[ModelType.LLM].closed
    with pytest.raises(ModelUnavailableError, match="closed"):
        engine.chat(chat("x"))


def test_history_records_streams_with_the_aggregated_response(engine):
    list(engine.chat(chat("streamed words", stream=True)).events())
    [[response, request]] = engine.history(Endpoint.CHAT, 1)
    assert response["object"] == "chat.completion"
    assert response["choices"][0]["message"]["content"] == "streamed words"
    assert request["stream"] is True
    with pytest.raises(InvalidRequestError, match="max_items must be in"):
        engine.history(Endpoint.CHAT, 0)


def test_concurrent_callers_get_their_own_answers(engine):
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        answers[i] = engine.chat(chat(f"answer {i}")).result().first_content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {0: "answer 0", 1: "answer 1"}
