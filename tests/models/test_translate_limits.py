"""Translate's bounds: the source length of a request (413), segments of at most 128 tokens per
encoder call, and no memory left behind by a large legal request."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from imagine_edge.models.translate import (
    MAX_SEGMENT_TOKENS,
    MAX_SOURCE_CHARS,
    BergamotTranslator,
    load_bergamot_en_pt,
)
from imagine_edge.runtime.memory import process_resident_bytes
from imagine_edge.sdk.errors import PayloadTooLargeError
from imagine_edge.sdk.types import FinishReason, TranslateRequest

# One sentence without a full stop: ~3,500 source tokens in 15 KB.
LONG_SENTENCE = "the cat sat on the mat and looked at the house " * 320


@pytest.fixture(scope="module")
def en_pt() -> Iterator[BergamotTranslator]:
    model = load_bergamot_en_pt()
    yield model
    model.close()


def _run(model: BergamotTranslator, text: str, max_tokens: int | None = None) -> list[str]:
    request = TranslateRequest(
        prompt=text, model=model.manifest.name, stream=False, max_tokens=max_tokens
    )
    return [c.text for c in model.translate(request, threading.Event())]


def test_a_source_beyond_the_limit_is_413_before_any_work(en_pt: BergamotTranslator) -> None:
    text = "hello world. " * 16_000  # made onnxruntime try to allocate 131 GB
    with pytest.raises(
        PayloadTooLargeError, match=f"208000 characters, the limit is {MAX_SOURCE_CHARS}"
    ):
        _run(en_pt, text)
    assert _run(en_pt, "Hello world.") != []  # the model still answers


def test_long_sentences_are_cut_into_segments_before_words(en_pt: BergamotTranslator) -> None:
    segments = en_pt.segments(LONG_SENTENCE)
    assert len(segments) > 20
    assert all(len(s) <= MAX_SEGMENT_TOKENS and s[-1] == en_pt.eos for s in segments)
    ids = [t for s in segments for t in s[:-1]]
    assert ids == en_pt.encode(LONG_SENTENCE)[:-1]  # nothing lost or repeated
    for s in segments[1:]:  # each segment starts a word
        assert en_pt.tokenizer.id_to_token(s[0]).startswith("\u2581")
    short = en_pt.segments("The cat sat on the mat.")
    assert short == [en_pt.encode("The cat sat on the mat.")]


def test_a_large_legal_request_leaves_no_memory_behind(en_pt: BergamotTranslator) -> None:
    """Today's failure: one 3,500-token sentence grew the process by 825 MB that it kept."""
    assert len(LONG_SENTENCE) <= MAX_SOURCE_CHARS
    _run(en_pt, "The cat sat on the mat. " * 20)  # warm the arenas at a normal size
    before = process_resident_bytes()
    if before is None:
        pytest.skip("no /proc: the process's memory cannot be read")
    request = TranslateRequest(
        prompt=LONG_SENTENCE, model=en_pt.manifest.name, stream=False, max_tokens=400
    )
    chunks = list(en_pt.translate(request, threading.Event()))
    after = process_resident_bytes()
    assert after is not None
    assert chunks[-1].finish_reason is FinishReason.length
    assert chunks[-1].stats is not None
    assert chunks[-1].stats.completion_tokens == 400
    assert "".join(c.text for c in chunks).strip()
    assert (after - before) / 2**20 < 64, f"grew by {(after - before) / 2**20:.0f} MiB"
