"""The Imagine API routes (docs/contract.md, Endpoints), mounted under a prefix such as ``/api/v2``.

Handlers parse the body into the contract's DTOs, hand them to the engine, and turn the call
into JSON or server-sent events; they never block the event loop (inference runs on the model
workers; admission, which validates and serializes the request, and SQLite reads run in the
thread pool). POST runs, GET on the same path reads its history. The usage query's values are
checked here, before the store sees them: a duration of at most ``MAX_USAGE_BIN_SECONDS`` and
dates that have an epoch time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, TypeVar

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from imagine_edge.sdk.engine import (
    CLIENT_DEFAULT_NAMES,
    Call,
    Engine,
    parse_client_datetime,
    parse_duration,
)
from imagine_edge.sdk.errors import ImagineException, InvalidRequestError
from imagine_edge.sdk.paths import Endpoint
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
from imagine_edge.server.sanitize import public_message
from imagine_edge.server.sse import error_event, sse_response

__all__ = [
    "ERROR_RESPONSES",
    "MAX_USAGE_BIN_SECONDS",
    "imagine_router",
    "result_or_cancel",
    "submit_off_loop",
]

MAX_USAGE_BIN_SECONDS: Final = 9_999 * 604_800  # 9,999 weeks, the largest the pattern allows
# What the usage query accepts, stated in the OpenAPI document (checked by the code too).
_DURATION_PATTERN: Final = (
    r"^\s*([1-9][0-9]{0,3})?\s*"
    r"(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)\s*$"
)
_DATE_PATTERN: Final = (
    r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
    r"([ T]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
    # An offset's '+' arrives as a space when the client does not encode it.
    r"([+ -]([01][0-9]|2[0-3]):?[0-5][0-9]|Z)?)?$"
)

E = TypeVar("E", bound=BaseModel)
_HISTORIES = (Endpoint.EMBEDDINGS, Endpoint.RERANKER, Endpoint.COMPLETIONS, Endpoint.CHAT)
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text}
    for code, text in [
        (400, "Malformed body, or a prompt over the model's context"),
        (403, "Host or Origin not allowed (loopback guard)"),
        (404, "Unknown model"),
        (409, "No model of this type here (or busy, on a stream)"),
        (413, "Input too large"),
        (422, "Invalid request"),
        (429, "The model's queue is full; see Retry-After"),
    ]
}


class ChatMessageIn(ChatMessage):
    """A request message. The official client omits ``content`` when it is None, so an
    assistant tool-call turn arrives without it (docs/contract.md, Endpoints): missing means
    null."""

    content: str | list[dict[str, Any]] | None = Field(
        None, description="The text, a list of OpenAI-style content parts, or null."
    )


class ChatRequestIn(ChatCompletionRequest):
    """Body of POST chat/completions, as the official client sends it."""

    messages: list[ChatMessageIn] = Field(  # type: ignore[assignment]
        description="The conversation so far.", json_schema_extra={"minItems": 1}
    )


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


async def submit_off_loop(submit: Callable[[], Call[Any, Any]]) -> Call[Any, Any]:
    """Run an engine admission in the thread pool: it validates and copies the request, which
    takes a while for a large one, and the event loop must keep serving everyone else."""
    return await run_in_threadpool(submit)


def _usage_datetime(text: str | None, name: str) -> dt.datetime | None:
    if text is None:
        return None
    value = parse_client_datetime(text, name)
    try:
        value.timestamp()
    except (ValueError, OverflowError, OSError):
        raise InvalidRequestError(
            f"{name} must be a date and time between 1970 and 9999, got {text!r}"
        ) from None
    return value


def _usage_duration(text: str | None) -> str | None:
    if text is not None and parse_duration(text) > MAX_USAGE_BIN_SECONDS:
        raise InvalidRequestError(
            f"aggregation_duration must be at most {MAX_USAGE_BIN_SECONDS // 604_800} weeks, "
            f"got {text[:100]!r}"
        )
    return text


async def _respond(
    request: Request, submit: Callable[[], Call[Any, Any]], *, stream: bool, heartbeat: float
) -> Response:
    try:
        call = await submit_off_loop(submit)
    except ImagineException as exc:
        return error_response(exc, stream=stream)
    if stream:
        return await sse_response(call, _ImagineRenderer(call), heartbeat=heartbeat, openai=False)
    result: BaseModel = await result_or_cancel(call, request)
    return JSONResponse(result.model_dump(mode="json"))


def imagine_router(
    engine: Engine, *, heartbeat: float, image_url: Callable[[str], str]
) -> APIRouter:
    """The routes of docs/contract.md, Endpoints over ``engine``."""
    router = APIRouter(responses=ERROR_RESPONSES)

    @router.get("/ping", response_model=PingResponse)
    async def ping() -> PingResponse:
        return engine.ping()

    @router.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        health = await run_in_threadpool(engine.health)
        # Load failures name files and runtime internals: health is public, so it says less.
        return health.model_copy(update={"models": public_message(health.models)})

    @router.get("/models", response_model=dict[str, Any])
    async def models(model_type: ModelType | None = None) -> dict[str, Any]:
        # Keyed by type value, [] for a type without models; "aliases" and "defaults" say
        # which local model each client default name means, "untrained" which models have
        # random weights (the client drops keys that are not model types).
        by_type = engine.index.models(model_type)
        defaults = {t.value: engine.index.default_card(t) for t in by_type}
        return {
            **{t.value: names for t, names in by_type.items()},
            "aliases": engine.index.aliases(),
            "defaults": {t: c.name for t, c in defaults.items() if c is not None},
            "untrained": [c.name for c in engine.index.cards if not c.trained],
        }

    @router.get("/usage", response_model=UsageResponse)
    async def usage(
        aggregation_duration: Annotated[
            str | None,
            Query(
                description="Bin width, like '1 day' or '15 minutes'.",
                json_schema_extra={"pattern": _DURATION_PATTERN},
            ),
        ] = None,
        since: Annotated[
            str | None,
            Query(
                alias="from",
                description="Start, like '2024-01-02 03:04:05+00:00'.",
                json_schema_extra={"pattern": _DATE_PATTERN},
            ),
        ] = None,
        until: Annotated[
            str | None,
            Query(
                alias="to",
                description="End (not before from).",
                json_schema_extra={"pattern": _DATE_PATTERN},
            ),
        ] = None,
        model: str | None = None,
    ) -> UsageResponse:
        start, end = _usage_datetime(since, "from"), _usage_datetime(until, "to")
        duration = _usage_duration(aggregation_duration)
        return await run_in_threadpool(engine.usage, duration, start, end, model)

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
        file: Annotated[
            UploadFile,
            File(
                description="The audio file (not empty); its format is sniffed.",
                json_schema_extra={"minLength": 1},
            ),
        ],
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
    # The bound is the engine's (it checks it too, for the in-process API).
    # Not Annotated: the bound is the engine's, and a string annotation cannot see a local.
    max_items_query = Query(
        1, ge=1, le=engine.limits.max_history_items, description="How many pairs, newest first."
    )

    async def history(
        max_items: int = max_items_query,
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
