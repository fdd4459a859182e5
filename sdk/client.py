"""``ImagineEdge`` and ``AsyncImagineEdge``: the official client's API, in process or over HTTP.

Every public method of ``imagine.ImagineClient`` / ``imagine.ImagineAsyncClient`` exists here
with the same name, parameters, defaults and return DTOs (CONTRACT.md §5, §6). By default the
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
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO

from imagine_edge.models.base import ModelCard
from imagine_edge.sdk._async_client import AsyncImagineEdge
from imagine_edge.sdk._backends import (
    API_KEY_ENV,
    ClientBase,
    HttpBackend,
    LocalBackend,
    audio_of,
    build,
    engine_factory,
)
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.engine.recorder import Endpoint
from imagine_edge.sdk.types import (
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    ChatMessage,
    CompletionResponse,
    CompletionStreamResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    HealthResponse,
    ImageRequest,
    ImageResponse,
    ModelType,
    PingResponse,
    ReRankerRequest,
    ReRankerResponse,
    TranscribeResponse,
    TranslateRequest,
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

    def embeddings(self, text: str | list[str], model: str | None = None) -> EmbeddingResponse:
        """Embed a text or a list of texts (one vector each, in input order)."""
        request = build(EmbeddingRequest, input=text, model=model or self.default_model_embedding)
        response: EmbeddingResponse = self._backend.run(Endpoint.EMBEDDINGS, request)
        return response

    def reranker(
        self,
        query: str,
        documents: list[str],
        model: str | None = None,
        top_n: int | None = None,
        return_documents: bool | None = None,
    ) -> ReRankerResponse:
        """Rank documents by relevance to the query, best first (all of them without top_n)."""
        request = build(
            ReRankerRequest,
            query=query,
            documents=documents,
            model=model or self.default_model_reranker,
            top_n=top_n,
            return_documents=return_documents,
        )
        response: ReRankerResponse = self._backend.run(Endpoint.RERANKER, request)
        return response

    # ------------------------------------------------------------------ text generation

    def translate(
        self,
        prompt: str,
        model: str,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        repetition_penalty: float | None = None,
        stop: list[str] | None = None,
        max_seconds: int | None = None,
        ignore_eos: bool | None = None,
        skip_special_tokens: bool | None = None,
        stop_token_ids: list[list[int]] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> TranslateResponse:
        """Translate ``prompt`` with ``model`` (required, as in the official client)."""
        request = build(
            TranslateRequest, prompt=prompt, model=model, stream=False,
            frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
            repetition_penalty=repetition_penalty, stop=stop, max_seconds=max_seconds,
            ignore_eos=ignore_eos, skip_special_tokens=skip_special_tokens,
            stop_token_ids=stop_token_ids, max_tokens=max_tokens, temperature=temperature,
            top_k=top_k, top_p=top_p,
        )  # fmt: skip
        response: TranslateResponse = self._backend.run(Endpoint.TRANSLATE, request)
        return response

    def completion(
        self,
        prompt: str,
        model: str | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        repetition_penalty: float | None = None,
        stop: list[str] | None = None,
        max_seconds: int | None = None,
        ignore_eos: bool | None = None,
        skip_special_tokens: bool | None = None,
        stop_token_ids: list[list[int]] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> CompletionResponse:
        """Continue ``prompt``."""
        request = self._completion_request(
            prompt, model, False, frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty, repetition_penalty=repetition_penalty, stop=stop,
            max_seconds=max_seconds, ignore_eos=ignore_eos,
            skip_special_tokens=skip_special_tokens, stop_token_ids=stop_token_ids,
            max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        )  # fmt: skip
        response: CompletionResponse = self._backend.run(Endpoint.COMPLETIONS, request)
        return response

    def completion_stream(
        self,
        prompt: str,
        model: str | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        repetition_penalty: float | None = None,
        stop: list[str] | None = None,
        max_seconds: int | None = None,
        ignore_eos: bool | None = None,
        skip_special_tokens: bool | None = None,
        stop_token_ids: list[list[int]] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> Iterator[CompletionStreamResponse]:
        """Continue ``prompt``, chunk by chunk; stopping the iteration cancels generation."""
        request = self._completion_request(
            prompt, model, True, frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty, repetition_penalty=repetition_penalty, stop=stop,
            max_seconds=max_seconds, ignore_eos=ignore_eos,
            skip_special_tokens=skip_special_tokens, stop_token_ids=stop_token_ids,
            max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
        )  # fmt: skip
        yield from self._backend.stream(Endpoint.COMPLETIONS, request)

    def chat(
        self,
        messages: Sequence[ChatMessage | dict[str, str]],
        model: str | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        repetition_penalty: float | None = None,
        stop: list[str] | None = None,
        max_seconds: int | None = None,
        ignore_eos: bool | None = None,
        skip_special_tokens: bool | None = None,
        stop_token_ids: list[list[int]] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        tools: list[dict[str, str | dict[str, Any]]] | None = None,
    ) -> ChatCompletionResponse:
        """Answer the conversation (tool calls come back in the message)."""
        request = self._chat_request(
            messages, model, False, frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty, repetition_penalty=repetition_penalty, stop=stop,
            max_seconds=max_seconds, ignore_eos=ignore_eos,
            skip_special_tokens=skip_special_tokens, stop_token_ids=stop_token_ids,
            max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            tools=tools,
        )  # fmt: skip
        response: ChatCompletionResponse = self._backend.run(Endpoint.CHAT, request)
        return response

    def chat_stream(
        self,
        messages: Sequence[ChatMessage | dict[str, str]],
        model: str | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        repetition_penalty: float | None = None,
        stop: list[str] | None = None,
        max_seconds: int | None = None,
        ignore_eos: bool | None = None,
        skip_special_tokens: bool | None = None,
        stop_token_ids: list[list[int]] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        stream_options: dict[str, Any] | None = None,
        tools: list[dict[str, str | dict[str, Any]]] | None = None,
    ) -> Iterator[ChatCompletionStreamResponse]:
        """Answer the conversation chunk by chunk (usage on the last); stopping cancels."""
        request = self._chat_request(
            messages, model, True, frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty, repetition_penalty=repetition_penalty, stop=stop,
            max_seconds=max_seconds, ignore_eos=ignore_eos,
            skip_special_tokens=skip_special_tokens, stop_token_ids=stop_token_ids,
            max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            stream_options=stream_options, tools=tools,
        )  # fmt: skip
        yield from self._backend.stream(Endpoint.CHAT, request)

    # ------------------------------------------------------------------ images, audio

    def images_generate(
        self,
        prompt: str,
        model: str | None = None,
        negative_prompt: str | None = "blurry",
        seed: int | None = 27,
        seed_increment: int | None = 100,
        n: int | None = 1,
        num_inference_steps: int | None = 20,
        size: str | None = "512x512",
        guidance_scale: float | None = 6.5,
        cache_interval: int | None = None,
        response_format: str | None = "b64_json",
    ) -> ImageResponse:
        """Generate ``n`` PNG images (base64, or a URL with ``response_format='url'``)."""
        request = build(
            ImageRequest, prompt=prompt, model=model or self.default_model_tti, stream=False,
            negative_prompt=negative_prompt,
            seed=seed, seed_increment=seed_increment, n=n,
            num_inference_steps=num_inference_steps, size=size, guidance_scale=guidance_scale,
            cache_interval=cache_interval, response_format=response_format,
        )  # fmt: skip
        response: ImageResponse = self._backend.run(Endpoint.IMAGES, request)
        return response

    def images_generate_stream(
        self,
        prompt: str,
        model: str | None = None,
        negative_prompt: str | None = "blurry",
        seed: int | None = 27,
        seed_increment: int | None = 100,
        n: int | None = 1,
        num_inference_steps: int | None = 20,
        size: str | None = "512x512",
        guidance_scale: float | None = 6.5,
        cache_interval: int | None = None,
        response_format: str | None = "b64_json",
    ) -> Iterator[ImageResponse]:
        """Generate ``n`` images, one response per finished image."""
        request = build(
            ImageRequest, prompt=prompt, model=model or self.default_model_tti, stream=True,
            negative_prompt=negative_prompt,
            seed=seed, seed_increment=seed_increment, n=n,
            num_inference_steps=num_inference_steps, size=size, guidance_scale=guidance_scale,
            cache_interval=cache_interval, response_format=response_format,
        )  # fmt: skip
        yield from self._backend.stream(Endpoint.IMAGES, request)

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
