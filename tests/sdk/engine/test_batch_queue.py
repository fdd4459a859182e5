"""Embedding and reranker requests gathered across callers (sdk/engine/batch_queue.py), on the
real all-MiniLM-L6-v2 and the catalog's reranker: each request gets its own vectors, scores,
errors and usage; the token and request budgets hold (read from the queue's counters)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest

from imagine_edge.models.base import Embeddings, Encoded, ModelCard
from imagine_edge.models.catalog import prepared
from imagine_edge.models.embedding import EMBEDDING_MODEL, open_embedder
from imagine_edge.models.reranker import BI_ENCODER_RERANKER, load_minilm_bi_encoder_reranker
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.engine.batch_queue import BatchLimits
from imagine_edge.sdk.engine.observe import RequestReport, observing
from imagine_edge.sdk.errors import ImagineException, InvalidRequestError, ModelRunError
from imagine_edge.sdk.types import EmbeddingRequest, ModelType, ReRankerRequest

SENTENCES = [
    "The library is closed on Sundays.",
    "Hi.",
    "What time does the train to Manchester leave tomorrow morning?",
    "Glaciers in the Alps have lost more than half of their volume since 1900.",
    "Cats sleep a lot.",
    "A man is eating a piece of bread in the park near the river.",
    "Prices rose again.",
    "The committee will publish its report on the new bridge next spring, after the vote.",
]


def card(name: str, model_type: ModelType, load: Callable[[], object]) -> ModelCard:
    return ModelCard(name, model_type, "test card", "Apache-2.0", load)


def gated(engine: Engine, name: str, admit: Callable[[], list]) -> list:
    """Admit requests while the model's worker is held, so they all wait together."""
    worker = engine.workers.worker(engine.index.lookup_strict(name))
    worker.load()
    gate, held = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        gate.wait(30)

    holder = threading.Thread(target=worker.control, args=(hold,))
    holder.start()
    held.wait(30)
    try:
        calls = admit()
    finally:
        gate.set()
        holder.join()
    return calls


def vector(response) -> np.ndarray:
    return np.array([d.embedding for d in response.data], dtype=np.float64)


@pytest.fixture(scope="module")
def embedding_cards() -> list[ModelCard]:
    manifest = prepared(EMBEDDING_MODEL, ["cpu", "cpu-fp32"])
    return [
        card("minilm-int8", ModelType.EMBEDDING, lambda: open_embedder(manifest, "cpu")),
        card("minilm-fp32", ModelType.EMBEDDING, lambda: open_embedder(manifest, "cpu-fp32")),
    ]


@pytest.fixture
def engine(embedding_cards, tmp_path) -> Iterator[Engine]:
    with Engine(embedding_cards, data_dir=tmp_path, max_queue=32) as engine:
        yield engine


def embed(engine: Engine, model: str, text: str | list[str]):
    return engine.embeddings(EmbeddingRequest(input=text, model=model))


@pytest.mark.model
@pytest.mark.parametrize("model", ["minilm-fp32", "minilm-int8"])
def test_concurrent_requests_run_together_and_match_alone(engine, model):
    inputs: list[str | list[str]] = [*SENTENCES, SENTENCES[:3], *SENTENCES[::-1]]
    calls = gated(engine, model, lambda: [embed(engine, model, x) for x in inputs])
    responses = [c.result() for c in calls]
    together = [vector(r) for r in responses]
    stats = engine.batches.stats(model)
    assert stats.gathered_runs == 1
    assert stats.largest_requests == len(inputs)  # all of them, in one run

    alone = [vector(embed(engine, model, x).result()) for x in inputs]  # each alone
    assert engine.batches.stats(model).runs == 1 + len(inputs)
    for x, a, b in zip(inputs, together, alone, strict=True):
        assert a.shape == b.shape == (1 if isinstance(x, str) else len(x), 384)
        if model == "minilm-fp32":  # padding is masked: float rounding only
            np.testing.assert_allclose(a, b, atol=2e-6)
        else:  # the int8 graph's quantization scales are per batch (docs/server.md, Batching)
            assert np.min(np.sum(a * b, axis=1)) > 0.995
    usage = [r.usage for r in responses]
    for x, u in zip(inputs, usage, strict=True):
        assert u.prompt_tokens == embed(engine, model, x).result().usage.prompt_tokens
        # One run served them all: its time is every request's prefill.
        assert u.timings.prefill_ms == usage[0].timings.prefill_ms > 0
    assert "batched" in engine.health().models


