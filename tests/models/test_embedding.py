"""The EMBEDDING pipeline on the real all-MiniLM-L6-v2 (CPU EP): quality against the float model,
input order, length bucketing, truncation, token counts, and the batch planner."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imagine_edge.models.catalog import prepared
from imagine_edge.models.embedding import (
    EMBEDDING_MODEL,
    SentenceEmbedder,
    load_embedder,
    open_embedder,
)
from imagine_edge.models.prepare.minilm import MAX_TOKENS, VALIDATION_TEXTS
from imagine_edge.models.sentence_encoder import plan_batches
from imagine_edge.models.store import Manifest
from imagine_edge.sdk.errors import InvalidRequestError

pytestmark = pytest.mark.model

# Varied lengths, deliberately not sorted: batching must put every vector back in its place.
MIXED = [
    "The library is closed on Sundays.",
    "A very long sentence about the history of the city, its bridges, its markets, its old "
    "harbour, the merchants who built the great warehouses along the river and the families "
    "who still run the bakeries and bookshops of the narrow streets behind the cathedral.",
    "Hi.",
    "What time does the train to Manchester leave tomorrow morning?",
    "",
    "Glaciers in the Alps have lost more than half of their volume since 1900, and the loss is "
    "accelerating.",
    "Cats sleep a lot.",
]


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return prepared(EMBEDDING_MODEL, ["cpu", "cpu-fp32"])


@pytest.fixture(scope="module")
def int8(manifest: Manifest) -> SentenceEmbedder:
    return open_embedder(manifest, "cpu")


@pytest.fixture(scope="module")
def fp32(manifest: Manifest) -> SentenceEmbedder:
    return open_embedder(manifest, "cpu-fp32")


def torch_reference(manifest: Manifest, texts: list[str]) -> np.ndarray:
    """sentence-transformers' recipe in torch: BertModel, mean over tokens, L2-normalised."""
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer
    from transformers import BertModel

    assert manifest.float_weights is not None
    model = BertModel.from_pretrained(str(manifest.float_weights)).eval()
    tok = Tokenizer.from_file(str(manifest.tokenizer))
    out = []
    with torch.no_grad():
        for enc in tok.encode_batch(texts):
            ids = torch.tensor([enc.ids])
            hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
            v = hidden.mean(1)[0].numpy()
            out.append(v / np.linalg.norm(v))
    return np.array(out)


def test_paraphrases_are_closer_than_unrelated_sentences(int8: SentenceEmbedder) -> None:
    a, b, unrelated = int8.embed(
        ["A man is eating food", "A man is eating a piece of bread", "The stock market fell."]
    ).vectors
    assert a @ b > 0.7
    assert a @ b > max(a @ unrelated, b @ unrelated)


def test_vectors_are_unit_float32_in_input_order(int8: SentenceEmbedder) -> None:
    out = int8.embed(MIXED)
    assert out.vectors.dtype == np.float32
    assert out.vectors.shape == (len(MIXED), 384)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)
    singles = np.array([int8.embed([t]).vectors[0] for t in MIXED])
    sims = out.vectors @ singles.T
    # Each batched vector is its own text's, closer to it than to any other text's; the int8
    # graph's per-batch activation scales move it only slightly.
    assert np.all(np.argmax(sims, axis=1) == np.arange(len(MIXED)))
    assert np.diag(sims).min() > 0.995


def test_bucketing_gives_the_same_vectors_as_unsorted_batches(manifest: Manifest) -> None:
    bucketed = open_embedder(manifest, "cpu-fp32", max_batch=3)
    plain = open_embedder(manifest, "cpu-fp32", max_batch=len(MIXED), bucketing=False)
    np.testing.assert_allclose(
        bucketed.embed(MIXED).vectors, plain.embed(MIXED).vectors, rtol=0, atol=2e-6
    )
    # And the plans really differ: short sorted batches against input-order ones padded to
    # their longest text.
    lengths = np.array([len(e.ids) for e in bucketed.tokenize(MIXED)], np.int64)
    sorted_plan, input_order = bucketed.encoder.plan(lengths), plain.encoder.plan(lengths)
    assert np.array_equal(np.concatenate([b.indices for b in input_order]), np.arange(len(MIXED)))
    padded = [sum(b.length * len(b.indices) for b in p) for p in (sorted_plan, input_order)]
    assert padded[0] < padded[1]


def test_float_graph_is_the_sentence_transformers_model(
    manifest: Manifest, fp32: SentenceEmbedder, int8: SentenceEmbedder
) -> None:
    texts = [*VALIDATION_TEXTS[:8], MIXED[1]]
    reference = torch_reference(manifest, texts)
    float_cos = np.sum(fp32.embed(texts).vectors * reference, axis=1)
    int8_cos = np.sum(int8.embed(texts).vectors * reference, axis=1)
    assert float_cos.min() > 0.99999
    assert int8_cos.min() >= 0.99
    # The figure MODELS.md records for the float model (these texts end with a full stop).
    a, b = fp32.embed(["A man is eating food.", "A man is eating a piece of bread."]).vectors
    assert a @ b == pytest.approx(0.755, abs=0.001)


