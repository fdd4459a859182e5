"""OpenAI-compatible routes under ``/v1``: chat/completions, completions, embeddings, models.

The ``openai`` Python client and tools built on it work against the same engine. Requests are
parsed into OpenAI-shaped edge DTOs, translated into the Imagine DTOs the engine takes, and the
engine's responses are rendered back in OpenAI's shapes (integer ``created``, ``content`` null
beside tool calls, tool calls streamed as deltas, usage on a trailing ``choices: []`` chunk when
``stream_options.include_usage`` is set, base64 embeddings on request).

The request bodies and their translation are in ``server/openai_requests.py``: ``seed``,
``response_format`` (json_object, json_schema; regex, lark, gbnf as extensions), ``tools`` with
``tool_choice``, ``logprobs`` / ``top_logprobs`` and ``n`` <= 4 are honoured
(docs/structured.md); ``user`` is accepted and ignored. The ``n`` choices of one request run as
n engine calls admitted together, sharing the prompt's KV cache through the pool's prefix reuse.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from imagine_edge.models.structured import structured_spec
from imagine_edge.sdk.engine import Call, Engine
from imagine_edge.sdk.errors import ImagineException, InvalidRequestError, ModelNotFoundError
from imagine_edge.sdk.types import (
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    ChatMessageToolCall,
    ChoiceLogprobs,
    CompletionResponse,
    CompletionStreamResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    UsageInfo,
)
from imagine_edge.sdk.validation import build
from imagine_edge.server.errors import error_response
from imagine_edge.server.openai_requests import (
    OpenAIChatRequest,
    OpenAICompletionRequest,
    OpenAIEmbeddingRequest,
    chat_requests,
    completion_requests,
)
from imagine_edge.server.routes_imagine import ERROR_RESPONSES, result_or_cancel, submit_off_loop
from imagine_edge.server.sse import error_event, sse_response

__all__ = ["openai_router"]


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
    if usage.seed is not None:  # the seed to send again to reproduce the answer
        out["seed"] = usage.seed
    return out


def _chat_logprobs(logprobs: ChoiceLogprobs | None) -> dict[str, Any] | None:
    return None if logprobs is None else {"content": logprobs.model_dump(mode="json")["content"]}


def _completion_logprobs(logprobs: ChoiceLogprobs | None) -> dict[str, Any] | None:
    """The legacy completions shape: parallel lists, alternatives as {token: logprob}."""
    if logprobs is None:
        return None
    offsets, at = [], 0
    for t in logprobs.content:
        offsets.append(at)
        at += len(t.token)
    return {
        "tokens": [t.token for t in logprobs.content],
        "token_logprobs": [t.logprob for t in logprobs.content],
        "top_logprobs": [{a.token: a.logprob for a in t.top_logprobs} for t in logprobs.content],
        "text_offset": offsets,
    }


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


def _chat_choice(r: ChatCompletionResponse, index: int) -> dict[str, Any]:
    choice = r.choices[0]
    message = choice.message
    calls = _tool_calls(message.tool_calls)
    out: dict[str, Any] = {
        "role": "assistant",
        "content": (message.content or None) if calls else (message.content or ""),
    }
    if calls:
        out["tool_calls"] = calls
    return {
        "index": index,
        "message": out,
        "finish_reason": choice.finish_reason,
        "logprobs": _chat_logprobs(choice.logprobs),
    }


def _merged_usage(usages: list[UsageInfo]) -> dict[str, Any] | None:
    """One usage for n choices: the prompt once (later choices reuse its KV), completions summed,
    the first choice's seed and timings."""
    first = _usage(usages[0])
    if first is None or len(usages) == 1:
        return first
    completion = sum(u.completion_tokens or 0 for u in usages)
    first["completion_tokens"] = completion
    first["total_tokens"] = first["prompt_tokens"] + completion
    return first


