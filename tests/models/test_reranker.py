"""The RERANKER pipeline: the MiniLM bi-encoder default on real weights, and cross-encoders proven
on a small BertForSequenceClassification built here from the real architecture class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from imagine_edge.models.catalog import get_entry, prepared
from imagine_edge.models.embedding import EMBEDDING_MODEL, load_all_minilm_l6_v2, open_embedder
from imagine_edge.models.reranker import (
    BI_ENCODER_RERANKER,
    BiEncoderReranker,
    CrossEncoderReranker,
    load_bi_encoder_reranker,
    load_cross_encoder,
    load_minilm_bi_encoder_reranker,
)
from imagine_edge.runtime.session_pool import SessionPool
from imagine_edge.sdk.errors import InvalidRequestError

QUERY = "How many people live in Berlin?"
PASSAGES = [
    "Berlin is well known for its museums, such as the Pergamon Museum on Museum Island.",
    "New York City is the most populous city in the United States.",
    "Berlin has a population of 3,520,031 registered inhabitants in an area of 891.82 km².",
    "Whisk the eggs with sugar, fold in the flour and bake the cake for forty minutes.",
]
POPULATION = 2


@pytest.fixture(scope="module")
def bi_encoder() -> BiEncoderReranker:
    return load_minilm_bi_encoder_reranker("cpu")


@pytest.mark.model
def test_population_passage_ranks_first(bi_encoder: BiEncoderReranker) -> None:
    scores = bi_encoder.rank(QUERY, PASSAGES).scores
    assert scores.dtype == np.float32
    assert scores.shape == (len(PASSAGES),)
    assert int(np.argmax(scores)) == POPULATION
    # The recipe is the least related passage of the four.
    assert int(np.argmin(scores)) == 3


@pytest.mark.model
def test_scores_are_cosines_of_the_embeddings(bi_encoder: BiEncoderReranker) -> None:
    out = bi_encoder.rank(QUERY, PASSAGES)
    embedder = bi_encoder.embedder
    q = embedder.embed([QUERY])
    d = embedder.embed(PASSAGES)
    np.testing.assert_allclose(out.scores, d.vectors @ q.vectors[0], atol=1e-6)
    assert out.prompt_tokens == q.prompt_tokens + d.prompt_tokens
    assert np.all(np.abs(out.scores) <= 1.0 + 1e-6)


@pytest.mark.model
def test_scores_are_deterministic(bi_encoder: BiEncoderReranker) -> None:
    first = bi_encoder.rank(QUERY, PASSAGES).scores
    assert np.array_equal(first, bi_encoder.rank(QUERY, PASSAGES).scores)
    # The query is embedded alone: its vector does not depend on the documents, so a document's
    # score moves only through its own batch (int8 per-batch scales), and only slightly.
    alone = bi_encoder.rank(QUERY, [PASSAGES[POPULATION]]).scores[0]
    assert alone == pytest.approx(first[POPULATION], abs=0.01)


@pytest.mark.model
def test_reranker_entry_shares_the_embedding_graphs() -> None:
    reranker = prepared(BI_ENCODER_RERANKER, ["cpu"]).variant("cpu").graphs["encoder"].path
    embedding = prepared(EMBEDDING_MODEL, ["cpu"]).variant("cpu").graphs["encoder"].path
    assert reranker != embedding
    assert reranker.read_bytes() == embedding.read_bytes()
    model = load_bi_encoder_reranker(prepared(BI_ENCODER_RERANKER, ["cpu"]))
    embedder = load_all_minilm_l6_v2()
    np.testing.assert_array_equal(
        model.embedder.embed(PASSAGES).vectors, embedder.embed(PASSAGES).vectors
    )
    # The catalog's loaders share one session (same bytes, one process).
    assert model.embedder.encoder.sessions() == embedder.encoder.sessions()


@pytest.mark.model
def test_one_session_for_both_models_counted_once_freed_with_the_last() -> None:
    pool = SessionPool()
    embedder = open_embedder(prepared(EMBEDDING_MODEL, ["cpu"]), "cpu", sessions=pool)
    reranker = BiEncoderReranker(
        open_embedder(prepared(BI_ENCODER_RERANKER, ["cpu"]), "cpu", sessions=pool)
    )
    (session,) = embedder.encoder.sessions()
    assert reranker.embedder.encoder.sessions()[0] is session
    size = session.path.stat().st_size
    # Health adds the models up: the session's memory is reported once, by its first holder,
    # and both say it is shared.
    assert (embedder.resident_bytes(), reranker.resident_bytes()) == (size, 0)
    assert embedder.execution_provider == (
        f"CPUExecutionProvider (sessions shared with {BI_ENCODER_RERANKER})"
    )
    assert reranker.execution_provider == (
        f"CPUExecutionProvider (sessions of {EMBEDDING_MODEL}, memory counted there)"
    )
    before = reranker.rank(QUERY, PASSAGES).scores
    embedder.close()  # the reranker still holds the session, and now counts it
    assert session.session is not None
    assert reranker.resident_bytes() == size
    assert reranker.execution_provider == "CPUExecutionProvider"
    np.testing.assert_array_equal(reranker.rank(QUERY, PASSAGES).scores, before)
    embedder.close()  # twice: no effect
    reranker.close()
    assert session.session is None  # freed with its last holder
    assert reranker.resident_bytes() == 0


def test_default_reranker_says_it_is_a_bi_encoder() -> None:
    entry = get_entry(BI_ENCODER_RERANKER)
    assert entry.default
    assert "bi-encoder" in entry.description
    assert "not a cross-encoder" in entry.description
    assert "not a cross-encoder" in entry.model_card


@pytest.mark.model
def test_bad_inputs_are_rejected(bi_encoder: BiEncoderReranker) -> None:
    with pytest.raises(InvalidRequestError, match=r"documents\[1\] must be a string"):
        bi_encoder.rank(QUERY, ["fine", None])  # type: ignore[list-item]
    with pytest.raises(InvalidRequestError, match="query must be a string"):
        bi_encoder.rank(3, PASSAGES)  # type: ignore[arg-type]
    assert bi_encoder.rank(QUERY, []).scores.shape == (0,)


# --------------------------------------------------------------------------- cross-encoders

MAX_TOKENS = 64  # small, so truncation of the pair is exercised


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """A random 2-layer BertForSequenceClassification (one label) with MiniLM's real WordPiece
    tokenizer, exported through our recipe."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from imagine_edge.models.prepare.minilm import export_cross_encoder

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=MAX_TOKENS,
        num_labels=1,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    hf = tmp_path_factory.mktemp("tiny-cross-encoder-hf")
    model.save_pretrained(str(hf))
    tokenizer = prepared(EMBEDDING_MODEL, []).tokenizer
    (hf / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    out = export_cross_encoder(hf, tmp_path_factory.mktemp("tiny-cross-encoder-onnx"))
    return model, out


def torch_logits(model: object, folder: Path, query: str, documents: list[str]) -> np.ndarray:
    """transformers' own forward, one unpadded pair at a time, same tokenization."""
    import torch
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS, strategy="longest_first")
    out = []
    with torch.no_grad():
        for enc in tok.encode_batch([(query, d) for d in documents]):
            ids = torch.tensor([enc.ids])
            types = torch.tensor([enc.type_ids])
            logits = model(input_ids=ids, token_type_ids=types).logits  # type: ignore[operator]
            out.append(float(logits[0, 0]))
    return np.array(out, np.float32)


