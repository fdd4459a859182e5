"""ModelType.TRANSLATE: an added Hugging Face Marian (opus-mt) served as a ``Translator``.

The graphs are :mod:`imagine_edge.models.prepare.marian_export`'s (an encoder and a decoder
without a KV cache); the tokenization is ``MarianTokenizer``'s, without transformers: the source
SentencePiece model cuts the text into pieces (a leading language code such as ``>>fr<<`` is kept
whole), ``vocab.json`` maps each piece to Marian's id (an unknown piece to ``<unk>``), ``</s>``
is appended. Decoding is greedy from ``decoder_start_token_id``; the ids of single-token
``bad_words_ids`` are never chosen; it stops at ``</s>``. Detokenizing maps ids back to pieces
(special tokens skipped) and joins them with the SentencePiece model, as ``decode(...,
skip_special_tokens=True)`` does (the source model for a shared vocabulary, as transformers does).

Bounds and streaming are the catalog translator's (:mod:`imagine_edge.models.translate`): at most
``MAX_SOURCE_CHARS`` characters (413 beyond), lines and sentences translated one by one, a
sentence cut into segments of at most ``MAX_SEGMENT_TOKENS`` source tokens (fewer when the
model's positions are fewer), each decoding at most ``ceil(2.5 * source tokens)`` tokens and at
most the model's ``max_length``; this bound is applied as transformers' ``max_length`` is, so the
last place is the forced ``</s>`` when the model has a ``forced_eos_token_id``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import sentencepiece

from imagine_edge.models.base import GenerationChunk, GenerationStats
from imagine_edge.models.sentences import split_sentences
from imagine_edge.models.store import Manifest
from imagine_edge.models.translate import MAX_SEGMENT_TOKENS, check_request
from imagine_edge.runtime.graph_session import LoadedSession
from imagine_edge.runtime.session import shared_factory
from imagine_edge.sdk.types import FinishReason, TranslateRequest

__all__ = ["MarianPieces", "MarianTranslator", "load_marian_translator"]

_WORD_START: Final = "\u2581"
LENGTH_FACTOR: Final = 2.5
SPECIAL: Final = ("</s>", "<unk>", "<pad>")
Floats = npt.NDArray[np.float32]
Ints = npt.NDArray[np.int64]


class MarianPieces:
    """``MarianTokenizer``'s source encoding and target decoding, on sentencepiece alone."""

    def __init__(self, folder: Path, *, separate_vocabs: bool) -> None:
        self.source = sentencepiece.SentencePieceProcessor(model_file=str(folder / "source.spm"))
        self.target = sentencepiece.SentencePieceProcessor(model_file=str(folder / "target.spm"))
        self.vocab: dict[str, int] = json.loads((folder / "vocab.json").read_text("utf-8"))
        target_file = folder / ("target_vocab.json" if separate_vocabs else "vocab.json")
        target: dict[str, int] = json.loads(target_file.read_text("utf-8"))
        self.pieces = {v: k for k, v in target.items()}
        self.separate = separate_vocabs
        self.unk = self.vocab["<unk>"]
        self.eos = self.vocab["</s>"]
        self.special = {self.vocab[t] for t in SPECIAL} | {target[t] for t in SPECIAL}

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """Source ids and pieces of ``text`` (no ``</s>``)."""
        code: list[str] = []
        if text.startswith(">>") and (end := text.find("<<")) != -1:
            code, text = [text[: end + 2]], text[end + 2 :]
        pieces = code + list(self.source.encode(text, out_type=str))
        return [self.vocab.get(p, self.unk) for p in pieces], pieces

    def decode(self, ids: list[int]) -> str:
        """The text of target ids, special tokens skipped."""
        model = self.target if self.separate else self.source
        pieces = []
        for i in ids:
            if i in self.special:
                continue
            piece = self.pieces.get(i) or model.IdToPiece(i) or "<unk>"
            pieces.append(piece)
        text: str = model.decode_pieces(pieces)
        return text.replace(_WORD_START, " ").strip()


