"""The plug-in point of model types: what a loaded model of each ModelType must offer.

The engine (``imagine_edge.sdk.engine``) resolves a model name to a :class:`ModelCard`, loads the
model lazily with the card's ``load`` function, and calls it through one of the protocols below.
The HTTP layer only ever talks to the engine, so a new model type plugs in by adding a catalog
entry (``models/catalog.py``) whose loader returns an object satisfying its protocol; nothing in
``server/`` changes.

Invariants:
- Protocol methods are blocking and run on the model's own worker thread, never on an event loop.
- Generation yields :class:`GenerationChunk` increments; the engine builds both the streaming and
  the non-streaming responses from the same chunks, so they cannot disagree.
- ``cancel`` is checked between steps: once set, a generator returns promptly and frees its
  per-request state (KV-cache slot).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from imagine_edge.runtime.kv_cache import SlotUsage
from imagine_edge.runtime.results import GenerationChunk, GenerationStats
from imagine_edge.sdk.types import (
    ChatCompletionRequest,
    CompletionRequest,
    ImageRequest,
    ModelType,
    TranslateRequest,
)

__all__ = [
    "BatchEmbedder",
    "BatchReranker",
    "Embedder",
    "Embeddings",
    "Encoded",
    "GenerationChunk",
    "GenerationStats",
    "HasKVSlots",
    "ImageGenerator",
    "LoadedModel",
    "ModelCard",
    "Rankings",
    "Reranker",
    "TextGenerator",
    "Transcriber",
    "Translator",
]


@dataclass(frozen=True, slots=True)
class ModelCard:
    """What the runtime knows about a model before loading it.

    ``load`` builds the model (preparing it into the model store first if needed); it is called
    at most once per engine, on first use. ``prepare``, when given, runs just before ``load``
    and does the preparation alone (out of process), so that loads, which the engine runs one
    at a time to measure their memory, do not wait behind another model's preparation.
    """

    name: str
    model_type: ModelType
    description: str
    licence: str
    load: Callable[[], LoadedModel]
    aliases: tuple[str, ...] = ()
    # False for models with random weights (the text-to-image default): said in /models too.
    trained: bool = True
    default: bool = False
    prepare: Callable[[], None] | None = None


@runtime_checkable
class LoadedModel(Protocol):
    """A model whose sessions are open."""

    @property
    def execution_provider(self) -> str:
        """Where the model runs, e.g. 'QNNExecutionProvider' or 'CPUExecutionProvider (...)'."""
        ...

    def resident_bytes(self) -> int:
        """Memory held by this model's sessions and buffers, in bytes."""
        ...

    def close(self) -> None:
        """Free the sessions and buffers."""
        ...


@runtime_checkable
class HasKVSlots(Protocol):
    """A model that keeps sequences in KV-cache slots (the LLM): how many are in use."""

    def kv_slots(self) -> SlotUsage: ...


@runtime_checkable
class RunsConcurrently(Protocol):
    """A model that serves several requests at once (continuous batching): its worker runs up
    to ``max_concurrent_requests`` of its jobs together, each on a thread of its own."""

    @property
    def max_concurrent_requests(self) -> int: ...


class TextGenerator(LoadedModel, Protocol):
    """ModelType.LLM."""

    def generate_chat(
        self, request: ChatCompletionRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]: ...

    def generate_completion(
        self, request: CompletionRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]: ...


@dataclass(frozen=True, slots=True)
class Embeddings:
    """L2-normalised float32 vectors [n, dim] in input order, with token counts."""

    vectors: npt.NDArray[np.float32]
    prompt_tokens: int
    truncated: tuple[bool, ...] = field(default=())


class Embedder(LoadedModel, Protocol):
    """ModelType.EMBEDDING."""

    def embed(self, texts: Sequence[str]) -> Embeddings: ...


@dataclass(frozen=True, slots=True)
class Encoded:
    """One request's rows as token ids, ready to run alone or beside other requests' rows.

    A row is a text (embeddings), or what a reranker scores: the query and each document (a
    bi-encoder), or each (query, document) pair (a cross-encoder). ``type_ids`` is empty, or one
    segment-id list per row (pairs). The engine gathers requests by ``rows`` and ``longest``
    (``sdk/engine/batch_queue.py``) and hands the model back its own ``Encoded`` values.
    """

    ids: tuple[Sequence[int], ...]
    truncated: tuple[bool, ...]
    type_ids: tuple[Sequence[int], ...] = ()

    @property
    def rows(self) -> int:
        return len(self.ids)

    @property
    def longest(self) -> int:
        """Tokens of the longest row (0: no row)."""
        return max((len(row) for row in self.ids), default=0)

    @property
    def tokens(self) -> int:
        return sum(len(row) for row in self.ids)


@runtime_checkable
class BatchEmbedder(Embedder, Protocol):
    """An embedder that runs the texts of several requests in one graph run.

    ``embed_encoded(parts)[i]`` is what ``embed`` returns for the texts of ``parts[i]``: with one
    part, exactly the same; with several, equal within the graph's tolerance (padding is masked;
    an int8 graph's dynamic quantization scales are per batch). ``encode`` raises the request's
    own error (a 4xx) before anything runs.
    """

    def encode(self, texts: Sequence[str]) -> Encoded: ...

    def embed_encoded(self, parts: Sequence[Encoded]) -> list[Embeddings]: ...


@dataclass(frozen=True, slots=True)
class Rankings:
    """One relevance score per document (input order), with token counts."""

    scores: npt.NDArray[np.float32]
    prompt_tokens: int


class Reranker(LoadedModel, Protocol):
    """ModelType.RERANKER."""

    def rank(self, query: str, documents: Sequence[str]) -> Rankings: ...


@runtime_checkable
class BatchReranker(Reranker, Protocol):
    """A reranker that scores several requests in one graph run (as :class:`BatchEmbedder`)."""

    def encode_rank(self, query: str, documents: Sequence[str]) -> Encoded: ...

    def rank_encoded(self, parts: Sequence[Encoded]) -> list[Rankings]: ...


class Translator(LoadedModel, Protocol):
    """ModelType.TRANSLATE."""

    def translate(
        self, request: TranslateRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]: ...


class Transcriber(LoadedModel, Protocol):
    """ModelType.TRANSCRIBE."""

    def transcribe(self, audio: bytes, cancel: threading.Event) -> str: ...


class ImageGenerator(LoadedModel, Protocol):
    """ModelType.TEXT_TO_IMAGE: one PNG per call, image ``index`` of the request."""

    def generate_png(self, request: ImageRequest, index: int, cancel: threading.Event) -> bytes: ...
