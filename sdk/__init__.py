"""The public API of imagine-edge: the DTOs, the errors and the clients.

``ImagineEdge`` and ``AsyncImagineEdge`` mirror the official ``imagine.ImagineClient`` and
``imagine.ImagineAsyncClient`` (same methods, parameters, defaults and DTOs), running the models
in process or, given ``base_url``, talking to an ``imagine-edge serve`` server.

Every name loads on first access: importing ``imagine_edge.sdk`` (which ``runtime`` and
``models`` do, for the DTOs and errors) pulls in neither pydantic nor the engine, and cannot
close the import cycle sdk -> models -> runtime -> sdk.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imagine_edge.sdk.client import AsyncImagineEdge, ImagineEdge
    from imagine_edge.sdk.errors import (
        ContextLengthError,
        ImagineAPIException,
        ImagineAPIStatusException,
        ImagineAPITooManyRequestsException,
        ImagineConnectionException,
        ImagineException,
        InferenceError,
        InvalidRequestError,
        ModelNotFoundError,
        ModelRunError,
        ModelUnavailableError,
        NoHistoryError,
        PayloadTooLargeError,
    )
    from imagine_edge.sdk.types import (
        ChatCompletionRequest,
        ChatCompletionResponse,
        ChatCompletionResponseChoice,
        ChatCompletionResponseStreamChoice,
        ChatCompletionStreamResponse,
        ChatMessage,
        ChatMessageToolCall,
        CompletionRequest,
        CompletionResponse,
        CompletionResponseChoice,
        CompletionResponseStreamChoice,
        CompletionStreamResponse,
        DeltaMessage,
        EmbeddingObject,
        EmbeddingRequest,
        EmbeddingResponse,
        FinishReason,
        Function,
        FunctionTool,
        HealthResponse,
        Image,
        ImageRequest,
        ImageResponse,
        ImageSamplingParams,
        LLMSamplingParams,
        ModelType,
        PingResponse,
        ReRankerObject,
        ReRankerRequest,
        ReRankerResponse,
        Tools,
        TranscribeRequest,
        TranscribeResponse,
        TranslateRequest,
        TranslateResponse,
        UsageInfo,
        UsageRecord,
        UsageRecordAggregated,
        UsageResponse,
    )

_MODULES = {
    **dict.fromkeys(("ImagineEdge", "AsyncImagineEdge"), "imagine_edge.sdk.client"),
    "ContextLengthError": "imagine_edge.sdk.errors",
    "ImagineAPIException": "imagine_edge.sdk.errors",
    "ImagineAPIStatusException": "imagine_edge.sdk.errors",
    "ImagineAPITooManyRequestsException": "imagine_edge.sdk.errors",
    "ImagineConnectionException": "imagine_edge.sdk.errors",
    "ImagineException": "imagine_edge.sdk.errors",
    "InferenceError": "imagine_edge.sdk.errors",
    "InvalidRequestError": "imagine_edge.sdk.errors",
    "ModelNotFoundError": "imagine_edge.sdk.errors",
    "ModelRunError": "imagine_edge.sdk.errors",
    "ModelUnavailableError": "imagine_edge.sdk.errors",
    "NoHistoryError": "imagine_edge.sdk.errors",
    "PayloadTooLargeError": "imagine_edge.sdk.errors",
    "ChatCompletionRequest": "imagine_edge.sdk.types",
    "ChatCompletionResponse": "imagine_edge.sdk.types",
    "ChatCompletionResponseChoice": "imagine_edge.sdk.types",
    "ChatCompletionResponseStreamChoice": "imagine_edge.sdk.types",
    "ChatCompletionStreamResponse": "imagine_edge.sdk.types",
    "ChatMessage": "imagine_edge.sdk.types",
    "ChatMessageToolCall": "imagine_edge.sdk.types",
    "CompletionRequest": "imagine_edge.sdk.types",
    "CompletionResponse": "imagine_edge.sdk.types",
    "CompletionResponseChoice": "imagine_edge.sdk.types",
    "CompletionResponseStreamChoice": "imagine_edge.sdk.types",
    "CompletionStreamResponse": "imagine_edge.sdk.types",
    "DeltaMessage": "imagine_edge.sdk.types",
    "EmbeddingObject": "imagine_edge.sdk.types",
    "EmbeddingRequest": "imagine_edge.sdk.types",
    "EmbeddingResponse": "imagine_edge.sdk.types",
    "FinishReason": "imagine_edge.sdk.types",
    "Function": "imagine_edge.sdk.types",
    "FunctionTool": "imagine_edge.sdk.types",
    "HealthResponse": "imagine_edge.sdk.types",
    "Image": "imagine_edge.sdk.types",
    "ImageRequest": "imagine_edge.sdk.types",
    "ImageResponse": "imagine_edge.sdk.types",
    "ImageSamplingParams": "imagine_edge.sdk.types",
    "LLMSamplingParams": "imagine_edge.sdk.types",
    "ModelType": "imagine_edge.sdk.types",
    "PingResponse": "imagine_edge.sdk.types",
    "ReRankerObject": "imagine_edge.sdk.types",
    "ReRankerRequest": "imagine_edge.sdk.types",
    "ReRankerResponse": "imagine_edge.sdk.types",
    "Tools": "imagine_edge.sdk.types",
    "TranscribeRequest": "imagine_edge.sdk.types",
    "TranscribeResponse": "imagine_edge.sdk.types",
    "TranslateRequest": "imagine_edge.sdk.types",
    "TranslateResponse": "imagine_edge.sdk.types",
    "UsageInfo": "imagine_edge.sdk.types",
    "UsageRecord": "imagine_edge.sdk.types",
    "UsageRecordAggregated": "imagine_edge.sdk.types",
    "UsageResponse": "imagine_edge.sdk.types",
}

__all__ = [
    "AsyncImagineEdge",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatCompletionResponseChoice",
    "ChatCompletionResponseStreamChoice",
    "ChatCompletionStreamResponse",
    "ChatMessage",
    "ChatMessageToolCall",
    "CompletionRequest",
    "CompletionResponse",
    "CompletionResponseChoice",
    "CompletionResponseStreamChoice",
    "CompletionStreamResponse",
    "ContextLengthError",
    "DeltaMessage",
    "EmbeddingObject",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "FinishReason",
    "Function",
    "FunctionTool",
    "HealthResponse",
    "Image",
    "ImageRequest",
    "ImageResponse",
    "ImageSamplingParams",
    "ImagineAPIException",
    "ImagineAPIStatusException",
    "ImagineAPITooManyRequestsException",
    "ImagineConnectionException",
    "ImagineEdge",
    "ImagineException",
    "InferenceError",
    "InvalidRequestError",
    "LLMSamplingParams",
    "ModelNotFoundError",
    "ModelRunError",
    "ModelType",
    "ModelUnavailableError",
    "NoHistoryError",
    "PayloadTooLargeError",
    "PingResponse",
    "ReRankerObject",
    "ReRankerRequest",
    "ReRankerResponse",
    "Tools",
    "TranscribeRequest",
    "TranscribeResponse",
    "TranslateRequest",
    "TranslateResponse",
    "UsageInfo",
    "UsageRecord",
    "UsageRecordAggregated",
    "UsageResponse",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'imagine_edge.sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
