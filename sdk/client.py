"""``ImagineEdge`` and ``AsyncImagineEdge``: the official client's API, in process or over HTTP.

Every public method of ``imagine.ImagineClient`` / ``imagine.ImagineAsyncClient`` exists here
with the same name, parameters, defaults and return DTOs (docs/contract.md, DTO rules). By default
the
models run in this process on a lazily created :class:`~imagine_edge.sdk.engine.Engine` over the
model catalog (or over ``models`` / ``engine`` given); with ``base_url`` the same calls go to a
running ``imagine-edge serve`` and raise the same exceptions.

Errors are the official client's classes (``imagine_edge.sdk.errors`` subclasses them by name),
with ``http_status`` set as a server would: a bad parameter is an ``InvalidRequestError`` (422)
here where the official client against our server raises ``ImagineAPIException`` with 422.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from typing import Any, BinaryIO

from imagine_edge.models.base import ModelCard
from imagine_edge.sdk import _requests as requests
from imagine_edge.sdk._async_client import AsyncImagineEdge
from imagine_edge.sdk._backends import (
    API_KEY_ENV,
    ClientBase,
    HttpBackend,
    LocalBackend,
    audio_of,
    engine_factory,
)
from imagine_edge.sdk._requests import run_method, stream_method
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

__all__ = ["API_KEY_ENV", "AsyncImagineEdge", "ImagineEdge"]


class ImagineEdge(ClientBase):
    """The synchronous client: ``imagine.ImagineClient``'s API on local models or a server.

    ``ImagineEdge()`` runs the catalog's models in process (loaded on first use; ``close()``
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
        self._backend: LocalBackend | HttpBackend
        if base_url is not None:
            key = api_key or os.environ.get(API_KEY_ENV)
            self._backend = HttpBackend(base_url, key, timeout)
        else:
            self._backend = LocalBackend(*engine_factory(models, engine))

    def close(self) -> None:
        """Free the models (in process) or the connections (over HTTP)."""
        self._backend.close()

    def __enter__(self) -> ImagineEdge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ models, health, usage

    def get_available_models_by_type(
        self, model_type: ModelType | None = None
    ) -> dict[ModelType, list[str]]:
        """Model names by type; every type is a key (``[]`` when it has no model)."""
        return self._backend.models(model_type)

    def get_available_models(self, model_type: ModelType | None = None) -> list[str]:
        """All model names (of ``model_type``), flattened in type order."""
        return [m for ms in self.get_available_models_by_type(model_type).values() for m in ms]

    def ping(self) -> PingResponse:
        """Check the service answers."""
        return self._backend.ping()

    def health_check(self) -> HealthResponse:
        """Stores and models: load state, execution provider and memory of each model."""
        return self._backend.health()

    def usage(
        self,
        aggregation_duration: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        model: str | None = None,
    ) -> UsageResponse:
        """Token and time totals per model and time bin ('1 day', '1 hour', '15 minutes'...)."""
        return self._backend.usage(aggregation_duration, since, until, model)

    # ------------------------------------------------------------------ embeddings, reranker

    embeddings = run_method(Endpoint.EMBEDDINGS, requests.embeddings, EmbeddingResponse)
    reranker = run_method(Endpoint.RERANKER, requests.reranker, ReRankerResponse)

    # ------------------------------------------------------------------ text generation

    translate = run_method(Endpoint.TRANSLATE, requests.translate, TranslateResponse)
    completion = run_method(Endpoint.COMPLETIONS, requests.completion, CompletionResponse)
    completion_stream = stream_method(
        Endpoint.COMPLETIONS, requests.completion, CompletionStreamResponse, "completion_stream"
    )
    chat = run_method(Endpoint.CHAT, requests.chat, ChatCompletionResponse)
    chat_stream = stream_method(
        Endpoint.CHAT, requests.chat_stream, ChatCompletionStreamResponse, "chat_stream"
    )

    # ------------------------------------------------------------------ images, audio

    images_generate = run_method(Endpoint.IMAGES, requests.images_generate, ImageResponse)
    images_generate_stream = stream_method(
        Endpoint.IMAGES, requests.images_generate, ImageResponse, "images_generate_stream"
    )

    def transcribe(
        self, input_file: str | BinaryIO, model: str | None = None
    ) -> TranscribeResponse:
        """Transcribe an audio file (a path or a binary file object)."""
        audio, filename = audio_of(input_file)
        return self._backend.transcribe(audio, filename, model or self.default_model_transcribe)

    # ------------------------------------------------------------------ histories

    def get_reranker_history(self, max_items: int = 1) -> list[list[Any]]:
        """The last ``max_items`` [response, request] pairs of reranker, newest first."""
        return self._backend.history(Endpoint.RERANKER, max_items)

    def get_embedding_history(self, max_items: int = 1) -> list[list[Any]]:
        """The last ``max_items`` [response, request] pairs of embeddings, newest first."""
        return self._backend.history(Endpoint.EMBEDDINGS, max_items)

    def get_chat_history(self, max_items: int = 1) -> list[list[Any]]:
        """The last ``max_items`` [response, request] pairs of chat, newest first."""
        return self._backend.history(Endpoint.CHAT, max_items)

    def get_completion_history(self, max_items: int = 1) -> list[list[Any]]:
        """The last ``max_items`` [response, request] pairs of completion, newest first."""
        return self._backend.history(Endpoint.COMPLETIONS, max_items)