class MarianTranslator:
    """A prepared Marian: encoder and cache-less decoder graphs on the CPU EP."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.facts: dict[str, Any] = json.loads((manifest.root / "marian.json").read_text("utf-8"))
        self.tokens = MarianPieces(manifest.root, separate_vocabs=self.facts["separate_vocabs"])
        self.segment_limit = min(MAX_SEGMENT_TOKENS, int(self.facts["max_positions"]))
        self.eos = int(self.facts["target_eos_id"])
        self.suppress = np.array(self.facts["suppress_ids"], np.int64)
        graphs = manifest.variant("cpu").graphs
        factory = shared_factory()
        self._files = [graphs["encoder"].path, graphs["decoder"].path]
        self._encoder: LoadedSession | None = factory.create(self._files[0], target="cpu")
        self._decoder: LoadedSession | None = factory.create(self._files[1], target="cpu")

    @property
    def execution_provider(self) -> str:
        return self._sessions()[0].provider

    def resident_bytes(self) -> int:
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

    def translate(
        self, request: TranslateRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        """Chunks of the translation of ``request.prompt`` (text increments, then the finish)."""
        check_request(request)
        budget = [request.max_tokens]
        stats = GenerationStats()
        separator = ""
        for line_no, line in enumerate(request.prompt.split("\n")):
            if line_no:
                separator = "\n"
            for source in (
                s for sentence in split_sentences(line) for s in self.segments(sentence)
            ):
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
        yield GenerationChunk(finish_reason=FinishReason.stop, stats=stats)

    def segments(self, sentence: str) -> list[list[int]]:
        """Source ids of ``sentence`` in segments (each ending with ``</s>``), cut before a word
        start in a segment's second half where there is one."""
        ids, pieces = self.tokens.encode(sentence)
        room = self.segment_limit - 1
        out: list[list[int]] = []
        while len(ids) > room:
            cut = next(
                (i for i in range(room, room // 2, -1) if pieces[i].startswith(_WORD_START)), room
            )
            out.append([*ids[:cut], self.tokens.eos])
            ids, pieces = ids[cut:], pieces[cut:]
        out.append([*ids, self.tokens.eos])
        return out

    def steps(self, source_len: int) -> int:
        """The most target places of a source of ``source_len`` ids (``</s>`` included)."""
        bound = math.ceil(LENGTH_FACTOR * source_len)
        return max(
            1, min(bound, int(self.facts["max_length"]) - 1, int(self.facts["max_positions"]))
        )

    def encode(self, source: list[int]) -> tuple[Floats, Ints]:
        """The encoder output of one source and its attention mask."""
        enc, _ = self._sessions()
        ids = np.array([source], np.int64)
        mask = np.ones_like(ids)
        (hidden,) = enc.run({"input_ids": ids, "attention_mask": mask})
        return hidden, mask

    def greedy(
        self,
        source: list[int],
        steps: int,
        cancel: threading.Event | None = None,
        encoded: tuple[Floats, Ints] | None = None,
    ) -> Iterator[int]:
        """Greedy target ids of one source (``</s>`` excluded), at most ``steps`` places."""
        _, dec = self._sessions()
        hidden, mask = self.encode(source) if encoded is None else encoded
        target = [int(self.facts["decoder_start_id"])]
        forced = self.facts["forced_eos_id"]
        for step in range(steps):
            if cancel is not None and cancel.is_set():
                return
            if forced is not None and step == steps - 1:
                return  # transformers forces </s> at the last place of max_length
            (logits,) = dec.run(
                {
                    "decoder_input_ids": np.array([target], np.int64),
                    "encoder_hidden_states": hidden,
                    "encoder_attention_mask": mask,
                }
            )
            scores = logits[0]
            if self.suppress.size:
                scores[self.suppress] = -np.inf
            token = int(np.argmax(scores))
            if token == self.eos:
                return
            target.append(token)
            yield token

    def _sentence(
        self,
        source: list[int],
        budget: list[int | None],
        stats: GenerationStats,
        cancel: threading.Event,
    ) -> tuple[list[str], FinishReason | None]:
        stats.prompt_tokens += len(source)
        t0 = time.perf_counter()
        encoded = self.encode(source)
        stats.prefill_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        tokens: list[int] = []
        pieces: list[str] = []
        emitted = ""
        reason: FinishReason | None = None
        for token in self.greedy(source, self.steps(len(source)), cancel, encoded):
            left = budget[0]
            if left is not None:
                if left <= 0:
                    reason = FinishReason.length
                    break
                budget[0] = left - 1
            tokens.append(token)
            text = self.tokens.decode(tokens)
            if text.startswith(emitted) and len(text) > len(emitted):
                pieces.append(text[len(emitted) :])
                emitted = text
        if cancel.is_set():
            reason = FinishReason.stop
        final = self.tokens.decode(tokens)
        if final != emitted:
            pieces.append(final[len(emitted) :] if final.startswith(emitted) else "")
        stats.completion_tokens += len(tokens)
        stats.decode_seconds += time.perf_counter() - t0
        return [p for p in pieces if p], reason

    def translate_text(self, text: str) -> str:
        """The whole translation of ``text``."""
        request = TranslateRequest(prompt=text, model=self.manifest.name, stream=False)
        return "".join(c.text for c in self.translate(request, threading.Event()))


def load_marian_translator(manifest: Manifest) -> MarianTranslator:
    """The loader of added Marian models (the ``hf-marian`` format): CPU only."""
    return MarianTranslator(manifest)
