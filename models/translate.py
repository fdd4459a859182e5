"""ModelType.TRANSLATE: Bergamot tiny Marian graphs served as a ``Translator`` (models/base.py).

Owns the path from a :class:`TranslateRequest` to chunks of translated text: the split into lines
and sentences (``models/sentences.py``; each translated on its own, as Bergamot does), SentencePiece
tokenization (the package's ``tokenizer.json`` through ``tokenizers``), the encoder call per
sentence (which also yields the decoder's cross-attention K/V), and greedy decoding in which the
SSRU cell states are the whole decoder cache. Model names say the language pair:
``bergamot-en-pt-tiny`` and ``bergamot-pt-en-tiny``.

Bounds: a request's source is at most :data:`MAX_SOURCE_CHARS` characters (413 beyond), and a
sentence longer than :data:`MAX_SEGMENT_TOKENS` source tokens is cut into segments of at most
that many, each translated on its own (Bergamot's ``max-length-break`` does the same), cut before
a word where one is near the limit. The encoder's attention grows with the square of the source
length, so a 15 KB text without a full stop, one sentence of ~3,000 tokens, made onnxruntime grow
its arena by 1.27 GB that it kept; segments bound every session call's working memory.

Invariants:
- A segment decodes at most ``ceil(2.5 * source tokens)`` tokens (Marian's max-length-factor);
  ``max_tokens`` caps the whole request, which then ends with finish_reason ``length``.
- Chunks carry text increments whose concatenation is the final translation; the last chunk
  has the finish reason and the token counts.
- ``cancel`` is checked before every decoder step; a cancelled request ends promptly.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from imagine_edge.models.base import GenerationChunk, GenerationStats
from imagine_edge.models.catalog import prepared
from imagine_edge.models.prepare.bergamot import QNN_MASK, QNN_SOURCE_LENGTH
from imagine_edge.models.sentences import split_sentences
from imagine_edge.models.store import Manifest
from imagine_edge.runtime.graph_session import LoadedSession
from imagine_edge.runtime.session import shared_factory
from imagine_edge.runtime.targets import place, target_from_env
from imagine_edge.sdk.errors import InvalidRequestError, PayloadTooLargeError
from imagine_edge.sdk.types import FinishReason, ModelType, TranslateRequest

__all__ = [
    "BERGAMOT_EN_PT",
    "BERGAMOT_PT_EN",
    "MAX_SEGMENT_TOKENS",
    "MAX_SOURCE_CHARS",
    "BergamotTranslator",
    "check_request",
    "load_bergamot_en_pt",
    "load_bergamot_pt_en",
    "load_translator",
    "split_sentences",
]

log = logging.getLogger(__name__)

BERGAMOT_EN_PT: Final = "bergamot-en-pt-tiny"
BERGAMOT_PT_EN: Final = "bergamot-pt-en-tiny"
MASKED: Final = np.float32(-1e9)
# The longest source of one request, in characters, and of one encoder call, in tokens.
MAX_SOURCE_CHARS: Final = 20_000
MAX_SEGMENT_TOKENS: Final = 128
_WORD_START: Final = "\u2581"  # SentencePiece's mark of a piece that starts a word
Floats = npt.NDArray[np.float32]


def check_request(request: TranslateRequest) -> None:
    """The bounds every translator holds a request to: max_tokens >= 1, the source at most
    MAX_SOURCE_CHARS characters (413 beyond)."""
    if request.max_tokens is not None and request.max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be >= 1, got {request.max_tokens}")
    if len(request.prompt) > MAX_SOURCE_CHARS:
        raise PayloadTooLargeError(
            f"the text to translate is {len(request.prompt)} characters, the limit is "
            f"{MAX_SOURCE_CHARS}; send it in parts"
        )


@dataclass(slots=True)
class _Budget:
    """Tokens left for the whole request (``None``: no cap)."""

    left: int | None

    def take(self) -> bool:
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True


class BergamotTranslator:
    """A prepared Bergamot direction: encoder and SSRU decoder-step graphs."""

    def __init__(self, manifest: Manifest, *, variant: str = "cpu") -> None:
        self.manifest = manifest
        facts = json.loads((manifest.root / "marian.json").read_text(encoding="utf-8"))
        self.vocab: int = facts["vocab_size"]
        self.eos: int = facts["eos_id"]
        self.layers: int = facts["decoder_layers"]
        self.dim: int = facts["dim"]
        self.length_factor: float = facts["max_length_factor"]
        self._shortlist: tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int32]] | None = None
        if facts.get("shortlist"):
            with np.load(manifest.root / facts["shortlist"]) as npz:
                self._shortlist = (facts["shortlist_first"], npz["offsets"], npz["lists"])
        self.tokenizer = Tokenizer.from_file(str(manifest.tokenizer))
        cpu = manifest.variant("cpu").graphs
        factory = shared_factory()
        self._encoder: LoadedSession | None = factory.create(cpu["encoder"].path, target="cpu")
        self._decoder: LoadedSession | None = factory.create(cpu["decoder"].path, target="cpu")
        self._files = [cpu["encoder"].path, cpu["decoder"].path]
        # The QNN variant adds a static-shape encoder for the HTP; sources longer than its
        # length still go through the CPU encoder.
        self._npu_encoder: LoadedSession | None = None
        # Why the encoder is not on QNN, when target "auto" fell back to the CPU graphs.
        self.fallback: str | None = None
        if variant != "cpu":
            npu = manifest.variant(variant).graphs["encoder"].path
            try:
                self._npu_encoder = factory.create(npu, target="qnn")
            except BaseException:
                self.close()
                raise
            self._files.append(npu)

    # ------------------------------------------------------------------ LoadedModel

    @property
    def execution_provider(self) -> str:
        enc, dec = self._sessions()
        if self._npu_encoder is None:
            return enc.provider + (f" (fallback: {self.fallback})" if self.fallback else "")
        return (
            f"encoder: {self._npu_encoder.describe()} (sources up to {QNN_SOURCE_LENGTH} tokens; "
            f"longer on {enc.provider}); decoder: {dec.describe()}"
        )

    def resident_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._files if p.is_file())

    def close(self) -> None:
        for s in (self._encoder, self._decoder, self._npu_encoder):
            if s is not None:
                s.close()
        self._encoder = self._decoder = self._npu_encoder = None

    def _sessions(self) -> tuple[LoadedSession, LoadedSession]:
        if self._encoder is None or self._decoder is None:
            raise RuntimeError(f"{self.manifest.name} is closed")
        return self._encoder, self._decoder

    # ------------------------------------------------------------------ Translator

    def translate(
        self, request: TranslateRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        """Chunks of the translation of ``request.prompt``; see the module invariants."""
        check_request(request)
        budget = _Budget(request.max_tokens)
        stats = GenerationStats()
        finish = FinishReason.stop
        separator = ""
        for line_no, line in enumerate(request.prompt.split("\n")):
            if line_no:
                separator = "\n"
            sources = (src for sentence in split_sentences(line) for src in self.segments(sentence))
            for source in sources:
                pieces, reason = self._sentence(source, budget, stats, cancel)
                first = True
                for piece in pieces:
                    yield GenerationChunk(text=(separator + piece) if first else piece)
                    first, separator = False, ""
                if not first:
                    separator = " "
                if reason is not None:
                    yield GenerationChunk(finish_reason=reason, stats=stats)
                    return
        yield GenerationChunk(finish_reason=finish, stats=stats)

    def translate_text(self, text: str) -> str:
        """The whole translation of ``text`` (a convenience over :meth:`translate`)."""
        chunks = self.translate(_request(self.manifest.name, text), threading.Event())
        return "".join(c.text for c in chunks)

    # ------------------------------------------------------------------ decoding

    def encode(self, sentence: str) -> list[int]:
        """Source ids of one sentence, ending with ``</s>``."""
        ids: list[int] = self.tokenizer.encode(sentence, add_special_tokens=False).ids
        return [*ids, self.eos]

    def segments(self, sentence: str) -> list[list[int]]:
        """Source ids of ``sentence`` in segments of at most :data:`MAX_SEGMENT_TOKENS` (each
        ending with ``</s>``), cut before the last word start in a segment's second half, else
        at the limit."""
        encoding = self.tokenizer.encode(sentence, add_special_tokens=False)
        ids, pieces = list(encoding.ids), list(encoding.tokens)
        room = MAX_SEGMENT_TOKENS - 1  # the </s> of each segment
        out: list[list[int]] = []
        while len(ids) > room:
            cut = next(
                (i for i in range(room, room // 2, -1) if pieces[i].startswith(_WORD_START)), room
            )
            out.append([*ids[:cut], self.eos])
            ids, pieces = ids[cut:], pieces[cut:]
        out.append([*ids, self.eos])
        return out

    def _sentence(
        self,
        source: list[int],
        budget: _Budget,
        stats: GenerationStats,
        cancel: threading.Event,
    ) -> tuple[list[str], FinishReason | None]:
        """Translate one segment's source ids; text pieces, and a finish reason when the
        request must end."""
        stats.prompt_tokens += len(source)
        t0 = time.perf_counter()
        cross = self._encode([source])
        shortlist = self.candidates([source])
        stats.prefill_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        tokens: list[int] = []
        pieces: list[str] = []
        emitted = ""
        reason: FinishReason | None = None
        for token in self._greedy(cross, shortlist, len(source), cancel):
            if not budget.take():
                reason = FinishReason.length
                break
            tokens.append(token)
            text = self.tokenizer.decode(tokens)
            if text.startswith(emitted) and len(text) > len(emitted):
                pieces.append(text[len(emitted) :])
                emitted = text
        if cancel.is_set():
            reason = FinishReason.stop
        final = self.tokenizer.decode(tokens)
        if final != emitted:  # a rare non-prefix re-decoding: send the correction at the end
            pieces.append(final[len(emitted) :] if final.startswith(emitted) else "")
        stats.completion_tokens += len(tokens)
        stats.decode_seconds += time.perf_counter() - t0
        return [p for p in pieces if p], reason

    def candidates(self, sources: Sequence[Sequence[int]]) -> npt.NDArray[np.int64]:
        """Sorted target ids the decoder scores: Marian's lexical shortlist of the sources (the
        most frequent words plus each source word's aligned translations), else every id."""
        if self._shortlist is None:
            return np.arange(self.vocab, dtype=np.int64)
        first, offsets, lists = self._shortlist
        words = np.unique(np.concatenate([np.asarray(s, np.int64) for s in sources]))
        parts = [np.arange(first, dtype=np.int64), np.array([self.eos], np.int64)]
        parts += [lists[offsets[w] : offsets[w + 1]].astype(np.int64) for w in words]
        return np.unique(np.concatenate(parts))

    def _encode(self, sources: Sequence[Sequence[int]]) -> tuple[Floats, Floats, Floats]:
        """Cross K/V of a batch of sources (padded with ``</s>``) and the additive source mask."""
        enc, _ = self._sessions()
        length = max(len(s) for s in sources)
        if self._npu_encoder is not None and len(sources) == 1 and length <= QNN_SOURCE_LENGTH:
            return self._encode_npu(sources[0])
        ids = np.full((len(sources), length), self.eos, np.int64)
        mask = np.zeros((len(sources), length), np.float32)
        for i, s in enumerate(sources):
            ids[i, : len(s)] = s
            mask[i, len(s) :] = MASKED
        cross_k, cross_v = enc.run({"input_ids": ids, "src_mask": mask})
        return cross_k, cross_v, mask

    def _encode_npu(self, source: Sequence[int]) -> tuple[Floats, Floats, Floats]:
        """The static-shape QNN encoder: pad to its length; the decoder masks the padding."""
        assert self._npu_encoder is not None
        ids = np.full((1, QNN_SOURCE_LENGTH), self.eos, np.int64)
        ids[0, : len(source)] = source
        mask = np.zeros((1, QNN_SOURCE_LENGTH), np.float32)
        mask[0, len(source) :] = QNN_MASK
        cross_k, cross_v = self._npu_encoder.run({"input_ids": ids, "src_mask": mask})
        mask[0, len(source) :] = MASKED  # the CPU decoder takes the usual large negative
        return cross_k, cross_v, mask

    def _greedy(
        self,
        cross: tuple[Floats, Floats, Floats],
        shortlist: npt.NDArray[np.int64],
        source_len: int,
        cancel: threading.Event,
    ) -> Iterator[int]:
        """Greedy target ids of one sentence (``</s>`` excluded)."""
        _, dec = self._sessions()
        cross_k, cross_v, mask = cross
        states = np.zeros((self.layers, 1, self.dim), np.float32)
        prev = np.array([self.vocab], np.int64)  # the start id: a zero embedding
        for step in range(math.ceil(self.length_factor * source_len)):
            if cancel.is_set():
                return
            logits, states = dec.run(
                {
                    "prev_ids": prev,
                    "position": np.array([step], np.int64),
                    "states": states,
                    "cross_k": cross_k,
                    "cross_v": cross_v,
                    "src_mask": mask,
                    "shortlist": shortlist,
                },
            )
            token = int(shortlist[np.argmax(logits[0])])
            if token == self.eos:
                return
            yield token
            prev = np.array([token], np.int64)

    def translate_batch(self, sentences: Sequence[str]) -> list[str]:
        """Translate independent sentences in one batch (for throughput; no streaming)."""
        _, dec = self._sessions()
        sources = [self.encode(s) for s in sentences]
        cross_k, cross_v, mask = self._encode(sources)
        shortlist = self.candidates(sources)
        n = len(sources)
        limits = np.array([math.ceil(self.length_factor * len(s)) for s in sources])
        states = np.zeros((self.layers, n, self.dim), np.float32)
        prev = np.full(n, self.vocab, np.int64)
        done = np.zeros(n, bool)
        out: list[list[int]] = [[] for _ in range(n)]
        for step in range(int(limits.max())):
            logits, states = dec.run(
                {
                    "prev_ids": prev,
                    "position": np.array([step], np.int64),
                    "states": states,
                    "cross_k": cross_k,
                    "cross_v": cross_v,
                    "src_mask": mask,
                    "shortlist": shortlist,
                },
            )
            prev = shortlist[np.argmax(logits, axis=1)]
            done |= (prev == self.eos) | (step >= limits)
            for i in np.flatnonzero(~done):
                out[i].append(int(prev[i]))
            if done.all():
                break
        return [self.tokenizer.decode(ids) for ids in out]


