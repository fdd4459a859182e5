"""OpenAI-compatible routes under ``/v1``: chat/completions, completions, embeddings, models.

The ``openai`` Python client and tools built on it work against the same engine. Requests are
parsed into OpenAI-shaped edge DTOs, translated into the Imagine DTOs the engine takes, and the
engine's responses are rendered back in OpenAI's shapes (integer ``created``, ``content`` null
beside tool calls, tool calls streamed as deltas, usage on a trailing ``choices: []`` chunk when
``stream_options.include_usage`` is set, base64 embeddings on request).

Not supported, with a 422 that says so: ``n`` > 1, ``logprobs``, token-id inputs, embedding
``dimensions``, and ``response_format`` other than text. ``seed``, ``user`` and
``tool_choice`` other than 'none' are accepted and ignored.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.responses import Response

from imagine_edge.sdk.engine import Call, Engine
from imagine_edge.sdk.errors import ImagineException, InvalidRequestError, ModelNotFoundError
from imagine_edge.sdk.types import (
    INT32_MAX,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    REPETITION_PENALTY_RANGE,
    SEED_RANGE,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    ChatMessageToolCall,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Tools,
    UsageInfo,
)
from imagine_edge.sdk.validation import build, check_request_text, schema_range
from imagine_edge.server.errors import error_response
from imagine_edge.server.routes_imagine import ERROR_RESPONSES, result_or_cancel, submit_off_loop
from imagine_edge.server.sse import error_event, sse_response

__all__ = ["openai_router"]


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # The ranges are checked by the Imagine DTO each request becomes; they are stated here
    # too, for the OpenAPI document.
    model: str
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, json_schema_extra=schema_range(1, INT32_MAX))
    temperature: float | None = Field(None, json_schema_extra=schema_range(0, 2))
    top_p: float | None = Field(None, json_schema_extra=schema_range(0, 1, exclusive_low=True))
    frequency_penalty: float | None = Field(None, json_schema_extra=schema_range(-2, 2))
    presence_penalty: float | None = Field(None, json_schema_extra=schema_range(-2, 2))
    stop: str | list[str] | None = Field(
        None,
        json_schema_extra=schema_range(items=MAX_STOP_STRINGS)
        | {"maxLength": MAX_STOP_CHARS, "items": {"type": "string", "maxLength": MAX_STOP_CHARS}},
    )
    n: int | None = Field(None, description="Must be 1.", json_schema_extra=schema_range(1, 1))
    logprobs: bool | int | None = Field(
        None,
        description="Not supported: false, 0 or absent.",
        json_schema_extra={"enum": [False, 0, None]},
    )
    seed: int | None = Field(
        None, description="Accepted and ignored.", json_schema_extra=schema_range(*SEED_RANGE)
    )
    # Common extensions (vLLM, llama.cpp) passed through extra_body.
    top_k: int | None = Field(
        None, json_schema_extra=schema_range(-1, INT32_MAX) | {"not": {"const": 0}}
    )
    repetition_penalty: float | None = Field(
        None, json_schema_extra=schema_range(*REPETITION_PENALTY_RANGE)
    )
    min_tokens: int | None = Field(None, json_schema_extra=schema_range(0, INT32_MAX))

    @model_validator(mode="before")
    @classmethod
    def _check_input(cls, data: Any) -> Any:
        # The Imagine DTO checks again; this one runs before the body is copied into it.
        check_request_text(data)
        return data

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int | None) -> int | None:
        low, high = SEED_RANGE
        if v is not None and not low <= v <= high:
            raise ValueError(f"seed must be in [{low}, {high}], got {v}")
        return v

    def imagine_params(self) -> dict[str, Any]:
        if self.n not in (None, 1):
            raise InvalidRequestError(f"n must be 1 (one choice per request), got {self.n}")
        if self.logprobs:
            raise InvalidRequestError("logprobs are not supported")
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        params = self.model_dump(
            include={
                "max_tokens",
                "temperature",
                "top_p",
                "frequency_penalty",
                "presence_penalty",
                "top_k",
                "repetition_penalty",
                "min_tokens",
                "model",
                "stream",
            }
        )
        return {**params, "stop": stop}


class OpenAIMessage(BaseModel):
    """An OpenAI chat message (``content`` may be omitted beside tool calls)."""

    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ChatMessageToolCall] | None = None
    tool_call_id: str | None = None


class OpenAIChatRequest(_Sampling):
    """Body of POST /v1/chat/completions."""

    messages: list[OpenAIMessage] = Field(json_schema_extra={"minItems": 1})
    max_completion_tokens: int | None = Field(None, json_schema_extra=schema_range(1, INT32_MAX))
    tools: list[Tools] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class OpenAICompletionRequest(_Sampling):
    """Body of POST /v1/completions."""

    prompt: str | list[str] = Field(
        description="One text (a list must hold exactly one).",
        json_schema_extra={"not": {"type": "array", "not": {"minItems": 1, "maxItems": 1}}},
    )


class OpenAIEmbeddingRequest(BaseModel):
    """Body of POST /v1/embeddings."""

    model_config = ConfigDict(extra="ignore")

    model: str
    input: str | list[str] = Field(
        description="A text or a non-empty list of texts; token ids are not supported.",
        json_schema_extra={"not": {"type": "array", "maxItems": 0}},
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(
        None,
        description="Not supported: vectors keep their size (null or absent).",
        json_schema_extra={"not": {"type": "integer"}},
    )

    @model_validator(mode="before")
    @classmethod
    def _no_token_ids(cls, data: Any) -> Any:
        check_request_text(data)
        texts = data.get("input") if isinstance(data, dict) else None
        if isinstance(texts, list) and any(isinstance(t, int | list) for t in texts):
            raise ValueError("input must be a text or a list of texts; token ids are not supported")
        return data


def _chat_request(body: OpenAIChatRequest) -> ChatCompletionRequest:
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise InvalidRequestError(
            "response_format must be {'type': 'text'}; others are not supported"
        )
    params = body.imagine_params()
    if body.max_completion_tokens is not None:
        params["max_tokens"] = body.max_completion_tokens
    tools = None if body.tool_choice == "none" else body.tools
    messages = [m.model_dump(exclude_none=True) | {"content": m.content} for m in body.messages]
    return build(ChatCompletionRequest, messages=messages, tools=tools, **params)


def _completion_request(body: OpenAICompletionRequest) -> CompletionRequest:
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise InvalidRequestError(f"prompt must be one text, got a list of {len(prompts)}")
    return build(CompletionRequest, prompt=prompts[0], **body.imagine_params())


def _usage(usage: UsageInfo | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    prompt, completion = usage.prompt_tokens or 0, usage.completion_tokens or 0
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if usage.timings is not None:  # an extension the openai client keeps as an extra field
        out["timings"] = usage.timings.model_dump(mode="json")
    return out


def _tool_calls(calls: list[ChatMessageToolCall] | None) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "type": c.type or "function",
            "function": {
                "name": c.function.name if c.function else None,
                "arguments": c.function.arguments if c.function else "{}",
            },
        }
        for c in calls or []
    ]


def _chat_json(r: ChatCompletionResponse) -> dict[str, Any]:
    message = r.choices[0].message
    calls = _tool_calls(message.tool_calls)
    out: dict[str, Any] = {
        "role": "assistant",
        "content": (message.content or None) if calls else (message.content or ""),
    }
    if calls:
        out["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": out,
        "finish_reason": r.choices[0].finish_reason,
        "logprobs": None,
    }
    return {
        "id": r.id,
        "object": "chat.completion",
        "created": int(r.created),
        "model": r.model,
        "choices": [choice],
        "usage": _usage(r.usage),
    }


def _completion_json(r: CompletionResponse) -> dict[str, Any]:
    choice = r.choices[0]
    return {
        "id": r.id,
        "object": "text_completion",
        "created": int(r.created),
        "model": r.model,
        "choices": [
            {
                "index": 0,
                "text": choice.text,
                "finish_reason": choice.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage(r.usage),
    }


class _OpenAIRenderer:
    """OpenAI stream chunks; the final chunk is held until the result gives the tool calls."""

    def __init__(self, call: Call[Any, Any], chat: bool, include_usage: bool) -> None:
        self._call, self._chat, self._include_usage = call, chat, include_usage
        self._final: ChatCompletionStreamResponse | CompletionStreamResponse | None = None

    def _chunk(self, e: Any, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        key = "delta" if self._chat else "text"
        value: Any = delta if self._chat else delta.get("content", "")
        return {
            "id": e.id,
            "object": "chat.completion.chunk" if self._chat else "text_completion",
            "created": int(e.created or time.time()),
            "model": e.model,
            "choices": [{"index": 0, key: value, "finish_reason": finish, "logprobs": None}],
        }

    def event(
        self, e: ChatCompletionStreamResponse | CompletionStreamResponse
    ) -> list[Mapping[str, Any]]:
        choice = e.choices[0]
        delta = {k: v for k, v in choice.delta.model_dump().items() if v is not None}
        if choice.finish_reason is not None:
            self._final = e
            return [self._chunk(e, delta, None)] if delta.get("content") else []
        return [self._chunk(e, delta, None)]

    def end(self) -> list[Mapping[str, Any]]:
        final = self._final
        if final is None:
            return []
        frames: list[Mapping[str, Any]] = []
        result = self._call.consumed_result()
        if self._chat and (calls := _tool_calls(result.choices[0].message.tool_calls)):
            indexed = [{"index": i, **c} for i, c in enumerate(calls)]
            frames.append(self._chunk(final, {"tool_calls": indexed}, None))
        frames.append(self._chunk(final, {}, final.choices[0].finish_reason))
        if self._include_usage:
            frames.append({**frames[-1], "choices": [], "usage": _usage(final.usage)})
        return frames

    def error(self, exc: ImagineException) -> Mapping[str, Any]:
        assert self._call.error_event is not None
        return error_event(self._chunk(self._call.error_event(exc), {}, "error"), exc, openai=True)


async def _run(
    request: Request,
    engine_call: Callable[[], Call[Any, Any]],
    render: Callable[[Any], dict[str, Any]],
    *,
    stream: bool,
    chat: bool,
    include_usage: bool,
    heartbeat: float,
) -> Response:
    try:
        call = await submit_off_loop(engine_call)
    except ImagineException as exc:
        return error_response(exc, stream=stream, openai=True)
    if stream:
        renderer = _OpenAIRenderer(call, chat, include_usage)
        return await sse_response(call, renderer, heartbeat=heartbeat, openai=True)
    return JSONResponse(render(await result_or_cancel(call, request)))


def openai_router(engine: Engine, *, heartbeat: float) -> APIRouter:
    """The ``/v1`` routes over ``engine``."""
    router = APIRouter(responses=ERROR_RESPONSES)

    @router.post("/chat/completions")
    async def chat(body: OpenAIChatRequest, request: Request) -> Response:
        req = _chat_request(body)
        usage = bool((body.stream_options or {}).get("include_usage"))
        return await _run(
            request,
            lambda: engine.chat(req),
            _chat_json,
            stream=req.stream,
            chat=True,
            include_usage=usage,
            heartbeat=heartbeat,
        )

    @router.post("/completions")
    async def completions(body: OpenAICompletionRequest, request: Request) -> Response:
        req = _completion_request(body)
        usage = bool((body.stream_options or {}).get("include_usage"))
        return await _run(
            request,
            lambda: engine.completion(req),
            _completion_json,
            stream=req.stream,
            chat=False,
            include_usage=usage,
            heartbeat=heartbeat,
        )

    @router.post("/embeddings")
    async def embeddings(body: OpenAIEmbeddingRequest, request: Request) -> Response:
        texts = body.input
        if body.dimensions is not None:
            raise InvalidRequestError("dimensions is not supported: vectors keep their native size")
        req = build(EmbeddingRequest, input=texts, model=body.model)

        def render(r: EmbeddingResponse) -> dict[str, Any]:
            def vector(values: list[float]) -> Any:
                if body.encoding_format == "float":
                    return values
                return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()

            data = [
                {"object": "embedding", "index": d.index, "embedding": vector(d.embedding)}
                for d in r.data
            ]
            tokens = r.usage.prompt_tokens or 0
            usage: dict[str, Any] = {"prompt_tokens": tokens, "total_tokens": tokens}
            if r.usage.timings is not None:
                usage["timings"] = r.usage.timings.model_dump(mode="json")
            return {"object": "list", "data": data, "model": r.model, "usage": usage}

        return await _run(
            request,
            lambda: engine.embeddings(req),
            render,
            stream=False,
            chat=False,
            include_usage=False,
            heartbeat=heartbeat,
        )

    def model_json(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "imagine-edge"}

    @router.get("/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_json(c.name) for c in engine.index.cards]}

    @router.get("/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        card = engine.index.lookup(model_id)
        if card is None:
            raise ModelNotFoundError(f"unknown model {model_id!r}")
        return model_json(card.name)

    return router
