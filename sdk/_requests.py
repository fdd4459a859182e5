"""One request builder per endpoint, with the official client's signature; the clients' methods.

Each builder takes exactly the parameters of the official client's method (``imagine.ImagineClient``
and ``imagine.ImagineAsyncClient`` share them) and returns the validated request DTO, the client's
default model name filling in a missing ``model``. The four method factories turn a builder into a
method of the sync or the async client that sends the request through the client's backend and
has the builder's signature (plus ``self``), name and docstring, so that every parameter list is
written once. A stream method sends the same request with ``stream`` true.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from pydantic import BaseModel

from imagine_edge.sdk.engine import CLIENT_DEFAULT_NAMES
from imagine_edge.sdk.paths import Endpoint
from imagine_edge.sdk.types import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
    ImageRequest,
    ModelType,
    ReRankerRequest,
    TranslateRequest,
)
from imagine_edge.sdk.validation import build

__all__ = [
    "arun_method",
    "astream_method",
    "chat",
    "chat_stream",
    "completion",
    "embeddings",
    "images_generate",
    "reranker",
    "run_method",
    "stream_method",
    "translate",
]

P = ParamSpec("P")
R = TypeVar("R")
E = TypeVar("E")


def _fields(params: dict[str, Any], model_type: ModelType) -> dict[str, Any]:
    """A builder's arguments as DTO fields; no model means the client's default name."""
    return params | {"model": params["model"] or CLIENT_DEFAULT_NAMES[model_type]}


def _messages(messages: Iterable[Any]) -> list[Any]:
    # ChatMessage objects of this package or of the official client, or plain dicts.
    return [m.model_dump(exclude_none=True) if isinstance(m, BaseModel) else m for m in messages]


# ---------------------------------------------------------------------------------- builders


def embeddings(text: str | list[str], model: str | None = None) -> EmbeddingRequest:
    """Embed a text or a list of texts (one vector each, in input order)."""
    fields = _fields({"input": text, "model": model}, ModelType.EMBEDDING)
    return build(EmbeddingRequest, **fields)


def reranker(
    query: str,
    documents: list[str],
    model: str | None = None,
    top_n: int | None = None,
    return_documents: bool | None = None,
) -> ReRankerRequest:
    """Rank documents by relevance to the query, best first (all of them without top_n)."""
    return build(ReRankerRequest, **_fields(locals(), ModelType.RERANKER))


def translate(
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
) -> TranslateRequest:
    """Translate ``prompt`` with ``model`` (required, as in the official client)."""
    return build(TranslateRequest, stream=False, **locals())


def completion(
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
) -> CompletionRequest:
    """Continue ``prompt`` (the stream method: chunk by chunk; stopping it cancels generation)."""
    return build(CompletionRequest, stream=False, **_fields(locals(), ModelType.LLM))


def chat(
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
) -> ChatCompletionRequest:
    """Answer the conversation (tool calls come back in the message); the async client's
    chat_stream takes these parameters too, and answers chunk by chunk."""
    return chat_stream(**locals())


def chat_stream(
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
) -> ChatCompletionRequest:
    """Answer the conversation chunk by chunk (usage on the last); stopping cancels."""
    fields = _fields(locals(), ModelType.LLM) | {"messages": _messages(messages)}
    return build(ChatCompletionRequest, stream=False, **fields)


def images_generate(
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
) -> ImageRequest:
    """Generate ``n`` PNG images (base64, or a URL with ``response_format='url'``); the stream
    method answers one response per finished image."""
    return build(ImageRequest, stream=False, **_fields(locals(), ModelType.TEXT_TO_IMAGE))


# ---------------------------------------------------------------------------------- methods


class _Sync(Protocol):
    def run(self, endpoint: Endpoint, request: BaseModel) -> Any: ...
    def stream(self, endpoint: Endpoint, request: BaseModel) -> Iterator[Any]: ...


class _Async(Protocol):
    async def run(self, endpoint: Endpoint, request: BaseModel) -> Any: ...
    def stream(self, endpoint: Endpoint, request: BaseModel) -> AsyncIterator[Any]: ...


class _HasSync(Protocol):
    @property
    def _backend(self) -> _Sync: ...


class _HasAsync(Protocol):
    @property
    def _backend(self) -> _Async: ...


S = TypeVar("S", bound=_HasSync)
A = TypeVar("A", bound=_HasAsync)


def _streaming(request: BaseModel) -> BaseModel:
    return request.model_copy(update={"stream": True})


def _method(fn: Callable[..., Any], builder: Callable[..., Any], name: str) -> Any:
    """``fn`` named ``name``, with ``builder``'s docstring and signature after ``self``."""
    signature = inspect.signature(builder)
    own = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = builder.__doc__
    fn.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[own, *signature.parameters.values()], return_annotation=signature.empty
    )
    return fn


def run_method(
    endpoint: Endpoint, builder: Callable[P, BaseModel], response: type[R]
) -> Callable[Concatenate[S, P], R]:
    """The sync client's method that sends ``builder``'s request and returns the response."""

    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self._backend.run(endpoint, builder(*args, **kwargs))
        return result

    return _method(method, builder, builder.__name__)  # type: ignore[no-any-return]


def stream_method(
    endpoint: Endpoint, builder: Callable[P, BaseModel], event: type[E], name: str
) -> Callable[Concatenate[S, P], Iterator[E]]:
    """The sync client's method that streams ``builder``'s request (a generator)."""

    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[E]:
        yield from self._backend.stream(endpoint, _streaming(builder(*args, **kwargs)))

    return _method(method, builder, name)  # type: ignore[no-any-return]


def arun_method(
    endpoint: Endpoint, builder: Callable[P, BaseModel], response: type[R]
) -> Callable[Concatenate[A, P], Coroutine[Any, Any, R]]:
    """The async client's method (a coroutine function) that sends ``builder``'s request."""

    async def method(self: A, /, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = await self._backend.run(endpoint, builder(*args, **kwargs))
        return result

    return _method(method, builder, builder.__name__)  # type: ignore[no-any-return]


def astream_method(
    endpoint: Endpoint, builder: Callable[P, BaseModel], event: type[E], name: str
) -> Callable[Concatenate[A, P], AsyncIterator[E]]:
    """The async client's method (an async generator) that streams ``builder``'s request."""

    async def method(self: A, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[E]:
        async for item in self._backend.stream(endpoint, _streaming(builder(*args, **kwargs))):
            yield item

    return _method(method, builder, name)  # type: ignore[no-any-return]
