"""Deterministic fake models of every type, for testing applications and the server fast.

They implement the protocols of ``imagine_edge.models.base`` with plain Python, no weights:

- ``echo-llm``: answers with the last user message (a completion echoes the prompt), one word
  per chunk. A message starting with 'use tool' calls the first tool offered; one containing
  'FAIL MIDWAY' fails after its first word; 'TOO LONG' is refused as a context overflow.
- ``hash-embedder``: 16-dim L2-normalised bag-of-words hashes; ``overlap-reranker``: the share of
  query words found in each document; ``upper-translator``: upper-cases the text;
  ``byte-transcriber``: describes the audio it got; ``solid-image``: a PNG of one colour.

``delay`` (seconds per generated word or image) makes generation slow enough to test queues and
cancellation; ``active`` counts generations in progress, so tests can see a cancelled one end.
``fake_cards(fake_models(delay))`` gives cards whose ``load`` returns those very instances.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from imagine_edge.models.base import (
    Embeddings,
    GenerationChunk,
    GenerationStats,
    ModelCard,
    Rankings,
)
from imagine_edge.sdk.errors import ContextLengthError
from imagine_edge.sdk.limits import parse_image_size, wav_seconds
from imagine_edge.sdk.types import (
    ChatCompletionRequest,
    ChatMessageToolCall,
    CompletionRequest,
    FinishReason,
    Function,
    ImageRequest,
    LLMSamplingParams,
    ModelType,
    TranslateRequest,
)

__all__ = [
    "ByteTranscriber",
    "EchoLLM",
    "FakeModel",
    "HashEmbedder",
    "OverlapReranker",
    "SolidImageGenerator",
    "UpperTranslator",
    "fake_cards",
    "fake_models",
]


class FakeModel:
    """The LoadedModel part shared by the fakes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.closed = False
        self.active = 0  # generations in progress
        self._lock = threading.Lock()

    @property
    def execution_provider(self) -> str:
        return "CPUExecutionProvider (fake)"

    def resident_bytes(self) -> int:
        return 1024

    def close(self) -> None:
        self.closed = True

    def reopen(self) -> FakeModel:
        """Load this instance again (what a card's ``load`` returns)."""
        self.closed = False
        return self

    def _pause(self, cancel: threading.Event) -> bool:
        """Sleep ``delay`` (waking on cancel); True when cancelled."""
        return cancel.wait(self.delay) if self.delay else cancel.is_set()


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content or ""