def test_truncation_at_the_model_limit_is_flagged(fp32: SentenceEmbedder) -> None:
    words = " ".join(["word"] * 300)  # one word piece each: 302 tokens with [CLS] and [SEP]
    fitting = " ".join(["word"] * (MAX_TOKENS - 2))
    out = fp32.embed([words, fitting, "short"])
    assert out.truncated == (True, False, False)
    assert out.prompt_tokens == MAX_TOKENS + MAX_TOKENS + 3
    # Truncation keeps the head of the text: the truncated text is the fitting one.
    np.testing.assert_allclose(out.vectors[0], out.vectors[1], atol=1e-6)


def test_token_counts_include_special_tokens(int8: SentenceEmbedder) -> None:
    out = int8.embed(["Hi.", ""])
    assert out.prompt_tokens == 4 + 2  # [CLS] hi . [SEP], [CLS] [SEP]
    assert out.truncated == (False, False)


def test_identical_requests_give_identical_vectors(int8: SentenceEmbedder) -> None:
    assert np.array_equal(int8.embed(MIXED).vectors, int8.embed(MIXED).vectors)


def test_non_string_input_is_rejected(int8: SentenceEmbedder) -> None:
    with pytest.raises(InvalidRequestError, match=r"input\[1\] must be a string, got int"):
        int8.embed(["fine", 3])  # type: ignore[list-item]


def test_empty_request_gives_no_vectors(int8: SentenceEmbedder) -> None:
    out = int8.embed([])
    assert out.vectors.shape[0] == 0
    assert out.prompt_tokens == 0


def test_catalog_loader_follows_the_environment(
    manifest: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_EDGE_EMBEDDING_PRECISION", "float32")
    model = load_embedder(manifest)
    assert model.encoder.sessions()[0].path == manifest.variant("cpu-fp32").graphs["encoder"].path
    # The module's fp32 embedder has that graph open already: the loader shares its session.
    assert model.execution_provider.startswith("CPUExecutionProvider (sessions of")
    model.close()
    assert model.resident_bytes() == 0
    assert model.execution_provider == "closed"
    monkeypatch.setenv("IMAGINE_EDGE_EMBEDDING_TARGET", "gpu")
    message = "IMAGINE_EDGE_EMBEDDING_TARGET must be cpu, qnn or auto, got 'gpu'"
    with pytest.raises(ValueError, match=message):
        load_embedder(manifest)


@pytest.mark.parametrize(
    ("lengths", "max_batch", "max_tokens"),
    [
        ([5, 40, 3, 3, 17, 256, 9, 12], 3, 8192),
        ([5, 40, 3, 3, 17, 256, 9, 12], 32, 100),
        ([7] * 70, 32, 8192),
        ([300], 4, 100),  # longer than the token cap: runs alone
        ([], 8, 64),
    ],
)
def test_batch_plan_covers_every_text_within_the_caps(
    lengths: list[int], max_batch: int, max_tokens: int
) -> None:
    arr = np.array(lengths, np.int64)
    plan = plan_batches(arr, max_batch, max_tokens)
    seen = np.concatenate([b.indices for b in plan]) if plan else np.array([], np.intp)
    assert sorted(seen.tolist()) == list(range(len(lengths)))
    for b in plan:
        assert 1 <= len(b.indices) <= max_batch
        assert b.length == arr[b.indices].max()
        assert len(b.indices) == 1 or b.length * len(b.indices) <= max_tokens
    # Sorted by length: batches never interleave (each starts where the previous ended).
    order = [int(arr[b.indices].min()) for b in plan]
    assert order == sorted(order)


def test_requests_are_cut_into_enough_small_batches(manifest: Manifest) -> None:
    encoder = open_embedder(manifest, "cpu").encoder
    encoder.workers = 2  # as on a two-core machine, whatever this one has
    sizes = {
        n: [len(b.indices) for b in encoder.plan(np.full(n, 20, np.int64))] for n in (1, 3, 32, 256)
    }
    assert sizes[1] == [1]
    assert sizes[3] == [2, 1]  # both workers get a batch
    assert sizes[32] == [4] * 8  # small batches pad less; several per worker
    assert sizes[256] == [16] * 16  # capped at max_batch


def _without_qnn(manifest: Manifest) -> Manifest:
    variants = {k: v for k, v in manifest.variants.items() if k != "qnn"}
    return dataclasses.replace(manifest, variants=variants)


def test_auto_target_runs_on_the_cpu_graph_and_says_why(
    manifest: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_EDGE_EMBEDDING_TARGET", "auto")
    monkeypatch.delenv("IMAGINE_EDGE_EMBEDDING_PRECISION", raising=False)
    model = load_embedder(_without_qnn(manifest))
    try:
        assert model.encoder.sessions()[0].path == manifest.variant("cpu").graphs["encoder"].path
        assert model.execution_provider.startswith(
            "CPUExecutionProvider (fallback: no prepared QNN graphs)"
        )
        vectors = model.embed(MIXED[:2]).vectors
        assert vectors.shape == (2, 384)
    finally:
        model.close()
    assert model.execution_provider == "closed"
