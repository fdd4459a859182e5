"""The audio front end: sniffing, decoding, resampling and Whisper's log-mel features.

Decoding is checked on files written by libsndfile in every supported container, with a known
tone whose frequency must survive decoding and resampling. The mel front end is compared with
transformers' WhisperFeatureExtractor (the reference implementation of Whisper's features).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from imagine_edge.models.audio import (
    SAMPLE_RATE,
    decode_audio,
    load_audio,
    log_mel,
    mel_filters,
    resample,
    sniff_format,
)
from imagine_edge.sdk.errors import InvalidRequestError

# (container, libsndfile subtype) of every format the transcriber accepts.
FORMATS = [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")]


def _tone(freq: float, seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _encode(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


@pytest.mark.parametrize(("fmt", "subtype"), FORMATS)
def test_sniff_and_decode_every_container(fmt: str, subtype: str) -> None:
    data = _encode(_tone(440.0, 1.0, 44_100), 44_100, fmt, subtype)
    assert sniff_format(data) == fmt
    samples, rate = decode_audio(data)
    assert rate == 44_100
    assert samples.dtype == np.float32
    # Lossy codecs add a little priming/padding; the length stays within 0.1 s.
    assert abs(len(samples) - 44_100) < 4_410
    assert _peak_hz(samples, rate) == pytest.approx(440.0, abs=2.0)


def test_sniff_looks_at_bytes_only() -> None:
    mp3 = _encode(_tone(300.0, 0.5, 16_000), 16_000, "MP3", "MPEG_LAYER_III")
    # An ID3v2 tag in front of the frames (size 0x000100 in syncsafe bytes) is skipped.
    tagged = b"ID3\x04\x00\x00\x00\x00\x02\x00" + b"\x00" * 256 + mp3
    assert sniff_format(tagged) == "MP3"
    flac = _encode(_tone(300.0, 0.5, 16_000), 16_000, "FLAC", "PCM_16")
    assert sniff_format(b"ID3\x04\x00\x00\x00\x00\x00\x10" + b"\x00" * 16 + flac) == "FLAC"
    with pytest.raises(InvalidRequestError, match="WAV, FLAC, OGG, MP3"):
        sniff_format(b"%PDF-1.7 not audio")
    with pytest.raises(InvalidRequestError, match="no bytes"):
        sniff_format(b"")


def test_corrupt_audio_is_a_clear_error() -> None:
    wav = _encode(_tone(300.0, 0.5, 16_000), 16_000, "WAV", "PCM_16")
    with pytest.raises(InvalidRequestError, match="could not decode the WAV audio"):
        decode_audio(wav[:12] + b"\x00" * 40)


def test_stereo_is_mixed_to_mono() -> None:
    left, right = _tone(440.0, 0.5, 16_000), np.zeros(8_000, np.float32)
    data = _encode(np.stack([left, right], axis=1), 16_000, "WAV", "FLOAT")
    samples = load_audio(data)
    np.testing.assert_allclose(samples, left / 2, atol=1e-6)


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
def test_resample_keeps_frequency_and_duration(rate: int) -> None:
    tone = _tone(1_000.0, 2.0, rate)
    out = resample(tone, rate)
    assert len(out) == pytest.approx(2 * SAMPLE_RATE, abs=1)
    assert _peak_hz(out, SAMPLE_RATE) == pytest.approx(1_000.0, abs=1.0)
    # The polyphase filter keeps the amplitude of an in-band tone.
    assert np.abs(out[1000:-1000]).max() == pytest.approx(0.5, abs=0.01)


def test_resample_removes_what_16k_cannot_carry() -> None:
    above_nyquist = _tone(10_000.0, 1.0, 48_000)
    # Away from the edges (where the tone starts abruptly) nothing above 8 kHz is left.
    assert np.abs(resample(above_nyquist, 48_000)[100:-100]).max() < 0.01
    with pytest.raises(ValueError, match="positive"):
        resample(above_nyquist, 0)


def test_mel_filters_match_whisper_feature_extractor() -> None:
    from transformers import WhisperFeatureExtractor

    for n_mels in (80, 128):
        ref = WhisperFeatureExtractor(feature_size=n_mels).mel_filters.T
        np.testing.assert_allclose(mel_filters(n_mels), ref, atol=1e-7)


def test_log_mel_matches_whisper_feature_extractor() -> None:
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    # Speech-like input: tones with a noise floor, 7 s, padded to 30 s as Whisper does.
    audio = _tone(220.0, 7.0, SAMPLE_RATE) + 0.05 * rng.standard_normal(7 * SAMPLE_RATE)
    audio = audio.astype(np.float32)
    ref = WhisperFeatureExtractor()(audio, sampling_rate=SAMPLE_RATE, return_tensors="np")
    mine = log_mel(audio, 80, pad_samples=30 * SAMPLE_RATE - len(audio))
    assert mine.shape == (80, 3000)
    np.testing.assert_allclose(mine, ref.input_features[0], atol=1e-4)


def test_log_mel_shape_and_floor() -> None:
    mel = log_mel(np.zeros(16_000, np.float32), 80, pad_samples=160)
    assert mel.shape == (80, 101)
    # Silence is floored at log10(1e-10): (-10 + 4) / 4.
    assert np.allclose(mel, -1.5)
    with pytest.raises(InvalidRequestError, match="too short"):
        log_mel(np.zeros(100, np.float32))


def test_log_mel_in_blocks_equals_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    import imagine_edge.models.audio as audio

    rng = np.random.default_rng(1)
    long = (0.1 * rng.standard_normal(65 * SAMPLE_RATE)).astype(np.float32)
    blocked = log_mel(long, 80, pad_samples=30 * SAMPLE_RATE)
    monkeypatch.setattr(audio, "_FRAMES_PER_BLOCK", 10**9)
    whole = log_mel(long, 80, pad_samples=30 * SAMPLE_RATE)
    assert blocked.shape == (80, 95 * 100)
    # The same sums, up to float32 rounding: BLAS picks its kernel and blocking by the matrix
    # shape, so a 3000-frame block and a 9500-frame one may round a sum differently (seen on
    # AVX2-only CPUs: 0.26% of the values, 1 ulp). A frame misplaced across a block boundary
    # would differ by far more.
    np.testing.assert_allclose(blocked, whole, rtol=1e-6, atol=1e-7)