def _request(model: str, text: str) -> TranslateRequest:
    return TranslateRequest(prompt=text, model=model, stream=False)


def load_translator(manifest: Manifest) -> BergamotTranslator:
    """The catalog loader of Bergamot models: ``manifest``'s direction.

    ``IMAGINE_EDGE_TRANSLATE_TARGET`` = cpu (default) | qnn | auto puts the encoder on the QNN
    HTP (opt-in: on x86-64 the HTP is a simulator); for qnn the QNN variant is prepared on first
    use if the manifest lacks it.
    """
    target = target_from_env(ModelType.TRANSLATE)
    if target == "qnn" and "qnn" not in manifest.variants:
        manifest = prepared(manifest.name, ["cpu", "qnn"])

    def on(variant: str) -> BergamotTranslator:
        return BergamotTranslator(manifest, variant=variant)

    has_qnn = target != "cpu" and "qnn" in manifest.variants
    placed = place(
        target, manifest.name, qnn=(lambda: on("qnn")) if has_qnn else None, cpu=lambda: on("cpu")
    )
    placed.value.fallback = placed.fallback
    return placed.value


def _load(name: str, variant: str) -> BergamotTranslator:
    variants = ["cpu"] if variant == "cpu" else ["cpu", variant]
    return BergamotTranslator(prepared(name, variants), variant=variant)


def load_bergamot_en_pt(variant: str = "cpu") -> BergamotTranslator:
    """English -> Portuguese (prepared into the model store on first use); ``variant`` "qnn"
    runs the encoder on the QNN HTP."""
    return _load(BERGAMOT_EN_PT, variant)


def load_bergamot_pt_en(variant: str = "cpu") -> BergamotTranslator:
    """Portuguese -> English (prepared into the model store on first use); ``variant`` "qnn"
    runs the encoder on the QNN HTP."""
    return _load(BERGAMOT_PT_EN, variant)
