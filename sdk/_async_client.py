"""``AsyncImagineEdge``: ``imagine.ImagineAsyncClient``'s API, in process or over HTTP.

The twin of :class:`imagine_edge.sdk.client.ImagineEdge` (see there); as in the official async
client, ``chat_stream`` has no ``stream_options`` (usage rides on the last chunk anyway).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any, BinaryIO

from imagine_edge.models.base import ModelCard
from imagine_edge.sdk import _requests as requests
from imagine_edge.sdk._backends import (
    API_KEY_ENV,
    AsyncHttpBackend,
    AsyncLocalBackend,
    ClientBase,
    audio_of,
    engine_factory,
)
from imagine_edge.sdk._requests import arun_method, astream_method
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.paths import Endpoint
from imagine_edge.sdk.types import (
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionResponse,
    CompletionStreamResponse,
    EmbeddingResponse,
    HealthResponse,
    ImageResponse,
    ModelType,
    PingResponse,
    ReRankerResponse,
    TranscribeResponse,
    TranslateResponse,
    UsageResponse,
)

__all__ = ["AsyncImagineEdge"]


class AsyncImagineEdge(ClientBase):
    """The asynchronous client: ``imagine.ImagineAsyncClient``'s API on local models or a server.

    Nothing blocks the event loop: inference runs on the models' worker threads.
    ``AsyncImagineEdge()`` runs the catalog's models in process (loaded on first use; ``close()``
    frees them); ``ImagineEdge(models=cards)`` or ``ImagineEdge(engine=engine)`` chooses them;
    ``ImagineEdge(base_url="http://127.0.0.1:8000/api/v2")`` talks to a server (``api_key``
    defaults to ``$IMAGINE_EDGE_API_KEY``; a base URL without a path gets ``/api/v2``).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        models: Sequence[ModelCard] | None = None,
        engine: Engine | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._backend: AsyncLocalBackend | AsyncHttpBackend
        if base_url is not None:
            self._backend = AsyncHttpBackend(
                base_url, api_key or os.environ.get(API_KEY_ENV), timeout
            )
        else:
            self._backend = AsyncLocalBackend(*engine_factory(models, engine))

    async def close(self) -> None:
        """Free the models (in process) or the connections (over HTTP)."""
        await self._backend.close()

    async def __aenter__(self) -> AsyncImagineEdge:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ models, health, usage

    async def get_available_models_by_type(
        self, model_type: ModelType | None = None
    ) -> dict[ModelType, list[str]]:
        """Model names by type; every type is a key (``[]`` when it has no model)."""
        return await self._backend.models(model_type)

    async def get_available_models(self, model_type: ModelType | None = None) -> list[str]:
        """All model names (of ``model_type``), flattened in type order."""
        return [
            m for ms in (await self.get_available_models_by_type(model_type)).values() for m in ms
        ]

    async def ping(self) -> PingResponse:
        """Check the service answers."""
        return await self._backend.ping()

    async def health_check(self) -> HealthResponse:
        """Stores and models: load state, execution provider and memory of each model."""
        return await self._backend.health()

    async def usage(
        self,
        aggregation_duration: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        model: str | None = None,
    ) -> UsageResponse:
        """Token and time totals per model and time bin ('1 day', '1 hour', '15 minutes'...)."""
        return await self._backend.usage(aggregation_duration, since, until, model)

    # ------------------------------------------------------------------ embeddings, reranker

    embeddings = arun_method(Endpoint.EMBEDDINGS, requests.embeddings, EmbeddingResponse)
    reranker = arun_method(Endpoint.RERANKER, requests.reranker, ReRankerResponse)

    # ------------------------------------------------------------------ text generation

    translate = arun_method(Endpoint.TRANSLATE, requests.translate, TranslateResponse)
    completion = arun_method(Endpoint.COMPLETIONS, requests.completion, CompletionResponse)
    completion_stream = astream_method(
        Endpoint.COMPLETIONS, requests.completion, CompletionStreamResponse, "completion_stream"
    )
    chat = arun_method(Endpoint.CHAT, requests.chat, ChatCompletionResponse)
    # The official async client's chat_stream has no stream_options: chat's parameters.
    chat_stream = astream_method(
        Endpoint.CHAT, requests.chat, ChatCompletionStreamResponse, "chat_stream"
    )

    # ------------------------------------------------------------------ images, audio

    images_generate = arun_method(Endpoint.IMAGES, requests.images_generate, ImageResponse)
    images_generate_stream = astream_method(
        Endpoint.IMAGES, requests.images_generate, ImageResponse, "images_generate_stream"
    )

    async def transcribe(
        self, input_file: str | BinaryIO, model: str | None = None
    ) -> TranscribeResponse:
        """Transcribe an audio file (a path or a binary file object)."""
        audio, filename = audio_of(input_file)
        return await self._backend.transcribe(
            audio, filename, model or self.default_model_transcribe
        )

    # ------------------------------------------------------------------ histories

    async def get_reranker_history(self, max_items: int = 1) -> list[list[Any]]:
        """The last ``max_items`` [response, request] pairs of reranker, newest first."""
        return await self._backend.history(Endpoint.RERANKER, max_items)

    async def get_embedding_history(self, max_items: int = 1) -> list[list[Any]]:
        """The last ``max_items`` [response, request] pairs of embeddings, newest first."""
        return await self._backend.history(Endpoint.EMBEDDINGS, max_items)

    async def get_chat_history(self, max_items: int = 1) -> list[list[Any]]:
        """The last ``max_items`` [response, request] pairs of chat, newest first."""
        return await self._backend.history(Endpoint.CHAT, max_items)

    async def get_completion_history(self, max_items: int = 1) -> list[list[Any]]:
        """The last ``max_items`` [response, request] pairs of completion, newest first."""
        return await self._backend.history(Endpoint.COMPLETIONS, max_items)