def _chat_json(results: list[ChatCompletionResponse]) -> dict[str, Any]:
    r = results[0]
    return {
        "id": r.id,
        "object": "chat.completion",
        "created": int(r.created),
        "model": r.model,
        "choices": [_chat_choice(x, i) for i, x in enumerate(results)],
        "usage": _merged_usage([x.usage for x in results]),
    }


def _completion_json(results: list[CompletionResponse]) -> dict[str, Any]:
    r = results[0]
    choices = [
        {
            "index": i,
            "text": x.choices[0].text,
            "finish_reason": x.choices[0].finish_reason,
            "logprobs": _completion_logprobs(x.choices[0].logprobs),
        }
        for i, x in enumerate(results)
    ]
    usages = [x.usage for x in results if x.usage is not None]
    return {
        "id": r.id,
        "object": "text_completion",
        "created": int(r.created),
        "model": r.model,
        "choices": choices,
        "usage": _merged_usage(usages) if usages else None,
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
            # As OpenAI streams them: the call's id, type and name with empty arguments, then
            # the arguments.
            for i, c in enumerate(calls):
                head = {**c, "function": {"name": c["function"]["name"], "arguments": ""}}
                arguments = {"function": {"arguments": c["function"]["arguments"]}}
                frames.append(self._chunk(final, {"tool_calls": [{"index": i, **head}]}, None))
                frames.append(self._chunk(final, {"tool_calls": [{"index": i, **arguments}]}, None))
        frames.append(self._chunk(final, {}, final.choices[0].finish_reason))
        if self._include_usage:
            frames.append({**frames[-1], "choices": [], "usage": _usage(final.usage)})
        return frames

    def error(self, exc: ImagineException) -> Mapping[str, Any]:
        assert self._call.error_event is not None
        return error_event(self._chunk(self._call.error_event(exc), {}, "error"), exc, openai=True)


async def _run(
    request: Request,
    engine_calls: list[Callable[[], Call[Any, Any]]],
    render: Callable[[list[Any]], dict[str, Any]],
    *,
    stream: bool,
    chat: bool,
    include_usage: bool,
    heartbeat: float,
) -> Response:
    """Admit every call (one per choice; any refusal cancels those admitted), then answer."""
    calls: list[Call[Any, Any]] = []
    try:
        for engine_call in engine_calls:
            calls.append(await submit_off_loop(engine_call))  # noqa: PERF401  kept on a refusal
    except ImagineException as exc:
        for admitted in calls:
            admitted.cancel()
        return error_response(exc, stream=stream, openai=True)
    if stream:
        renderer = _OpenAIRenderer(calls[0], chat, include_usage)
        return await sse_response(calls[0], renderer, heartbeat=heartbeat, openai=True)
    try:
        results = [await result_or_cancel(call, request) for call in calls]
    except BaseException:
        for call in calls:
            call.cancel()
        raise
    return JSONResponse(render(results))


def openai_router(engine: Engine, *, heartbeat: float) -> APIRouter:
    """The ``/v1`` routes over ``engine``."""
    router = APIRouter(responses=ERROR_RESPONSES)

    @router.post("/chat/completions")
    async def chat(body: OpenAIChatRequest, request: Request) -> Response:
        reqs = chat_requests(body)
        first = reqs[0]  # 400s before queuing
        structured_spec(first.response_format, first.tools, first.tool_choice)
        usage = bool((body.stream_options or {}).get("include_usage"))
        return await _run(
            request,
            [functools.partial(engine.chat, r) for r in reqs],
            _chat_json,
            stream=body.stream,
            chat=True,
            include_usage=usage,
            heartbeat=heartbeat,
        )

    @router.post("/completions")
    async def completions(body: OpenAICompletionRequest, request: Request) -> Response:
        reqs = completion_requests(body)
        usage = bool((body.stream_options or {}).get("include_usage"))
        return await _run(
            request,
            [functools.partial(engine.completion, r) for r in reqs],
            _completion_json,
            stream=body.stream,
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

        def render(results: list[EmbeddingResponse]) -> dict[str, Any]:
            r = results[0]

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
            [lambda: engine.embeddings(req)],
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
