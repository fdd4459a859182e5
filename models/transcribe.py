"""ModelType.TRANSCRIBE: Whisper graphs served as a :class:`~imagine_edge.models.base.Transcriber`.

Owns the path from audio bytes to text: decoding and log-mel features (``models/audio.py``),
30-second windows, the encoder call per window (which also yields every decoder layer's
cross-attention K/V), greedy decoding with our own self-attention KV cache, Whisper's logit rules
(``models/whisper_rules.py``: suppressed tokens, blank suppression at the start, timestamp pairing
and monotonicity, timestamp-vs-text probability), and the stitching of windows at the predicted
timestamps, as OpenAI's reference ``transcribe`` does.

Invariants:
- The decoder cache is per call and per window: nothing is shared between requests.
- Windows advance by at least one timestamp step, so decoding always terminates; each window
  generates at most ``MAX_WINDOW_TOKENS`` tokens.
- ``cancel`` is checked before every decoder step; a cancelled call returns the text so far.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from imagine_edge.models.audio import HOP_LENGTH, SAMPLE_RATE, load_audio, log_mel
from imagine_edge.models.catalog import prepared
from imagine_edge.models.store import Manifest
from imagine_edge.models.whisper_rules import WhisperSpecials, apply_timestamp_rules, log_softmax
from imagine_edge.runtime.graph_session import LoadedSession
from imagine_edge.runtime.session import shared_factory
from imagine_edge.runtime.targets import Target, place, target_from_env
from imagine_edge.sdk.types import ModelType

__all__ = [
    "WHISPER_BASE",
    "WHISPER_TINY_EN",
    "Segment",
    "WhisperTranscriber",
    "load_transcriber",
    "load_whisper_base",
    "load_whisper_tiny_en",
]

log = logging.getLogger(__name__)

WHISPER_TINY_EN: Final = "whisper-tiny-en"
WHISPER_BASE: Final = "whisper-base"
N_FRAMES: Final = 3000  # mel frames in a 30-second window
WINDOW_SAMPLES: Final = N_FRAMES * HOP_LENGTH
FRAMES_PER_TIMESTAMP: Final = 2  # a timestamp step is 20 ms, two 10 ms mel frames
SECONDS_PER_TIMESTAMP: Final = 0.02
MAX_WINDOW_TOKENS: Final = 224  # Whisper's sample_len: half the text context
NO_SPEECH_THRESHOLD: Final = 0.6
LOGPROB_THRESHOLD: Final = -1.0
# CPU graph precision -> the role suffix of its graphs in the "cpu" variant.
PRECISIONS: Final = {"int8": "", "float32": "_float"}
MASKED: Final = np.float32(-1e9)

Floats = npt.NDArray[np.float32]
Cross = dict[str, Floats]  # encoder outputs: cross_k_i [H, d, 1500], cross_v_i [H, 1500, d]
Past = list[Floats]  # the self-attention cache: past_k_0, past_v_0, past_k_1, ...


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of transcribed speech, with its start and end in seconds."""

    start: float
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class _Window:
    tokens: list[int]  # sampled tokens, prompt excluded, end-of-text excluded
    avg_logprob: float
    no_speech_prob: float