def test_cross_encoder_scores_equal_torch(tiny_cross_encoder: tuple[object, Path]) -> None:
    model, folder = tiny_cross_encoder
    documents = [*PASSAGES, "Berlin " * 80, "", "short"]  # one pair longer than MAX_TOKENS
    reference = torch_logits(model, folder, QUERY, documents)
    raw = load_cross_encoder(folder, activation="identity", max_batch=3)
    out = raw.rank(QUERY, documents)
    np.testing.assert_allclose(out.scores, reference, rtol=0, atol=1e-5)
    assert out.prompt_tokens <= MAX_TOKENS * len(documents)
    # The default activation is the sigmoid of the same logit.
    scored = load_cross_encoder(folder).rank(QUERY, documents).scores
    np.testing.assert_allclose(scored, 1 / (1 + np.exp(-reference)), rtol=0, atol=1e-6)
    assert json.loads((folder / "cross_encoder.json").read_text())["max_tokens"] == MAX_TOKENS


def test_cross_encoder_reads_query_and_document_together(
    tiny_cross_encoder: tuple[object, Path],
) -> None:
    _, folder = tiny_cross_encoder
    reranker: CrossEncoderReranker = load_cross_encoder(folder, activation="identity")
    a = reranker.rank("first query", ["same document"]).scores[0]
    b = reranker.rank("another question entirely", ["same document"]).scores[0]
    assert a != b  # a pair model: the document's score depends on the query
    assert reranker.execution_provider == "CPUExecutionProvider"


def test_cross_encoder_export_refuses_several_labels(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from imagine_edge.models.prepare.minilm import export_cross_encoder

    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=3,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="num_labels == 1"):
        export_cross_encoder(tmp_path, tmp_path / "out")
