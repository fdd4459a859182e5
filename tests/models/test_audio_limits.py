"""The audio duration limit: read from every container's frames and rate before decoding, and
enforced again while decoding in bounded blocks.

The headline case is a real file: three hours of FLAC silence compress into 272 KB, far under the
byte limit, and used to decode to gigabytes of samples before any duration was checked.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from imagine_edge.models import audio
from imagine_edge.models.audio import audio_seconds, declared_seconds, decode_audio, load_audio
from imagine_edge.sdk.errors import InvalidRequestError, PayloadTooLargeError
from imagine_edge.sdk.limits import Limits

FORMATS = [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")]


def _encode(seconds: float, rate: int, fmt: str, subtype: str, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, channels, format=fmt, subtype=subtype) as f:
        block = np.zeros((rate * 60, channels), np.int16)
        left = int(seconds * rate)
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    return buf.getvalue()


@pytest.fixture(scope="module")
def three_hours_flac() -> bytes:
    return _encode(3 * 3600, 8_000, "FLAC", "PCM_16")


def test_three_hours_of_flac_are_refused_before_decoding(
    three_hours_flac: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(three_hours_flac) < 300_000  # far under the byte limit
    assert audio_seconds(three_hours_flac) == pytest.approx(3 * 3600)
    with pytest.raises(PayloadTooLargeError, match=r"10800\.0 s long, the limit is 1800 s"):
        Limits().check_audio(three_hours_flac, declared_seconds(three_hours_flac))

    # The model's own decoder refuses it too, without reading a single block.
    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded before the duration was checked")

    monkeypatch.setattr(sf.SoundFile, "read", no_reading)
    with pytest.raises(PayloadTooLargeError, match="the limit is 1800 s"):
        load_audio(three_hours_flac)


@pytest.mark.parametrize(("fmt", "subtype"), FORMATS)
def test_every_container_declares_its_duration(fmt: str, subtype: str) -> None:
    data = _encode(12.0, 8_000, fmt, subtype)
    assert audio_seconds(data) == pytest.approx(12.0, abs=0.1)
    with pytest.raises(PayloadTooLargeError, match="the limit is 10 s"):
        Limits(max_audio_seconds=10.0).check_audio(data, declared_seconds(data))
    with pytest.raises(PayloadTooLargeError, match="the limit is 10 s"):
        decode_audio(data, max_seconds=10.0)
    Limits(max_audio_seconds=13.0).check_audio(data, declared_seconds(data))
    samples, rate = decode_audio(data, max_seconds=13.0)
    assert rate == 8_000
    assert len(samples) == pytest.approx(12 * 8_000, abs=800)


def test_decoding_goes_block_by_block_and_mixes_each_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _encode(3.0, 8_000, "WAV", "PCM_16", channels=4)
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", 4_000)  # 1,000 frames of 4 channels
    reads: list[int] = []
    read = sf.SoundFile.read

    def counted(self: sf.SoundFile, frames: int = -1, **kwargs: object) -> object:
        reads.append(frames)
        return read(self, frames, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sf.SoundFile, "read", counted)
    samples, _ = decode_audio(data)
    assert samples.shape == (24_000,)
    assert samples.dtype == np.float32
    assert samples.flags.c_contiguous
    assert max(reads) == 1_000
    assert len(reads) == 24


def test_a_header_that_understates_the_length_decodes_only_what_it_declares() -> None:
    """libsndfile never reads past the frames the header gives, so a lying FLAC header (20 s of
    noise declared as 1 s) cannot make the decoder hold more than the length that was checked."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    sf.write(buf, (rng.random(8_000 * 20) * 0.1).astype(np.float32), 8_000, format="FLAC")
    data = bytearray(buf.getvalue())
    packed = int.from_bytes(data[18:26], "big")  # STREAMINFO: rate, channels, bits, samples
    data[18:26] = ((packed & ~((1 << 36) - 1)) | 8_000).to_bytes(8, "big")
    assert audio_seconds(bytes(data)) == pytest.approx(1.0)
    samples, _ = decode_audio(bytes(data))
    assert len(samples) == 8_000


def test_a_file_without_a_declared_length_or_with_an_odd_rate_is_a_clear_400() -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(8_000, np.float32), 8_000, format="FLAC")
    data = bytearray(buf.getvalue())
    packed = int.from_bytes(data[18:26], "big")
    data[18:26] = (packed & ~((1 << 36) - 1)).to_bytes(8, "big")  # total samples: unknown
    assert declared_seconds(bytes(data)) is None
    Limits().check_audio(bytes(data), None)  # admitted: the decoder refuses it, with the reason
    with pytest.raises(InvalidRequestError, match="does not declare its length"):
        decode_audio(bytes(data))
    for rate in (500_000, 50_003):  # beyond the input limit; no integer factor to <= 48 kHz
        fast = _encode(0.5, rate, "WAV", "PCM_16")
        with pytest.raises(InvalidRequestError, match=f"{rate} Hz; supported: 1000 to 48000 Hz"):
            decode_audio(fast)
    with pytest.raises(InvalidRequestError, match="WAV, FLAC, OGG, MP3"):
        decode_audio(b"not audio at all")
