"""Audio in: container sniffing, decoding, resampling to 16 kHz, and Whisper's log-mel features.

Owns everything between the bytes of an uploaded file and the encoder's input:

- :func:`sniff_format` tells WAV, FLAC, OGG and MP3 apart from their first bytes (never from a
  file name); anything else is rejected with a message naming the accepted formats.
- :func:`audio_seconds` reads the duration a container declares (frames and sample rate, from
  libsndfile's header parse, without decoding), so a long file compressed into few bytes (three
  hours of FLAC silence is 272 KB) is refused before any sample is decoded.
- :func:`decode_audio` decodes with ``soundfile`` (libsndfile; its wheels bundle MP3 support) in
  blocks of at most :data:`BLOCK_SAMPLES` samples, each mixed down to mono float32 as it is read,
  never more frames than the container declares; and :func:`resample` converts to 16 kHz with
  ``scipy.signal.resample_poly`` (polyphase, Kaiser window).
- :func:`log_mel` is Whisper's front end in numpy: periodic Hann window of 400 samples, hop 160,
  centred reflect-padded STFT, power spectrum, Slaney mel filterbank (:func:`mel_filters`),
  ``log10`` clamped at 1e-10, floored at 8 below the maximum and scaled as ``(x + 4) / 4``.

Invariants: every array returned is C-contiguous float32; sample rates returned are ints in
[:data:`MIN_RATE`, :data:`MAX_RATE`] (a file above it, up to :data:`MAX_INPUT_RATE`, is decimated
while it decodes); decoding never holds more than the mono result plus one
block, and never decodes audio longer than ``max_seconds`` (413, :class:`PayloadTooLargeError`).
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt

from imagine_edge.sdk.errors import InvalidRequestError, PayloadTooLargeError

if TYPE_CHECKING:
    import soundfile

__all__ = [
    "BLOCK_SAMPLES",
    "HOP_LENGTH",
    "MAX_INPUT_RATE",
    "MAX_RATE",
    "MAX_SECONDS",
    "MIN_RATE",
    "N_FFT",
    "SAMPLE_RATE",
    "AudioFormat",
    "audio_seconds",
    "decimation",
    "declared_seconds",
    "decode_audio",
    "load_audio",
    "log_mel",
    "mel_filters",
    "resample",
    "sniff_format",
]

SAMPLE_RATE: Final = 16_000
N_FFT: Final = 400
HOP_LENGTH: Final = 160
# The longest audio decoded (the server's default limit, sdk/limits.py, is the same 30 minutes).
MAX_SECONDS: Final = 30 * 60.0
# Samples (frames times channels) decoded at a time: 4 MiB of float32.
BLOCK_SAMPLES: Final = 1 << 20
# Sample rates: 30 minutes at 48 kHz decode to 330 MiB of mono float32 before resampling, and
# the resampling filter grows with the ratio of the rate to 16 kHz. A file above MAX_RATE (96 or
# 192 kHz studio audio) is low-pass filtered and decimated by an integer factor to at most
# MAX_RATE block by block as it decodes (a stateful FIR, so the blocks join seamlessly), so
# memory stays that of 48 kHz; beyond MAX_INPUT_RATE, or where no integer factor lands in
# [SAMPLE_RATE, MAX_RATE], it is refused with the rate.
MIN_RATE: Final = 1_000
MAX_RATE: Final = 48_000
MAX_INPUT_RATE: Final = 384_000
_DECIMATION_TAPS: Final = 127
# What libsndfile reports as the frame count of a file that does not declare its length.
_UNKNOWN_FRAMES: Final = 2**63 - 1

AudioFormat = Literal["WAV", "FLAC", "OGG", "MP3"]
Floats = npt.NDArray[np.float32]


def _id3_length(data: bytes) -> int:
    """Bytes taken by a leading ID3v2 tag (header + syncsafe size + footer), else 0."""
    if len(data) < 10 or data[:3] != b"ID3":
        return 0
    size = 0
    for b in data[6:10]:
        size = (size << 7) | (b & 0x7F)
    footer = 10 if data[5] & 0x10 else 0
    return 10 + size + footer


def sniff_format(data: bytes) -> AudioFormat:
    """The container of ``data`` from its magic bytes; InvalidRequestError when unsupported."""
    if len(data) >= 12 and data[:4] in (b"RIFF", b"RIFX", b"RF64") and data[8:12] == b"WAVE":
        return "WAV"
    if data[:4] == b"OggS":
        return "OGG"
    skip = _id3_length(data)  # FLAC and MP3 files may both start with an ID3 tag
    body = data[skip:]
    if body[:4] == b"fLaC":
        return "FLAC"
    if skip or (len(body) >= 2 and body[0] == 0xFF and body[1] & 0xE0 == 0xE0):
        return "MP3"
    head = data[:12].hex(" ") or "no bytes"
    raise InvalidRequestError(
        f"audio format not recognised (first bytes: {head}); supported: WAV, FLAC, OGG, MP3"
    )


def _open(data: bytes, fmt: AudioFormat) -> soundfile.SoundFile:
    import soundfile as sf  # loaded on first use

    try:
        return sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise InvalidRequestError(f"could not decode the {fmt} audio: {e}") from e


def _declared(f: soundfile.SoundFile, fmt: AudioFormat) -> tuple[int, int]:
    """(frames, rate) the container declares; 400 when it declares no length or a bad rate."""
    frames, rate = int(f.frames), int(f.samplerate)
    if frames >= _UNKNOWN_FRAMES or frames < 0:
        raise InvalidRequestError(
            f"the {fmt} audio does not declare its length (a streamed file?); re-encode it "
            "into a file whose header gives the number of samples"
        )
    if not MIN_RATE <= rate <= MAX_INPUT_RATE or decimation(rate) is None:
        raise InvalidRequestError(
            f"the {fmt} audio's sample rate is {rate} Hz; supported: {MIN_RATE} to {MAX_RATE} Hz, "
            f"and above that up to {MAX_INPUT_RATE} Hz a rate that an integer divides into "
            f"{SAMPLE_RATE} to {MAX_RATE} Hz (88200, 96000, 176400, 192000, ...)"
        )
    return frames, rate


def decimation(rate: int) -> int | None:
    """The integer factor a ``rate`` above :data:`MAX_RATE` is decimated by before resampling
    (1 at or below it); None when no factor gives a rate in [SAMPLE_RATE, MAX_RATE]."""
    if rate <= MAX_RATE:
        return 1
    for k in range(-(-rate // MAX_RATE), rate // SAMPLE_RATE + 1):
        if rate % k == 0:
            return k
    return None


class _Decimator:
    """Low-pass (windowed-sinc FIR, cut at 0.45 of the output rate) then keep every ``k``-th
    sample, over consecutive blocks: the filter state and the sample phase carry across them."""

    def __init__(self, k: int) -> None:
        from scipy.signal import firwin

        self.k = k
        self.taps = firwin(_DECIMATION_TAPS, 0.9 / k).astype(np.float32)
        self.state = np.zeros(len(self.taps) - 1, np.float32)
        # The filter delays by half its length: the first sample kept is the one aligned with
        # input sample 0, and flush() pushes the last ones out, so no time shift is left.
        self.delay = (len(self.taps) - 1) // 2
        self.phase = self.delay  # index, in the next block, of the next sample kept

    def __call__(self, block: Floats) -> Floats:
        from scipy.signal import lfilter

        filtered, self.state = lfilter(self.taps, 1.0, block, zi=self.state)
        kept = filtered[self.phase :: self.k]
        if self.phase >= len(block):  # still inside the filter's delay
            self.phase -= len(block)
        else:
            self.phase = (self.phase - len(block)) % self.k
        return np.asarray(kept, np.float32)

    def flush(self) -> Floats:
        """The samples still in the filter (those of the last ``delay`` input samples)."""
        return self(np.zeros(self.delay, np.float32))


def _too_long(seconds: float, max_seconds: float) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"audio is {seconds:.1f} s long, the limit is {max_seconds:.0f} s")


def audio_seconds(data: bytes) -> float:
    """The duration ``data``'s container declares (its frames over its sample rate), read from
    the header without decoding; InvalidRequestError when it is not audio we can decode."""
    fmt = sniff_format(data)
    with _open(data, fmt) as f:
        frames, rate = _declared(f, fmt)
    return frames / rate


def declared_seconds(data: bytes) -> float | None:
    """:func:`audio_seconds`, or None when ``data`` is not audio we can read (the decoder then
    refuses it with the reason)."""
    try:
        return audio_seconds(data)
    except InvalidRequestError:
        return None


def decode_audio(data: bytes, max_seconds: float = MAX_SECONDS) -> tuple[Floats, int]:
    """Decode ``data`` to mono float32 samples in [-1, 1] and their sample rate.

    The declared duration is checked against ``max_seconds`` before decoding (413), and the
    decoded frames are counted as they come, so no file yields more than that.
    """
    import soundfile as sf

    fmt = sniff_format(data)
    with _open(data, fmt) as f:
        frames, rate = _declared(f, fmt)
        if frames / rate > max_seconds:
            raise _too_long(frames / rate, max_seconds)
        wanted = min(frames, int(max_seconds * rate))
        channels = max(1, int(f.channels))
        block = max(1, BLOCK_SAMPLES // channels)
        k = decimation(rate) or 1
        reduce = _Decimator(k) if k > 1 else None
        mono = np.empty(-(-wanted // k), np.float32)
        read = done = 0
        try:
            while read < wanted:
                part = f.read(min(block, wanted - read), dtype="float32", always_2d=True)
                if not len(part):
                    break
                read += len(part)
                samples = part.mean(axis=1) if channels > 1 else part[:, 0]
                if reduce is not None:
                    samples = reduce(samples)
                mono[done : done + len(samples)] = samples
                done += len(samples)
            if reduce is not None and read:
                tail = reduce.flush()[: len(mono) - done]
                mono[done : done + len(tail)] = tail
                done += len(tail)
        except (sf.LibsndfileError, RuntimeError, TypeError) as e:
            raise InvalidRequestError(f"could not decode the {fmt} audio: {e}") from e
    if done == 0:
        raise InvalidRequestError(f"the {fmt} audio has no samples")
    return np.ascontiguousarray(mono[:done]), rate // k


def resample(samples: Floats, rate: int, target: int = SAMPLE_RATE) -> Floats:
    """``samples`` at ``rate`` Hz resampled to ``target`` Hz (polyphase FIR filtering)."""
    if rate <= 0 or target <= 0:
        raise ValueError(f"sample rates must be positive, got {rate} -> {target}")
    if rate == target:
        return np.ascontiguousarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    out = resample_poly(samples, target // g, rate // g)
    return np.ascontiguousarray(out, dtype=np.float32)


def load_audio(data: bytes, max_seconds: float = MAX_SECONDS) -> Floats:
    """The bytes of an audio file as mono float32 samples at 16 kHz (at most ``max_seconds``)."""
    samples, rate = decode_audio(data, max_seconds)
    return resample(samples, rate)


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    # Slaney's scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    mel = hz / f_sp
    above = hz >= min_log_hz
    mel[above] = min_log_mel + np.log(hz[above] / min_log_hz) / logstep
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0
    hz = mel * f_sp
    above = mel >= min_log_mel
    hz[above] = min_log_hz * np.exp(logstep * (mel[above] - min_log_mel))
    return hz


def mel_filters(n_mels: int = 80, rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> Floats:
    """Slaney-normalised triangular mel filters ``[n_mels, n_fft // 2 + 1]`` (librosa's default,
    which Whisper was trained with)."""
    if n_mels < 1:
        raise ValueError(f"n_mels must be >= 1, got {n_mels}")
    fft_hz = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(0.0, float(_hz_to_mel(np.array([rate / 2]))[0]), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per filter
    return np.ascontiguousarray(weights, dtype=np.float32)


_FILTERS: dict[int, Floats] = {}
_FRAMES_PER_BLOCK: Final = 3000


def log_mel(samples: Floats, n_mels: int = 80, pad_samples: int = 0) -> Floats:
    """Whisper's log-mel spectrogram ``[n_mels, (len(samples) + pad_samples) // 160]``.

    ``samples`` are 16 kHz mono; ``pad_samples`` zeros are appended first (Whisper appends 30 s
    so every window of the audio has 3000 frames computed from real context).
    """
    audio = np.asarray(samples, dtype=np.float32)
    if pad_samples:
        audio = np.concatenate([audio, np.zeros(pad_samples, np.float32)])
    if audio.size <= N_FFT // 2:
        raise InvalidRequestError(f"audio too short: {audio.size} samples at 16 kHz, need > 200")
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:-1]
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)
    filters = _FILTERS.get(n_mels)
    if filters is None:
        filters = _FILTERS.setdefault(n_mels, mel_filters(n_mels))
    mel = np.empty((n_mels, len(frames)), np.float32)
    # Blocks of frames: the windowed frames and their spectrum are ~5 KB a frame, so an hour of
    # audio at once would take gigabytes; the mel spectrogram itself is 320 bytes a frame.
    for start in range(0, len(frames), _FRAMES_PER_BLOCK):
        block = frames[start : start + _FRAMES_PER_BLOCK] * window
        spectrum = np.fft.rfft(block, axis=-1)
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
        mel[:, start : start + len(block)] = filters @ power.T
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    return np.ascontiguousarray((logs + 4.0) / 4.0, dtype=np.float32)
