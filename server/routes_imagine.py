"""The Imagine API routes (CONTRACT.md §2), mounted under a prefix such as ``/api/v2``.

Handlers parse the body into the contract's DTOs, hand them to the engine, and turn the call
into JSON or server-sent events; they never block the event loop (inference runs on the model
workers, SQLite reads in the thread pool). POST runs, GET on the same path reads its history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from imagine_edge.sdk.engine import CLIENT_DEFAULT_NAMES, Engine
from imagine_edge.sdk.engine.calls import Call
from imagine_edge.sdk.engine.recorder import Endpoint, parse_client_datetime
from imagine_edge.sdk.errors import ImagineException
from imagine_edge.sdk.types import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CompletionRequest,
    CompletionResponse,
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
from imagine_edge.server.errors import error_response
from imagine_edge.server.sse import error_event, sse_response

__all__ = ["imagine_router", "result_or_cancel"]

E = TypeVar("E", bound=BaseModel)
_HISTORIES = (Endpoint.EMBEDDINGS, Endpoint.RERANKER, Endpoint.COMPLETIONS, Endpoint.CHAT)
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text}
    for code, text in [
        (404, "Unknown model"),
        (409, "No model of this type here (or busy, on a stream)"),
        (413, "Input too large"),
        (422, "Invalid request"),
        (429, "The model's queue is full; see Retry-After"),
    ]
}


class ChatMessageIn(ChatMessage):
    """A request message. The official client omits ``content`` when it is None, so an
    assistant tool-call turn arrives without it (CONTRACT.md §2.9): missing means null."""

    content: str | list[dict[str, Any]] | None = Field(
        None, description="The text, a list of OpenAI-style content parts, or null."
    )


class ChatRequestIn(ChatCompletionRequest):
    """Body of POST chat/completions, as the official client sends it."""

    messages: list[ChatMessageIn] = Field(description="The conversation so far.")  # type: ignore[assignment]


async def result_or_cancel(call: Call[Any, E], request: Request) -> E:
    """Await the call's result; cancel it if the client disconnects first."""

    async def watch() -> None:
        # The body has been read, so the next message the server gives is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        call.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await call.aresult()
    finally:
        watcher.cancel()


class _ImagineRenderer:
    """Imagine stream events: the DTO as is; the failure event gets an 'error' description."""

    def __init__(self, call: Call[Any, Any]) -> None:
        self._call = call

    def event(self, event: BaseModel) -> list[Mapping[str, Any]]:
        return [event.model_dump(mode="json")]

    def end(self) -> list[Mapping[str, Any]]:
        return []

    def error(self, exc: ImagineException) -> Mapping[str, Any]:
        assert self._call.error_event is not None
        payload = self._call.error_event(exc).model_dump(mode="json")
        return error_event(payload, exc, openai=False)


async def _respond(
    request: Request, submit: Callable[[], Call[Any, Any]], *, stream: bool, heartbeat: float
) -> Response:
    try:
        call = submit()
    except ImagineException as exc:
        return error_response(exc, stream=stream)
    if stream:
        return await sse_response(call, _ImagineRenderer(call), heartbeat=heartbeat, openai=False)
    result: BaseModel = await result_or_cancel(call, request)
    return JSONResponse(result.model_dump(mode="json"))


def imagine_router(
    engine: Engine, *, heartbeat: float, image_url: Callable[[str], str]
) -> APIRouter:
    """The routes of CONTRACT.md §2 over ``engine``."""
    router = APIRouter(responses=_ERRORS)

    @router.get("/ping", response_model=PingResponse)
    async def ping() -> PingResponse:
        return engine.ping()

    @router.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        return await run_in_threadpool(engine.health)

    @router.get("/models", response_model=dict[str, Any])
    async def models(model_type: ModelType | None = None) -> dict[str, Any]:
        # Keyed by type value, [] for a type without models; "aliases" and "defaults" say
        # which local model each client default name means, "untrained" which models have
        # random weights (the client drops keys that are not model types).
        by_type = engine.models(model_type)
        defaults = {t.value: engine.default_card(t) for t in by_type}
        return {
            **{t.value: names for t, names in by_type.items()},
            "aliases": engine.aliases(),
            "defaults": {t: c.name for t, c in defaults.items() if c is not None},
            "untrained": [c.name for c in engine.cards if not c.trained],
        }

    @router.get("/usage", response_model=UsageResponse)
    async def usage(
        aggregation_duration: str | None = None,
        since: Annotated[str | None, Query(alias="from")] = None,
        until: Annotated[str | None, Query(alias="to")] = None,
        model: str | None = None,
    ) -> UsageResponse:
        start = None if since is None else parse_client_datetime(since, "from")
        end = None if until is None else parse_client_datetime(until, "to")
        return await run_in_threadpool(engine.usage, aggregation_duration, start, end, model)

    @router.post("/embeddings", response_model=EmbeddingResponse)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
        return await _respond(
            request, lambda: engine.embeddings(body), stream=False, heartbeat=heartbeat
        )

    @router.post("/reranker", response_model=ReRankerResponse)
    async def reranker(body: ReRankerRequest, request: Request) -> Response:
        return await _respond(
            request, lambda: engine.rerank(body), stream=False, heartbeat=heartbeat
        )

    @router.post("/translate", response_model=TranslateResponse)
    async def translate(body: TranslateRequest, request: Request) -> Response:
        return await _respond(
            request, lambda: engine.translate(body), stream=False, heartbeat=heartbeat
        )

    @router.post("/completions", response_model=CompletionResponse)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await _respond(
            request, lambda: engine.completion(body), stream=body.stream, heartbeat=heartbeat
        )

    @router.post("/chat/completions", response_model=ChatCompletionResponse)
    async def chat(body: ChatRequestIn, request: Request) -> Response:
        return await _respond(
            request, lambda: engine.chat(body), stream=body.stream, heartbeat=heartbeat
        )

    @router.post("/images/generations", response_model=ImageResponse)
    async def images(body: ImageRequest, request: Request) -> Response:
        return await _respond(
            request, lambda: engine.images(body, image_url), stream=body.stream, heartbeat=heartbeat
        )

    @router.post("/transcribe", response_model=TranscribeResponse)
    async def transcribe(
        request: Request,
        file: Annotated[UploadFile, File(description="The audio file; its format is sniffed.")],
        model: Annotated[str, Form()] = CLIENT_DEFAULT_NAMES[ModelType.TRANSCRIBE],
    ) -> Response:
        audio = await file.read()
        return await _respond(
            request, lambda: engine.transcribe(audio, model), stream=False, heartbeat=heartbeat
        )

    for endpoint in _HISTORIES:
        _add_history(router, engine, endpoint)
    return router


def _add_history(router: APIRouter, engine: Engine, endpoint: Endpoint) -> None:
    # The upper bound (engine.limits.max_history_items) is checked by the engine: a 422 too.
    async def history(
        max_items: Annotated[int, Query(ge=1, description="How many pairs, newest first.")] = 1,
    ) -> list[list[dict[str, Any]]]:
        return await run_in_threadpool(engine.history, endpoint, max_items)

    router.add_api_route(
        f"/{endpoint.value}",
        history,
        methods=["GET"],
        response_model=list[list[dict[str, Any]]],
        name=f"{endpoint.value.replace('/', '_')}_history",
        summary=f"The last max_items [response, request] pairs of POST {endpoint.value}",
        responses={404: {"description": "No request recorded yet"}},
    )
