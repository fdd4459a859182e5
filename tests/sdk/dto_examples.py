"""One fully populated example per DTO, the input of the golden and cross-check tests.

Every optional field is set (to a non-default value where one exists), so the goldens pin each
field's name, type and serialisation.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel

from imagine_edge.sdk import types as t

_SAMPLING = {
    "frequency_penalty": 0.5,
    "presence_penalty": -0.25,
    "repetition_penalty": 1.1,
    "stop": ["\n\n", "END"],
    "max_seconds": 30,
    "ignore_eos": False,
    "skip_special_tokens": True,
    "stop_token_ids": [[2], [11, 12]],
    "max_tokens": 64,
    "temperature": 0.7,
    "top_k": 40,
    "top_p": 0.9,
    "stream_options": {"include_usage": True},
    "seed": 42,
    "logprobs": True,
    "top_logprobs": 2,
}
_USAGE = t.UsageInfo(
    prompt_tokens=12,
    completion_tokens=3,
    total_tokens=15,
    seed=42,
    timings=t.UsageTimings(
        queue_ms=1.5, load_ms=0.0, prefill_ms=20.25, decode_ms=30.0, tokens_per_s=100.0
    ),
)
_TOOL_CALL = t.ChatMessageToolCall(
    id="call_1",
    type="function",
    function=t.Function(name="get_weather", arguments='{"city": "Paris"}'),
)
_TOOL = t.Tools(
    type="function",
    function=t.FunctionTool(
        name="get_weather",
        description="Current weather of a city.",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    ),
)
_MESSAGES = [
    t.ChatMessage(role="system", content="You are terse."),
    t.ChatMessage(role="user", content=[{"type": "text", "text": "Weather in Paris?"}]),
    t.ChatMessage(role="assistant", content=None, tool_calls=[_TOOL_CALL]),
    t.ChatMessage(role="tool", content="sunny", tool_call_id="call_1", name="get_weather"),
]
_TOP = t.TopLogprob(token=" there", logprob=-0.25, bytes=[32, 116, 104, 101, 114, 101])
_TOKEN_LOGPROB = t.TokenLogprob(
    token=" there",
    logprob=-0.25,
    bytes=[32, 116, 104, 101, 114, 101],
    top_logprobs=[_TOP, t.TopLogprob(token=" was", logprob=-1.5, bytes=[32, 119, 97, 115])],
)
_LOGPROBS = t.ChoiceLogprobs(content=[_TOKEN_LOGPROB])
_COMPLETION_CHOICE = t.CompletionResponseChoice(
    index=0, text=" there was", finish_reason="length", logprobs=_LOGPROBS
)
_CREATED = 1_700_000_000.0
_IMAGE_PARAMS = {
    "negative_prompt": "low quality",
    "seed": 7,
    "seed_increment": 3,
    "n": 2,
    "num_inference_steps": 4,
    "size": "256x256",
    "guidance_scale": 1.0,
    "cache_interval": 2,
    "response_format": "url",
}
_AGGREGATED = {
    "userid": "local",
    "model": "smollm2-135m-instruct",
    "total_input_tokens": 10,
    "total_output_tokens": 20,
    "total_tokens": 30,
    "total_generation_time": 0.5,
}

EXAMPLES: dict[str, BaseModel] = {
    "UsageInfo": _USAGE,
    "UsageTimings": _USAGE.timings,  # type: ignore[dict-item]
    "TopLogprob": _TOP,
    "TokenLogprob": _TOKEN_LOGPROB,
    "ChoiceLogprobs": _LOGPROBS,
    "DeltaMessage": t.DeltaMessage(role="assistant", content="Hel"),
    "LLMSamplingParams": t.LLMSamplingParams(**_SAMPLING),
    "FunctionTool": _TOOL.function,
    "Tools": _TOOL,
    "Function": _TOOL_CALL.function,  # type: ignore[dict-item]
    "ChatMessageToolCall": _TOOL_CALL,
    "ChatMessage": _MESSAGES[3],
    "ChatCompletionRequest": t.ChatCompletionRequest(
        **_SAMPLING,
        messages=_MESSAGES,
        model="Llama-3.1-8B",
        stream=False,
        tools=[_TOOL],
        tool_choice="auto",
        response_format={"type": "json_object"},
    ),
    "ChatCompletionResponseChoice": t.ChatCompletionResponseChoice(
        index=0,
        message=t.ChatMessage(role="assistant", content="", tool_calls=[_TOOL_CALL]),
        finish_reason="tool_calls",
    ),
    "ChatCompletionResponse": t.ChatCompletionResponse(
        id="chatcmpl-1",
        object="chat.completion",
        created=_CREATED,
        model="smollm2-135m-instruct",
        choices=[
            t.ChatCompletionResponseChoice(
                index=0,
                message=t.ChatMessage(role="assistant", content="Paris."),
                finish_reason="stop",
            )
        ],
        usage=_USAGE,
    ),
    "ChatCompletionResponseStreamChoice": t.ChatCompletionResponseStreamChoice(
        index=0, delta=t.DeltaMessage(content="lo"), finish_reason=None
    ),
    "ChatCompletionStreamResponse": t.ChatCompletionStreamResponse(
        id="chatcmpl-1",
        model="smollm2-135m-instruct",
        choices=[
            t.ChatCompletionResponseStreamChoice(
                index=0, delta=t.DeltaMessage(content=""), finish_reason="stop"
            )
        ],
        created=_CREATED,
        object="chat.completion.chunk",
        usage=_USAGE,
    ),
    "CompletionRequest": t.CompletionRequest(
        **_SAMPLING, prompt="Once upon a time", model="Llama-3.1-8B", stream=True
    ),
    "CompletionResponseChoice": _COMPLETION_CHOICE,
    "CompletionResponse": t.CompletionResponse(
        id="cmpl-1",
        object="text_completion",
        created=_CREATED,
        model="smollm2-135m-instruct",
        choices=[_COMPLETION_CHOICE],
        usage=_USAGE,
        generation_time=1.5,
    ),
    "CompletionResponseStreamChoice": t.CompletionResponseStreamChoice(
        index=0, delta=t.DeltaMessage(content=" there"), finish_reason=None
    ),
    "CompletionStreamResponse": t.CompletionStreamResponse(
        id="cmpl-1",
        model="smollm2-135m-instruct",
        choices=[
            t.CompletionResponseStreamChoice(
                index=0, delta=t.DeltaMessage(content=""), finish_reason="length"
            )
        ],
        created=_CREATED,
        object="text_completion",
        usage=_USAGE,
    ),
    "TranslateRequest": t.TranslateRequest(
        prompt="How are you today?", model="bergamot-en-pt-tiny", stream=False, max_tokens=64
    ),
    "TranslateResponse": t.TranslateResponse(
        id="tr-1",
        object="translation",
        created=_CREATED,
        model="bergamot-en-pt-tiny",
        choices=[t.CompletionResponseChoice(index=0, text="Como você está?", finish_reason="stop")],
        usage=_USAGE,
        generation_time=0.01,
    ),
    "EmbeddingObject": t.EmbeddingObject(object="embedding", embedding=[0.6, -0.8], index=0),
    "EmbeddingRequest": t.EmbeddingRequest(id="emb-1", input="A man is eating food", model="m"),
    "EmbeddingResponse": t.EmbeddingResponse(
        id="emb-1",
        object="list",
        data=[t.EmbeddingObject(object="embedding", embedding=[0.6, -0.8], index=0)],
        model="all-minilm-l6-v2",
        usage=t.UsageInfo(prompt_tokens=4, total_tokens=4),
    ),
    "ReRankerRequest": t.ReRankerRequest(
        query="How many people live in Berlin?",
        documents=["Berlin has 3.8 million inhabitants.", "New York is big."],
        top_n=1,
        model="BAAI/bge-reranker-base",
        return_documents=True,
    ),
    "ReRankerObject": t.ReRankerObject(document="d0", index=1, relevance_score=0.93),
    "ReRankerResponse": t.ReRankerResponse(
        id="rr-1",
        data=[t.ReRankerObject(document="d0", index=1, relevance_score=0.93)],
        failure=None,
        model="minilm-bi-encoder-reranker",
        object="list",
        usage=t.UsageInfo(prompt_tokens=20, total_tokens=20),
    ),
    "ImageSamplingParams": t.ImageSamplingParams(**_IMAGE_PARAMS),
    "ImageRequest": t.ImageRequest(
        **_IMAGE_PARAMS, prompt="a red square", model="sdxl-turbo", stream=False
    ),
    "Image": t.Image(b64_json="iVBORw0KGgo=", url="/v2/files/img-1-0.png"),
    "ImageResponse": t.ImageResponse(
        id="img-1",
        model="tiny-sd-random",
        object="text_to_image",
        created=_CREATED,
        data=[t.Image(b64_json="iVBORw0KGgo=")],
    ),
    "TranscribeRequest": t.TranscribeRequest(model="whisper-tiny"),
    "TranscribeResponse": t.TranscribeResponse(
        generation_time=0.42, id="asr-1", text="hello world", ts="2026-11-26T06:00:00+00:00"
    ),
    "PingResponse": t.PingResponse(message="pong", status="ok"),
    "HealthResponse": t.HealthResponse(
        postgres="not used", redis="not used", models="smollm2-135m-instruct: loaded"
    ),
    "UsageRecordAggregated": t.UsageRecordAggregated(**_AGGREGATED),
    "UsageRecord": t.UsageRecord(**_AGGREGATED, date_bin=dt.datetime(2026, 11, 26, tzinfo=dt.UTC)),
    "UsageResponse": t.UsageResponse(
        usage=[t.UsageRecord(**_AGGREGATED, date_bin=dt.datetime(2026, 11, 26, tzinfo=dt.UTC))],
        overall=[t.UsageRecordAggregated(**_AGGREGATED)],
    ),
}