class WhisperTranscriber:
    """A prepared Whisper model: encoder (CPU or QNN) and KV-cache decoder (CPU)."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        variant: str = "cpu",
        language: str | None = None,
        precision: str = "int8",
    ) -> None:
        """``variant`` "qnn" puts the encoder on the HTP; ``precision`` picks the CPU graphs:
        "int8" (default, dynamic quantization) or "float32" (the reference export)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.manifest = manifest
        facts = json.loads((manifest.root / "whisper.json").read_text(encoding="utf-8"))
        self.specials = WhisperSpecials(facts)
        self.n_mels: int = facts["n_mels"]
        self.multilingual: bool = facts["multilingual"]
        if language is not None and language not in self.specials.languages:
            valid = ", ".join(sorted(self.specials.languages)) or "none (English-only model)"
            raise ValueError(f"language {language!r} not in this model's languages: {valid}")
        self.language = language
        self.tokenizer = Tokenizer.from_file(str(manifest.tokenizer))
        cpu = manifest.variant("cpu").graphs
        suffix = PRECISIONS[precision]
        encoder = cpu[f"encoder{suffix}"].path
        target: Target = "cpu"
        if variant != "cpu":
            encoder = manifest.variant(variant).graphs["encoder"].path
            target = "qnn" if manifest.variant(variant).ep == "qnn" else "cpu"
        decoder = cpu[f"decoder{suffix}"].path
        factory = shared_factory()
        self._encoder: LoadedSession | None = factory.create(encoder, target=target)
        try:
            self._decoder: LoadedSession | None = factory.create(decoder, target="cpu")
        except BaseException:
            self._encoder.close()
            raise
        self._files = [encoder, decoder]
        # Why the encoder is not on QNN, when target "auto" fell back to the CPU graphs.
        self.fallback: str | None = None

    # ------------------------------------------------------------------ LoadedModel

    @property
    def execution_provider(self) -> str:
        enc, dec = self._sessions()
        fallback = f" (fallback: {self.fallback})" if self.fallback else ""
        if enc.provider == dec.provider and not enc.fallback_reason:
            return enc.provider + fallback
        return f"encoder: {enc.describe()}; decoder: {dec.describe()}{fallback}"

    def resident_bytes(self) -> int:
        # The sessions hold the weights once each; the graph files are their size.
        return sum(p.stat().st_size for p in self._files if p.is_file())

    def close(self) -> None:
        for s in (self._encoder, self._decoder):
            if s is not None:
                s.close()
        self._encoder = self._decoder = None

    def _sessions(self) -> tuple[LoadedSession, LoadedSession]:
        if self._encoder is None or self._decoder is None:
            raise RuntimeError(f"{self.manifest.name} is closed")
        return self._encoder, self._decoder

    # ------------------------------------------------------------------ Transcriber

    def transcribe(self, audio: bytes, cancel: threading.Event) -> str:
        """The text spoken in ``audio`` (WAV, FLAC, OGG or MP3 bytes)."""
        return self.transcribe_samples(load_audio(audio), cancel)

    def transcribe_samples(self, samples: Floats, cancel: threading.Event | None = None) -> str:
        """The text of 16 kHz mono ``samples``."""
        segments = self.segments(samples, cancel or threading.Event())
        return "".join(s.text for s in segments).strip()

    def segments(self, samples: Floats, cancel: threading.Event) -> list[Segment]:
        """Timestamped segments of 16 kHz mono ``samples``, window after window."""
        mel = log_mel(samples, self.n_mels, pad_samples=WINDOW_SAMPLES)
        content = len(samples) // HOP_LENGTH
        out: list[Segment] = []
        seek = 0
        prompt: list[int] | None = None
        while seek < content and not cancel.is_set():
            size = min(N_FRAMES, content - seek)
            cross = self._encode(mel[:, seek : seek + N_FRAMES])
            if prompt is None:
                prompt = self._prompt(cross)
            window = self._decode(prompt, cross, cancel)
            offset = seek * HOP_LENGTH / SAMPLE_RATE
            silent = (
                window.no_speech_prob > NO_SPEECH_THRESHOLD
                and window.avg_logprob < LOGPROB_THRESHOLD
            )
            if silent:
                seek += size
                continue
            segments, advance = self._split(window.tokens, offset, size)
            out.extend(segments)
            seek += advance
        return out

    # ------------------------------------------------------------------ internals

    def _encode(self, mel: Floats) -> Cross:
        """The cross-attention K/V of one 30-second window, by decoder input name."""
        enc, _ = self._sessions()
        outputs = enc.run({"mel": mel[None]})
        return dict(zip(enc.output_names, outputs, strict=True))

    def _step(self, tokens: Sequence[int], past: Past, cross: Cross) -> tuple[Floats, Past]:
        """Decode ``tokens`` after the cached ``past``; the last logits and the grown cache."""
        _, dec = self._sessions()
        p, t = past[0].shape[2], len(tokens)
        mask = np.zeros((t, p + t), np.float32)
        mask[:, p:] = np.triu(np.full((t, t), MASKED, np.float32), 1)
        feed = {
            "input_ids": np.asarray([tokens], np.int64),
            "positions": np.arange(p, p + t, dtype=np.int64),
            "mask": mask,
            **cross,
        }
        for i in range(len(past) // 2):
            feed[f"past_k_{i}"], feed[f"past_v_{i}"] = past[2 * i], past[2 * i + 1]
        logits, *present = dec.run(feed)
        return logits[0], present

    def _empty_cache(self, cross: Cross) -> Past:
        """A cache of zero positions: keys [H, d, 0] and values [H, 0, d] per layer."""
        heads, dim, _ = cross["cross_k_0"].shape
        layers = len(cross) // 2
        k, v = np.zeros((heads, dim, 0), np.float32), np.zeros((heads, 0, dim), np.float32)
        return [k, v] * layers

    def _prompt(self, cross: Cross) -> list[int]:
        """The start-of-transcript sequence; multilingual models detect the language here."""
        s = self.specials
        if not self.multilingual:
            return [s.sot]
        language = self.language or self._language(cross)
        assert s.transcribe is not None
        return [s.sot, s.languages[language], s.transcribe]

    def _language(self, cross: Cross) -> str:
        s = self.specials
        logits, _ = self._step([s.sot], self._empty_cache(cross), cross)
        codes = list(s.languages)
        ids = np.array([s.languages[c] for c in codes])
        language = codes[int(np.argmax(logits[ids]))]
        log.info("%s: detected language %r", self.manifest.name, language)
        return language

    def detect_language(self, samples: Floats) -> str | None:
        """The language code spoken in the first 30 s of 16 kHz ``samples`` (None for an
        English-only model)."""
        if not self.multilingual:
            return None
        mel = log_mel(samples, self.n_mels, pad_samples=WINDOW_SAMPLES)
        return self._language(self._encode(mel[:, :N_FRAMES]))

    def _decode(self, prompt: list[int], cross: Cross, cancel: threading.Event) -> _Window:
        s = self.specials
        past = self._empty_cache(cross)
        no_speech = 0.0
        logits = np.empty(0, np.float32)
        for i, token in enumerate(prompt):  # one at a time: no-speech is read after <|sot|>
            logits, past = self._step([token], past, cross)
            if i == 0 and s.no_speech is not None:
                no_speech = float(np.exp(log_softmax(logits)[s.no_speech]))
        sampled: list[int] = []
        total_logprob = 0.0
        while len(sampled) < MAX_WINDOW_TOKENS and not cancel.is_set():
            logits = logits.astype(np.float32, copy=True)
            apply_timestamp_rules(logits, sampled, s, first=not sampled)
            token = int(np.argmax(logits))
            total_logprob += float(log_softmax(logits)[token])
            if token == s.eot:
                break
            sampled.append(token)
            if past[0].shape[2] + 1 >= self.manifest.context_length:
                break  # the decoder's learned positions end at n_text_ctx (448)
            logits, past = self._step([token], past, cross)
        return _Window(sampled, total_logprob / (len(sampled) + 1), no_speech)

    def _split(self, tokens: list[int], offset: float, size: int) -> tuple[list[Segment], int]:
        """Cut a window's tokens into segments at timestamp pairs; how far to seek (frames)."""
        ts = self.specials.timestamp_begin
        is_ts = [t >= ts for t in tokens]
        single_ending = is_ts[-2:] == [False, True]
        cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
        segments: list[Segment] = []
        if cuts:
            if single_ending:
                cuts.append(len(tokens))
            last = 0
            for cut in cuts:
                segments.append(self._segment(tokens[last:cut], offset))
                last = cut
            if single_ending:  # no speech after the last timestamp: the whole window is done
                return segments, size
            advance = (tokens[last - 1] - ts) * FRAMES_PER_TIMESTAMP
            return segments, advance if advance > 0 else size
        stamps = [t for t in tokens if t >= ts]
        end = offset + size * HOP_LENGTH / SAMPLE_RATE
        if stamps and stamps[-1] != ts:
            end = offset + (stamps[-1] - ts) * SECONDS_PER_TIMESTAMP
        text = self._text(tokens)
        return ([Segment(offset, end, text)] if text.strip() else []), size

    def _segment(self, tokens: list[int], offset: float) -> Segment:
        ts = self.specials.timestamp_begin
        start = offset + (tokens[0] - ts) * SECONDS_PER_TIMESTAMP if tokens[0] >= ts else offset
        end = offset + (tokens[-1] - ts) * SECONDS_PER_TIMESTAMP if tokens[-1] >= ts else start
        return Segment(start, end, self._text(tokens))

    def _text(self, tokens: list[int]) -> str:
        text: str = self.tokenizer.decode([t for t in tokens if t < self.specials.eot])
        return text


def load_transcriber(manifest: Manifest) -> WhisperTranscriber:
    """The catalog loader of Whisper models: ``manifest``'s model, configured from the environment.

    ``IMAGINE_EDGE_TRANSCRIBE_TARGET`` = cpu (default) | qnn | auto puts the encoder on the QNN
    HTP (on x86-64 a simulator, minutes per 30-second window: opt-in); for qnn the QNN variant is
    prepared on first use. ``IMAGINE_EDGE_TRANSCRIBE_PRECISION`` = int8 (default) | float32
    picks the CPU graphs.
    """
    target = target_from_env(ModelType.TRANSCRIBE)
    precision = os.environ.get("IMAGINE_EDGE_TRANSCRIBE_PRECISION", "int8")
    if target == "qnn" and "qnn" not in manifest.variants:
        manifest = prepared(manifest.name, ["cpu", "qnn"])

    def on(variant: str) -> WhisperTranscriber:
        return WhisperTranscriber(manifest, variant=variant, precision=precision)

    has_qnn = target != "cpu" and "qnn" in manifest.variants
    placed = place(
        target, manifest.name, qnn=(lambda: on("qnn")) if has_qnn else None, cpu=lambda: on("cpu")
    )
    placed.value.fallback = placed.fallback
    return placed.value


def _load(name: str, variant: str) -> WhisperTranscriber:
    manifest = prepared(name, [variant] if variant == "cpu" else ["cpu", variant])
    return WhisperTranscriber(manifest, variant=variant)


def load_whisper_tiny_en(variant: str = "cpu") -> WhisperTranscriber:
    """Whisper tiny.en from the model store (prepared on first use)."""
    return _load(WHISPER_TINY_EN, variant)


def load_whisper_base(variant: str = "cpu") -> WhisperTranscriber:
    """Multilingual Whisper base from the model store (prepared on first use)."""
    return _load(WHISPER_BASE, variant)