class EchoLLM(FakeModel):
    """ModelType.LLM: echoes the last user message (or the prompt) word by word.

    ``concurrent`` > 1 makes it a model that serves that many requests at once (as the LLM
    with continuous batching does); ``peak_active`` is the most generations seen at once."""

    def __init__(self, delay: float = 0.0, concurrent: int = 1) -> None:
        super().__init__(delay)
        self.max_concurrent_requests = concurrent
        self.peak_active = 0

    def generate_chat(
        self, request: ChatCompletionRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        users = [m for m in request.messages if m.role == "user"]
        text = _text_of(users[-1].content) if users else ""
        prompt_words = sum(len(_text_of(m.content).split()) for m in request.messages)
        if request.tools and text.startswith("use tool"):
            return self._tool_call(request, text, prompt_words)
        return self._generate(text, prompt_words, request, cancel)

    def generate_completion(
        self, request: CompletionRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        return self._generate(request.prompt, len(request.prompt.split()), request, cancel)

    def _tool_call(
        self, request: ChatCompletionRequest, text: str, prompt_words: int
    ) -> Iterator[GenerationChunk]:
        tool = request.tools[0].function  # type: ignore[index]
        arguments = json.dumps({"text": text.removeprefix("use tool").strip()})
        call = ChatMessageToolCall(
            type="function", function=Function(name=tool.name, arguments=arguments)
        )
        stats = GenerationStats(prompt_tokens=prompt_words, completion_tokens=1)
        yield GenerationChunk(finish_reason=FinishReason.tool_calls, stats=stats, tool_calls=[call])

    def _generate(
        self, text: str, prompt_words: int, params: LLMSamplingParams, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        if "TOO LONG" in text:
            raise ContextLengthError(f"prompt of {prompt_words} words exceeds the context of 2")
        words = text.split()
        emitted = words[: params.max_tokens or len(words)]
        stats = GenerationStats(prompt_tokens=prompt_words)
        with self._lock:
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
        try:
            for i, word in enumerate(emitted):
                if self._pause(cancel):
                    return
                if i == 1 and "FAIL MIDWAY" in text:
                    raise RuntimeError("the fake model failed on purpose")
                stats.completion_tokens = i + 1
                piece = word if i == 0 else " " + word
                if word in (params.stop or ()):
                    yield GenerationChunk(piece, FinishReason.stop, stats)
                    return
                if i + 1 < len(emitted):
                    yield GenerationChunk(piece)
                    continue
                cut = len(emitted) < len(words)
                reason = FinishReason.length if cut else FinishReason.stop
                yield GenerationChunk(piece, reason, stats)
                return
            yield GenerationChunk("", FinishReason.stop, stats)  # nothing to echo
        finally:
            with self._lock:
                self.active -= 1


class HashEmbedder(FakeModel):
    """ModelType.EMBEDDING: a normalised 16-bucket hash of the words."""

    dim = 16

    def embed(self, texts: Sequence[str]) -> Embeddings:
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split() or [""]:
                bucket = hashlib.sha256(word.encode()).digest()[0] % self.dim
                vectors[row, bucket] += 1.0
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return Embeddings(vectors, prompt_tokens=sum(len(t.split()) for t in texts))


class OverlapReranker(FakeModel):
    """ModelType.RERANKER: the share of the query's words each document contains."""

    def rank(self, query: str, documents: Sequence[str]) -> Rankings:
        wanted = set(query.lower().split())
        scores = [len(wanted & set(d.lower().split())) / max(1, len(wanted)) for d in documents]
        tokens = len(query.split()) * len(documents) + sum(len(d.split()) for d in documents)
        return Rankings(np.asarray(scores, dtype=np.float32), prompt_tokens=tokens)


class UpperTranslator(FakeModel):
    """ModelType.TRANSLATE: upper-cases the text."""

    def translate(
        self, request: TranslateRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        words = request.prompt.split()
        stats = GenerationStats(prompt_tokens=len(words), completion_tokens=len(words))
        yield GenerationChunk(request.prompt.upper(), FinishReason.stop, stats)


class ByteTranscriber(FakeModel):
    """ModelType.TRANSCRIBE: says how much audio it received."""

    def transcribe(self, audio: bytes, cancel: threading.Event) -> str:
        seconds = wav_seconds(audio)
        if seconds is not None:
            return f"{seconds:.2f} seconds of wav audio"
        return f"{len(audio)} bytes of audio"


class SolidImageGenerator(FakeModel):
    """ModelType.TEXT_TO_IMAGE: a PNG filled with a colour derived from the seed."""

    def generate_png(self, request: ImageRequest, index: int, cancel: threading.Event) -> bytes:
        self._pause(cancel)
        width, height = parse_image_size(request.size or "512x512")
        seed = (request.seed or 0) + index * (request.seed_increment or 0)
        colour = hashlib.sha256(str(seed).encode()).digest()[:3]
        row = b"\x00" + colour * width
        return _png(width, height, zlib.compress(row * height, 1))


def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def fake_models(delay: float = 0.0) -> dict[ModelType, FakeModel]:
    """One fake model of each type."""
    return {
        ModelType.LLM: EchoLLM(delay),
        ModelType.EMBEDDING: HashEmbedder(delay),
        ModelType.RERANKER: OverlapReranker(delay),
        ModelType.TRANSLATE: UpperTranslator(delay),
        ModelType.TRANSCRIBE: ByteTranscriber(delay),
        ModelType.TEXT_TO_IMAGE: SolidImageGenerator(delay),
    }


_NAMES = {
    ModelType.LLM: "echo-llm",
    ModelType.EMBEDDING: "hash-embedder",
    ModelType.RERANKER: "overlap-reranker",
    ModelType.TRANSLATE: "upper-translator",
    ModelType.TRANSCRIBE: "byte-transcriber",
    ModelType.TEXT_TO_IMAGE: "solid-image",
}


def fake_cards(
    models: Mapping[ModelType, FakeModel] | None = None, types: Sequence[ModelType] | None = None
) -> list[ModelCard]:
    """A card per fake model (of ``types``, default all); loading returns the given instance."""
    chosen = dict(models) if models is not None else fake_models()
    return [
        ModelCard(
            name=_NAMES[model_type],
            model_type=model_type,
            description=f"deterministic fake {model_type.value} model for tests",
            licence="Apache-2.0",
            load=lambda model=model: model.reopen(),  # type: ignore[misc]
            trained=False,
            default=True,
        )
        for model_type, model in chosen.items()
        if types is None or model_type in types
    ]