@pytest.mark.model
@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
def test_a_bad_request_fails_alone(engine):
    model = "minilm-fp32"
    bad = EmbeddingRequest.model_construct(input=["fine", 42], model=model)

    def admit() -> list:
        return [embed(engine, model, SENTENCES[0]), engine.embeddings(bad)] + [
            embed(engine, model, s) for s in SENTENCES[1:4]
        ]

    calls = gated(engine, model, admit)
    with pytest.raises(InvalidRequestError, match=r"input\[1\] must be a string"):
        calls[1].result()
    good = [vector(c.result()) for i, c in enumerate(calls) if i != 1]
    assert all(v.shape == (1, 384) for v in good)
    assert engine.batches.stats(model).largest_requests == 4  # the four good ones together
    np.testing.assert_allclose(
        good[1], vector(embed(engine, model, SENTENCES[1]).result()), atol=2e-6
    )


@pytest.mark.model
@pytest.mark.parametrize(("tokens", "requests"), [(64, 32), (8192, 3)])
def test_the_budget_holds(embedding_cards, tmp_path, tokens, requests):
    with Engine(
        embedding_cards,
        data_dir=tmp_path,
        max_queue=32,
        embed_batch_tokens=tokens,
        embed_batch_requests=requests,
    ) as engine:
        model = "minilm-int8"
        inputs = [*SENTENCES, " ".join(SENTENCES) * 2]  # the last alone is over 64 tokens
        calls = gated(engine, model, lambda: [embed(engine, model, x) for x in inputs])
        assert all(vector(c.result()).shape == (1, 384) for c in calls)
        stats = engine.batches.stats(model)
    assert stats.requests == len(inputs)
    assert stats.gathered_runs >= 1
    assert stats.largest_requests <= requests
    assert stats.largest_padded_tokens <= tokens
    assert stats.runs >= -(-len(inputs) // requests)


@pytest.mark.model
def test_no_gathering_when_the_budget_is_zero(embedding_cards, tmp_path):
    with Engine(embedding_cards, data_dir=tmp_path, embed_batch_tokens=0) as engine:
        calls = gated(
            engine, "minilm-int8", lambda: [embed(engine, "minilm-int8", s) for s in SENTENCES]
        )
        assert all(vector(c.result()).shape == (1, 384) for c in calls)
        stats = engine.batches.stats("minilm-int8")
    assert (stats.runs, stats.gathered_runs, stats.largest_requests) == (len(SENTENCES), 0, 1)


@pytest.mark.model
def test_cancelled_requests_join_no_run_and_each_is_recorded(engine):
    model = "minilm-fp32"
    reports: list[RequestReport] = []

    class Observer:
        def admitted(self, request_id: str, endpoint: str, model: str) -> None:
            pass

        def finished(self, report: RequestReport) -> None:
            reports.append(report)

    def admit() -> list:
        with observing(Observer()):
            calls = [embed(engine, model, s) for s in SENTENCES[:5]]
        calls[2].cancel()
        return calls

    calls = gated(engine, model, admit)
    for i, c in enumerate(calls):
        if i != 2:
            assert vector(c.result()).shape == (1, 384)
    with pytest.raises(ImagineException):
        calls[2].result()
    assert engine.batches.stats(model).largest_requests == 4
    assert sorted(r.status for r in reports) == ["cancelled"] + ["ok"] * 4
    ok = [r for r in reports if r.status == "ok"]
    assert all(r.prompt_tokens > 0 and r.prefill_seconds > 0 for r in ok)
    used = engine.usage(model=model)
    assert sum(u.total_tokens for u in used.usage) == sum(r.prompt_tokens for r in ok)


@pytest.mark.model
@pytest.mark.parametrize(("variant", "atol"), [("cpu-fp32", 2e-6), ("cpu", 0.03)])
def test_the_catalog_reranker_batched_matches_alone(tmp_path, variant, atol):
    """The catalog's reranker (int8 by default, and its float32 graph): batched scores equal
    the scores alone within float rounding on float32, within the int8 graph's per-batch
    quantization on int8 (docs/server.md, Batching)."""
    cards = [
        card(
            BI_ENCODER_RERANKER,
            ModelType.RERANKER,
            lambda: load_minilm_bi_encoder_reranker(variant),
        )
    ]
    requests = [
        ReRankerRequest(query=SENTENCES[i], documents=SENTENCES[i + 1 :], model=BI_ENCODER_RERANKER)
        for i in range(5)
    ]
    with Engine(cards, data_dir=tmp_path) as engine:
        calls = gated(engine, BI_ENCODER_RERANKER, lambda: [engine.rerank(r) for r in requests])
        together = [c.result() for c in calls]
        assert engine.batches.stats(BI_ENCODER_RERANKER).largest_requests == len(requests)
        alone = [engine.rerank(r).result() for r in requests]
    for t, a in zip(together, alone, strict=True):
        t_scores = {d.index: d.relevance_score for d in t.data}
        a_scores = {d.index: d.relevance_score for d in a.data}
        assert t_scores.keys() == a_scores.keys()
        for i, score in a_scores.items():
            assert t_scores[i] == pytest.approx(score, abs=atol)
        if variant == "cpu-fp32":
            assert [d.index for d in t.data] == [d.index for d in a.data]  # the same order
        assert t.usage.prompt_tokens == a.usage.prompt_tokens


class PickyEmbedder:
    """A batch embedder whose graph run fails when any of its texts is 'poison'."""

    execution_provider = "test"

    def __init__(self) -> None:
        self.runs: list[int] = []

    def resident_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def encode(self, texts: Sequence[str]) -> Encoded:
        return Encoded(ids=tuple([len(t)] * 3 for t in texts), truncated=(False,) * len(texts))

    def embed_encoded(self, parts: Sequence[Encoded]) -> list[Embeddings]:
        self.runs.append(len(parts))
        if any(row[0] == len("poison") for part in parts for row in part.ids):
            raise ModelRunError("the graph refused a text")
        return [Embeddings(np.full((p.rows, 2), p.ids[0][0], np.float32), p.tokens) for p in parts]

    def embed(self, texts: Sequence[str]) -> Embeddings:
        return self.embed_encoded([self.encode(texts)])[0]


def test_a_failed_run_reruns_each_request_alone(tmp_path):
    picky = PickyEmbedder()
    cards = [card("picky", ModelType.EMBEDDING, lambda: picky)]
    with Engine(cards, data_dir=tmp_path, embed_batch_tokens=BatchLimits().max_tokens) as engine:
        texts = ["a", "bb", "poison", "dddd"]
        calls = gated(engine, "picky", lambda: [embed(engine, "picky", t) for t in texts])
        with pytest.raises(ModelRunError, match="refused"):
            calls[2].result()
        for t, c in zip(texts, calls, strict=True):
            if t != "poison":
                assert vector(c.result())[0, 0] == len(t)
    assert picky.runs == [4, 1, 1, 1, 1]  # together, then each alone


def test_limits_from_arguments_then_the_environment(monkeypatch):
    assert BatchLimits.from_env() == BatchLimits(8192, 32)
    monkeypatch.setenv("IMAGINE_EDGE_EMBED_BATCH_TOKENS", "512")
    monkeypatch.setenv("IMAGINE_EDGE_EMBED_BATCH_REQUESTS", "4")
    assert BatchLimits.from_env() == BatchLimits(512, 4)
    assert BatchLimits.from_env(0, 2) == BatchLimits(0, 2)
    assert not BatchLimits(0, 2).gathers
    monkeypatch.setenv("IMAGINE_EDGE_EMBED_BATCH_TOKENS", "lots")
    with pytest.raises(ValueError, match="IMAGINE_EDGE_EMBED_BATCH_TOKENS"):
        BatchLimits.from_env()
    with pytest.raises(ValueError, match="requests >= 1"):
        BatchLimits(8192, 0)


@pytest.mark.model
def test_the_queue_limit_and_health_still_hold(embedding_cards, tmp_path):
    from imagine_edge.sdk.errors import ImagineAPITooManyRequestsException

    with Engine(embedding_cards, data_dir=tmp_path, max_queue=4) as engine:
        model = "minilm-int8"
        seen: dict[str, str] = {}

        def admit() -> list:
            calls = [embed(engine, model, s) for s in SENTENCES[:4]]
            with pytest.raises(ImagineAPITooManyRequestsException):
                embed(engine, model, SENTENCES[4])
            seen["health"] = engine.health().models
            return calls

        calls = gated(engine, model, admit)
        assert all(vector(c.result()).shape == (1, 384) for c in calls)
        assert "0 running, 4 waiting" in seen["health"]
        assert engine.batches.stats(model).largest_requests == 4  # the refused one joined none
