"""What every backend shares: the endpoints' engine calls and DTOs, the client's default
model names, audio input, and how an in-process engine is made.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from pydantic import BaseModel

from imagine_edge.models.base import ModelCard
from imagine_edge.sdk.engine import CLIENT_DEFAULT_NAMES, Engine
from imagine_edge.sdk.engine.calls import Call
from imagine_edge.sdk.paths import Endpoint
from imagine_edge.sdk.types import (
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionResponse,
    CompletionStreamResponse,
    EmbeddingResponse,
    ImageResponse,
    ModelType,
    ReRankerResponse,
    TranslateResponse,
)

__all__ = ["API_KEY_ENV", "OPS", "ClientBase", "Op", "audio_of", "engine_factory"]


@dataclass(frozen=True, slots=True)
class Op:
    submit: Callable[[Engine, Any], Call[Any, Any]]
    response: type[BaseModel]
    event: type[BaseModel] | None = None


OPS: Final[Mapping[Endpoint, Op]] = {
    Endpoint.CHAT: Op(Engine.chat, ChatCompletionResponse, ChatCompletionStreamResponse),
    Endpoint.COMPLETIONS: Op(Engine.completion, CompletionResponse, CompletionStreamResponse),
    Endpoint.TRANSLATE: Op(Engine.translate, TranslateResponse),
    Endpoint.EMBEDDINGS: Op(Engine.embeddings, EmbeddingResponse),
    Endpoint.RERANKER: Op(Engine.rerank, ReRankerResponse),
    Endpoint.IMAGES: Op(Engine.images, ImageResponse, ImageResponse),
}


API_KEY_ENV: Final = "IMAGINE_EDGE_API_KEY"


def audio_of(input_file: str | BinaryIO) -> tuple[bytes, str]:
    if isinstance(input_file, str):
        with open(input_file, "rb") as f:
            return f.read(), os.path.basename(input_file)
    name = getattr(input_file, "name", None)
    return input_file.read(), os.path.basename(name) if isinstance(name, str) else "upload"


class ClientBase:
    """What both clients share: the official default model names."""

    @property
    def default_model_llm(self) -> str:
        return CLIENT_DEFAULT_NAMES[ModelType.LLM]

    @property
    def default_model_embedding(self) -> str:
        return CLIENT_DEFAULT_NAMES[ModelType.EMBEDDING]

    @property
    def default_model_reranker(self) -> str:
        return CLIENT_DEFAULT_NAMES[ModelType.RERANKER]

    @property
    def default_model_tti(self) -> str:
        return CLIENT_DEFAULT_NAMES[ModelType.TEXT_TO_IMAGE]

    @property
    def default_model_transcribe(self) -> str:
        return CLIENT_DEFAULT_NAMES[ModelType.TRANSCRIBE]

    @property
    def default_model_translate(self) -> str:
        return CLIENT_DEFAULT_NAMES[ModelType.TRANSLATE]


def engine_factory(models: Sequence[ModelCard] | None, engine: Engine | None) -> tuple[Any, bool]:
    if engine is not None:
        return (lambda: engine), False
    if models is not None:
        cards = list(models)
        return (lambda: Engine(cards)), True
    return Engine.from_catalog, True
