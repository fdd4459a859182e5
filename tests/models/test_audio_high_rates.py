"""Audio above 48 kHz: decimated by an integer factor while it decodes, then resampled to 16 kHz
as any other file; the same samples as resampling the whole file at once, no aliases, and the
same words from Whisper. A generated 96 kHz file throughout."""

from __future__ import annotations

import importlib.util
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from imagine_edge.benchmarks.bench_transcribe import wer
from imagine_edge.models import audio
from imagine_edge.models.audio import decimation, decode_audio, load_audio
from imagine_edge.sdk.errors import PayloadTooLargeError


def _wav(samples: np.ndarray, rate: int, subtype: str = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def _tones(rate: int, seconds: float = 2.5) -> np.ndarray:
    """1 kHz, plus a tone 4 kHz below the input's Nyquist frequency: decimated without a
    filter, the latter would fold into the speech band."""
    t = np.arange(int(seconds * rate)) / rate
    return (
        0.5 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * (rate / 2 - 4000) * t)
    ).astype(np.float32)


@pytest.mark.parametrize(
    ("rate", "factor"),
    [(48_000, 1), (44_100, 1), (88_200, 2), (96_000, 2), (176_400, 4), (192_000, 4),
     (384_000, 8), (50_000, 2), (50_001, 3), (50_003, None)],
)  # fmt: skip
def test_the_decimation_factor(rate: int, factor: int | None) -> None:
    assert decimation(rate) == factor


@pytest.mark.parametrize("rate", [88_200, 96_000, 192_000])
def test_a_high_rate_file_resamples_as_the_whole_file_would(rate: int) -> None:
    tones = _tones(rate)
    ours = load_audio(_wav(tones, rate))
    whole = resample_poly(tones.astype(np.float64), 16_000, rate).astype(np.float32)
    assert len(ours) == len(whole) == 40_000
    # Same samples (the FIR's delay compensated), away from the edges' filter transients.
    np.testing.assert_allclose(ours[50:-50], whole[50:-50], atol=1e-3)
    spectrum = np.abs(np.fft.rfft(ours[:32_000] * np.hanning(32_000)))
    hz = np.fft.rfftfreq(32_000, 1 / 16_000)
    tone = spectrum[np.argmin(np.abs(hz - 1000))]
    elsewhere = spectrum[(hz < 800) | (hz > 1200)].max()
    assert 20 * np.log10(elsewhere / tone) < -60  # no alias of the high tone


def test_the_blocks_join_seamlessly(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _wav(_tones(96_000, 1.0), 96_000, "PCM_16")
    whole, rate = decode_audio(data)
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", 97)  # odd blocks, shorter than the filter
    blocks, _ = decode_audio(data)
    assert rate == 48_000
    np.testing.assert_array_equal(blocks, whole)


def test_the_duration_limit_holds_at_96_khz() -> None:
    with pytest.raises(PayloadTooLargeError, match=r"3\.0 s long, the limit is 2 s"):
        decode_audio(_wav(np.zeros(3 * 96_000, np.float32), 96_000), max_seconds=2.0)


def _beckett() -> Path:
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("moonshine-voice (test audio) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "beckett.wav"


@pytest.mark.model
def test_whisper_hears_the_same_words_at_96_khz() -> None:
    from imagine_edge.models.transcribe import load_whisper_tiny_en

    samples, rate = sf.read(_beckett(), dtype="float32")
    high = resample_poly(samples.astype(np.float64), 96_000, rate).astype(np.float32)
    model = load_whisper_tiny_en()
    try:
        original = model.transcribe(_beckett().read_bytes(), threading.Event())
        at_96k = model.transcribe(_wav(high, 96_000, "PCM_24"), threading.Event())
    finally:
        model.close()
    assert original.strip()
    assert wer(original, at_96k) <= 0.05, (original, at_96k)
