"""The Imagine SDK data-transfer objects: the one API contract imagine-edge serves.

This module owns the wire shapes of every request and response (docs/contract.md, DTO rules), shared
by the in-process API and the HTTP server. Class names, field names, types and defaults follow the
official ``python-imagine-sdk`` 0.5.0 client so that its JSON validates here and ours there
(``tests/sdk`` cross-checks both directions). Where we are stricter, it is on purpose and only on
requests: sampling ranges are validated so a bad value fails with a message naming the value and the
valid range, instead of reaching the sampler, and the ranges are stated in the JSON schema. Every
request's texts are checked before a tokenizer sees them (valid Unicode, at most
``MAX_REQUEST_CHARS`` characters in all) and its numbers must be finite (``sdk/validation.py``).

Invariants:
- Responses never carry integer ids: ``id``, ``model`` and ``object`` are strings (§5).
- ``finish_reason`` is one of :class:`FinishReason` and present on every choice (nullable).
- Only pydantic, the standard library and ``sdk/validation.py`` are imported here (no runtime,
  no onnxruntime).

It stays one module (~770 lines, over the project's ~400) on purpose: it is the contract, read as
one document beside docs/contract.md, and its DTOs share one set of building blocks (sampling
params, messages, usage, the enums and range checks) that pydantic resolves in one namespace.
"""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any, Final

from pydantic import BaseModel, Field, field_validator, model_validator

from imagine_edge.sdk.validation import check_request_text, schema_range

__all__ = [
    "GUIDANCE_SCALE_RANGE",
    "INT32_MAX",
    "MAX_STOP_CHARS",
    "MAX_STOP_STRINGS",
    "MAX_STOP_TOKEN_IDS",
    "MAX_TOP_LOGPROBS",
    "REPETITION_PENALTY_RANGE",
    "SEED_RANGE",
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatCompletionResponseChoice",
    "ChatCompletionResponseStreamChoice",
    "ChatCompletionStreamResponse",
    "ChatMessage",
    "ChatMessageToolCall",
    "ChoiceLogprobs",
    "CompletionRequest",
    "CompletionResponse",
    "CompletionResponseChoice",
    "CompletionResponseStreamChoice",
    "CompletionStreamResponse",
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
    "LLMSamplingParams",
    "ModelType",
    "PingResponse",
    "ReRankerObject",
    "ReRankerRequest",
    "ReRankerResponse",
    "TokenLogprob",
    "Tools",
    "TopLogprob",
    "TranscribeRequest",
    "TranscribeResponse",
    "TranslateRequest",
    "TranslateResponse",
    "UsageInfo",
    "UsageRecord",
    "UsageRecordAggregated",
    "UsageResponse",
    "UsageTimings",
]


INT32_MAX: Final = 2**31 - 1
# Stop conditions are matched on every generated token: their number and size are bounded.
MAX_STOP_STRINGS: Final = 16
MAX_STOP_CHARS: Final = 500
MAX_STOP_TOKEN_IDS: Final = 16
REPETITION_PENALTY_RANGE: Final = (1e-3, 1e3)
GUIDANCE_SCALE_RANGE: Final = (0.0, 100.0)
SEED_RANGE: Final = (-(2**63), 2**64 - 1)
MAX_TOP_LOGPROBS: Final = 20


class _Request(BaseModel):
    """Base of request DTOs: texts are valid Unicode and bounded, numbers finite."""

    @model_validator(mode="before")
    @classmethod
    def _check_input(cls, data: Any) -> Any:
        check_request_text(data)
        return data


class ModelType(str, Enum):  # noqa: UP042  str() must stay "ModelType.X", as in the client
    """The kinds of model the contract knows; the value is what travels on the wire."""

    EMBEDDING = "embedding"
    LLM = "llm"
    RERANKER = "reranker"
    TEXT_TO_IMAGE = "text_to_image"
    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"

    def __repr__(self) -> str:
        return f"<ModelType.{self.name}>"


class FinishReason(str, Enum):  # noqa: UP042  str() is "FinishReason.x", as in the client
    """Why a choice ended. The official client accepts exactly these four values."""

    stop = "stop"
    length = "length"
    error = "error"
    tool_calls = "tool_calls"


# --------------------------------------------------------------------------- common


class UsageTimings(BaseModel):
    """Where one request's time went (an imagine-edge extension of usage, docs/server.md).

    Not in the official client's DTO, which ignores extra keys (docs/contract.md, DTO rules)."""

    queue_ms: float = Field(description="Waiting in the model's queue, after admission.")
    load_ms: float = Field(0.0, description="Loading the model for this request (0 if loaded).")
    prefill_ms: float = Field(
        description="Computing the prompt (LLM: prefill; embeddings and reranking: the run)."
    )
    decode_ms: float = Field(0.0, description="Generating the completion tokens.")
    tokens_per_s: float | None = Field(
        None, description="Completion tokens per second of decode (None without any)."
    )


class UsageInfo(BaseModel):
    """Token counts of one request, and where its time went."""

    prompt_tokens: int | None = Field(None, description="Tokens in the prompt.")
    total_tokens: int | None = Field(None, description="Prompt plus completion tokens.")
    completion_tokens: int | None = Field(None, description="Tokens generated.")
    timings: UsageTimings | None = Field(
        None, description="imagine-edge extension: queue, load, prefill and decode times."
    )
    seed: int | None = Field(
        None, description="imagine-edge extension: the sampling seed the request ran with."
    )


class DeltaMessage(BaseModel):
    """The increment of a streamed message: a role on the first chunk, then text."""

    role: str | None = Field(None, description="Role of the author, sent on the first chunk.")
    content: str | None = Field(None, description="Text added by this chunk.")


def _check_range(name: str, value: float | None, low: float, high: float, spec: str) -> None:
    if value is not None and not low <= value <= high:
        raise ValueError(f"{name} must be in {spec}, got {value}")


def _check_int(name: str, value: int | None, low: int, high: int = INT32_MAX) -> None:
    if value is not None and not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


class LLMSamplingParams(_Request):
    """Sampling parameters shared by chat, completion and translate requests.

    Every field is optional; None means the model's default. Ranges are validated here so that
    a bad value is rejected with a message naming it before any work is done.
    """

    frequency_penalty: float | None = Field(
        None,
        description="Subtracts frequency_penalty * count from a generated token's logit, "
        "in [-2, 2] (OpenAI semantics, over generated tokens only).",
        json_schema_extra=schema_range(-2, 2),
    )
    presence_penalty: float | None = Field(
        None,
        description="Subtracts presence_penalty from the logit of every token generated at "
        "least once, in [-2, 2].",
        json_schema_extra=schema_range(-2, 2),
    )
    repetition_penalty: float | None = Field(
        None,
        description="Divides positive and multiplies negative logits of tokens seen in the "
        "prompt or output, in [0.001, 1000] (1 is off).",
        json_schema_extra=schema_range(*REPETITION_PENALTY_RANGE),
    )
    stop: list[str] | None = Field(
        None,
        description=f"Strings that end generation (at most {MAX_STOP_STRINGS}, each of at most "
        f"{MAX_STOP_CHARS} characters); the returned text includes the stop.",
        json_schema_extra=schema_range(items=MAX_STOP_STRINGS)
        | {"items": {"type": "string", "maxLength": MAX_STOP_CHARS}},
    )
    max_seconds: int | None = Field(
        None,
        description="Wall-clock budget for generation in seconds, >= 1; when it runs out the "
        "choice ends with finish_reason 'length'.",
        json_schema_extra=schema_range(1, INT32_MAX),
    )
    ignore_eos: bool | None = Field(
        None, description="Keep generating past the end-of-sequence token."
    )
    skip_special_tokens: bool | None = Field(
        None, description="Leave special tokens out of the returned text (default true)."
    )
    stop_token_ids: list[list[int]] | None = Field(
        None,
        description=f"Token-id sequences that end generation when the output ends with one (at "
        f"most {MAX_STOP_TOKEN_IDS} sequences of 1 to {MAX_STOP_TOKEN_IDS} ids).",
        json_schema_extra=schema_range(items=MAX_STOP_TOKEN_IDS)
        | {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_STOP_TOKEN_IDS,
                "items": {"type": "integer", "minimum": 0, "maximum": INT32_MAX},
            }
        },
    )
    max_tokens: int | None = Field(
        None,
        description="Maximum number of tokens to generate, >= 1.",
        json_schema_extra=schema_range(1, INT32_MAX),
    )
    min_tokens: int | None = Field(
        None,
        description="An extension (vLLM's min_tokens; the official client does not send it): "
        "generate at least this many tokens before the end-of-sequence token or a stop_token_ids "
        "sequence may end the reply, in [0, max_tokens]. Stop strings and max_seconds still end "
        "it.",
        json_schema_extra=schema_range(0, INT32_MAX),
    )
    temperature: float | None = Field(
        None,
        description="Sampling temperature in [0, 2]; 0 (or <= 1e-5) is greedy.",
        json_schema_extra=schema_range(0, 2),
    )
    top_k: int | None = Field(
        None,
        description="Keep the k most likely tokens, >= 1; -1 or 0 turns top-k off.",
        json_schema_extra=schema_range(-1, INT32_MAX),
    )
    top_p: float | None = Field(
        None,
        description="Keep the smallest set of tokens with probability mass >= top_p, in (0, 1].",
        json_schema_extra=schema_range(0, 1, exclusive_low=True),
    )
    stream_options: dict[str, Any] | None = Field(
        None,
        description="Streaming options; {'include_usage': true} puts usage on the final chunk.",
    )
    # imagine-edge extensions (docs/structured.md): ignored by the official client's DTO.
    seed: int | None = Field(
        None,
        description="imagine-edge extension: the sampling seed; the same seed and request give "
        "the same output, but for near-ties a step shared with other requests may round "
        "differently (docs/batching.md). Unset: a fresh seed per request, reported in usage.seed.",
        json_schema_extra=schema_range(*SEED_RANGE),
    )
    logprobs: bool | None = Field(
        None, description="imagine-edge extension: return each output token's log-probability."
    )
    top_logprobs: int | None = Field(
        None,
        description=f"imagine-edge extension: the most likely alternatives per token, in "
        f"[0, {MAX_TOP_LOGPROBS}] (needs logprobs).",
        json_schema_extra=schema_range(0, MAX_TOP_LOGPROBS),
    )

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int | None) -> int | None:
        _check_int("seed", v, *SEED_RANGE)
        return v

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs(cls, v: int | None) -> int | None:
        _check_int("top_logprobs", v, 0, MAX_TOP_LOGPROBS)
        return v

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: float | None) -> float | None:
        _check_range("temperature", v, 0.0, 2.0, "[0, 2]")
        return v

    @field_validator("top_p")
    @classmethod
    def _top_p(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 < v <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {v}")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _openai_penalty(cls, v: float | None, info: Any) -> float | None:
        _check_range(info.field_name, v, -2.0, 2.0, "[-2, 2]")
        return v

    @field_validator("repetition_penalty")
    @classmethod
    def _repetition_penalty(cls, v: float | None) -> float | None:
        # A tiny penalty overflows the logits it divides (1e-300 gave NaN), a huge one the
        # negative logits it multiplies.
        _check_range("repetition_penalty", v, *REPETITION_PENALTY_RANGE, "[0.001, 1000]")
        return v

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, v: int | None) -> int | None:
        # The kernels' rule and message (kernels.SamplingConfig, docs/sampling.md), bounded above.
        if v is not None and not -1 <= v <= INT32_MAX:
            raise ValueError(
                f"top_k must be an integer in [-1, {INT32_MAX}] (-1 or 0 = off), got {v}"
            )
        return v

    @field_validator("max_tokens", "max_seconds")
    @classmethod
    def _positive(cls, v: int | None, info: Any) -> int | None:
        _check_int(info.field_name, v, 1)
        return v

    @field_validator("min_tokens")
    @classmethod
    def _min_tokens(cls, v: int | None) -> int | None:
        _check_int("min_tokens", v, 0)
        return v

    @model_validator(mode="after")
    def _min_within_max(self) -> LLMSamplingParams:
        # Against the model's default max_tokens too, where the plan is built (runtime/sampling).
        low, high = self.min_tokens, self.max_tokens
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_tokens ({low}) must not exceed max_tokens ({high})")
        return self

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(v) > MAX_STOP_STRINGS:
            raise ValueError(f"stop must hold at most {MAX_STOP_STRINGS} strings, got {len(v)}")
        for text in v or []:
            if len(text) > MAX_STOP_CHARS:
                raise ValueError(
                    f"each stop string must be at most {MAX_STOP_CHARS} characters, got one of "
                    f"{len(text)}"
                )
        return v

    @field_validator("stop_token_ids")
    @classmethod
    def _stop_token_ids(cls, v: list[list[int]] | None) -> list[list[int]] | None:
        if v is not None and len(v) > MAX_STOP_TOKEN_IDS:
            raise ValueError(
                f"stop_token_ids must hold at most {MAX_STOP_TOKEN_IDS} sequences, got {len(v)}"
            )
        for seq in v or []:
            if not seq:
                raise ValueError("stop_token_ids must not contain an empty sequence")
            if len(seq) > MAX_STOP_TOKEN_IDS:
                raise ValueError(
                    f"each stop_token_ids sequence must hold at most {MAX_STOP_TOKEN_IDS} ids, "
                    f"got {len(seq)}"
                )
            if any(not 0 <= t <= INT32_MAX for t in seq):
                raise ValueError(f"stop_token_ids must be token ids in [0, {INT32_MAX}], got {seq}")
        return v


# --------------------------------------------------------------------------- chat


class FunctionTool(BaseModel):
    """A function the model may call."""

    description: str | None = Field(None, description="What the function does.")
    name: str = Field(description="The function's name.")
    parameters: dict[str, Any] | None = Field(
        None, description="JSON Schema of the function's arguments."
    )


class Tools(BaseModel):
    """A tool offered to the model; only 'function' tools exist."""

    type: str = Field(description="The tool type, 'function'.")
    function: FunctionTool = Field(description="The function offered.")


class Function(BaseModel):
    """The function part of a tool call."""

    name: str | None = Field(None, description="Name of the function called.")
    arguments: str | None = Field(
        None, description="The call's arguments as a JSON-encoded string."
    )


class ChatMessageToolCall(BaseModel):
    """A tool call made by the assistant."""

    id: str | None = Field(None, description="Identifier of the call, echoed by the tool reply.")
    type: str | None = Field(None, description="The call type, 'function'.")
    function: Function | None = Field(None, description="The function and its arguments.")


class ChatMessage(BaseModel):
    """One message of a conversation."""

    role: str = Field(description="Author of the message: system, user, assistant or tool.")
    content: str | list[dict[str, Any]] | None = Field(
        description="The text, a list of OpenAI-style content parts, or null (a tool-call turn)."
    )
    tool_calls: list[ChatMessageToolCall] | None = Field(
        None, description="Tool calls made by an assistant message."
    )
    tool_call_id: str | None = Field(None, description="The call a tool message answers.")
    name: str | None = Field(None, description="Optional name of the author.")


class TopLogprob(BaseModel):
    """One alternative at a generated token's position (imagine-edge extension)."""

    token: str = Field(description="The token's text.")
    logprob: float = Field(description="Its log-probability (docs/structured.md, Logprobs).")
    bytes: list[int] | None = Field(None, description="The token's UTF-8 bytes.")


class TokenLogprob(TopLogprob):
    """A generated token with its log-probability and the most likely alternatives."""

    top_logprobs: list[TopLogprob] = Field(
        default_factory=list, description="The most likely tokens there, most likely first."
    )


class ChoiceLogprobs(BaseModel):
    """The log-probabilities of a choice's tokens (imagine-edge extension, OpenAI's shape)."""

    content: list[TokenLogprob] = Field(description="One entry per generated token.")


class ChatCompletionRequest(LLMSamplingParams):
    """Body of POST chat/completions."""

    messages: list[ChatMessage] = Field(
        description="The conversation so far.", json_schema_extra={"minItems": 1}
    )
    model: str = Field(description="Name (or alias) of the LLM to use.")
    stream: bool = Field(description="Stream the answer as server-sent events.")
    tools: list[Tools] | None = Field(None, description="Tools the model may call.")
    tool_choice: str | dict[str, Any] | None = Field(
        None,
        description="imagine-edge extension: 'auto' (default with tools), 'none', 'required' or "
        "{'type': 'function', 'function': {'name': ...}}; required and named force a call that "
        "matches the tool's parameters.",
    )
    response_format: dict[str, Any] | None = Field(
        None,
        description="imagine-edge extension: {'type': 'text' | 'json_object' | 'json_schema' | "
        "'regex' | 'lark' | 'gbnf', ...}; the output is constrained to it (docs/structured.md).",
    )


class ChatCompletionResponseChoice(BaseModel):
    """One answer of a chat completion."""

    index: int = Field(description="Position of the choice.")
    message: ChatMessage = Field(description="The assistant's message.")
    finish_reason: FinishReason | None = Field(description="Why generation ended.")
    logprobs: ChoiceLogprobs | None = Field(
        None, description="imagine-edge extension: token log-probabilities, when asked for."
    )


class ChatCompletionResponse(BaseModel):
    """Response of a non-streaming chat completion."""

    id: str = Field(description="Identifier of the completion.")
    object: str = Field(description="Always 'chat.completion'.")
    created: float = Field(description="Creation time, seconds since the epoch.")
    model: str = Field(description="The model that answered.")
    choices: list[ChatCompletionResponseChoice] = Field(description="The answers.")
    usage: UsageInfo = Field(description="Token counts.")

    @property
    def first_content(self) -> str | list[dict[str, Any]] | None:
        """The content of the first choice's message."""
        return self.choices[0].message.content


class ChatCompletionResponseStreamChoice(BaseModel):
    """One choice of a streamed chat chunk."""

    index: int = Field(description="Position of the choice.")
    delta: DeltaMessage = Field(description="What this chunk adds.")
    finish_reason: FinishReason | None = Field(
        description="Why generation ended; null until the last chunk."
    )


class ChatCompletionStreamResponse(BaseModel):
    """One server-sent event of a streamed chat completion."""

    id: str = Field(description="Identifier of the completion, the same on every chunk.")
    model: str = Field(description="The model that answers.")
    choices: list[ChatCompletionResponseStreamChoice] = Field(description="The choices' deltas.")
    created: float | None = Field(None, description="Creation time, seconds since the epoch.")
    object: str | None = Field(None, description="Always 'chat.completion.chunk'.")
    usage: UsageInfo | None = Field(None, description="Token counts, on the final chunk.")

    @property
    def first_content(self) -> str | None:
        """The text delta of the first choice."""
        return self.choices[0].delta.content


# --------------------------------------------------------------------------- completions


class CompletionRequest(LLMSamplingParams):
    """Body of POST completions."""

    prompt: str = Field(description="The text to continue.")
    model: str = Field(description="Name (or alias) of the LLM to use.")
    stream: bool = Field(description="Stream the answer as server-sent events.")


class CompletionResponseChoice(BaseModel):
    """One continuation of a completion."""

    index: int = Field(description="Position of the choice.")
    text: str = Field(description="The generated text.")
    finish_reason: FinishReason | None = Field(description="Why generation ended.")
    logprobs: ChoiceLogprobs | None = Field(
        None, description="imagine-edge extension: token log-probabilities, when asked for."
    )


class CompletionResponse(BaseModel):
    """Response of a non-streaming completion."""

    id: str = Field(description="Identifier of the completion.")
    object: str = Field(description="Always 'text_completion'.")
    created: float = Field(description="Creation time, seconds since the epoch.")
    model: str = Field(description="The model that answered.")
    choices: list[CompletionResponseChoice] = Field(description="The continuations.")
    usage: UsageInfo | None = Field(None, description="Token counts.")
    generation_time: float | None = Field(None, description="Seconds spent generating.")

    @property
    def first_text(self) -> str:
        """The text of the first choice."""
        return self.choices[0].text


class CompletionResponseStreamChoice(BaseModel):
    """One choice of a streamed completion chunk (chat-style delta, not 'text')."""

    index: int = Field(description="Position of the choice.")
    delta: DeltaMessage = Field(description="What this chunk adds.")
    finish_reason: FinishReason | None = Field(
        description="Why generation ended; null until the last chunk."
    )


class CompletionStreamResponse(BaseModel):
    """One server-sent event of a streamed completion."""

    id: str = Field(description="Identifier of the completion, the same on every chunk.")
    model: str = Field(description="The model that answers.")
    choices: list[CompletionResponseStreamChoice] = Field(description="The choices' deltas.")
    created: float | None = Field(None, description="Creation time, seconds since the epoch.")
    object: str | None = Field(None, description="Always 'text_completion'.")
    usage: UsageInfo | None = Field(None, description="Token counts, on the final chunk.")

    @property
    def first_content(self) -> str | None:
        """The text delta of the first choice."""
        return self.choices[0].delta.content


# --------------------------------------------------------------------------- translate


class TranslateRequest(CompletionRequest):
    """Body of POST translate: the completion shape, ``prompt`` being the text to translate."""


class TranslateResponse(CompletionResponse):
    """Response of POST translate: the completion shape, ``text`` being the translation."""


# --------------------------------------------------------------------------- embeddings


class EmbeddingObject(BaseModel):
    """One embedding vector."""

    object: str = Field(description="Always 'embedding'.")
    embedding: list[float] = Field(description="The L2-normalised vector.")
    index: int = Field(description="Position of the input this vector embeds.")


class EmbeddingRequest(_Request):
    """Body of POST embeddings.

    The official client types ``input`` as ``str`` but sends lists too (LangChain always does),
    and never sends ``id``; both are accepted here.
    """

    id: str | None = Field(None, description="Optional client-side identifier of the request.")
    input: str | list[str] = Field(
        description="A text or a non-empty list of texts to embed.",
        json_schema_extra={"not": {"type": "array", "maxItems": 0}},
    )
    model: str = Field(description="Name (or alias) of the embedding model.")


class EmbeddingResponse(BaseModel):
    """Response of POST embeddings: one vector per input, in input order."""

    id: str = Field(description="Identifier of the request.")
    object: str = Field(description="Always 'list'.")
    data: list[EmbeddingObject] = Field(description="The vectors, in input order.")
    model: str = Field(description="The model that embedded.")
    usage: UsageInfo = Field(description="Token counts.")

    @property
    def first_embedding(self) -> list[float]:
        """The vector of the first input."""
        return self.data[0].embedding


# --------------------------------------------------------------------------- reranker


class ReRankerRequest(_Request):
    """Body of POST reranker."""

    query: str = Field(description="The query documents are ranked against.")
    documents: list[str] = Field(
        description="The documents to rank.", json_schema_extra={"minItems": 1}
    )
    top_n: int | None = Field(
        None,
        description="Return only the n best documents; all of them when absent.",
        json_schema_extra=schema_range(1, INT32_MAX),
    )
    model: str = Field(description="Name (or alias) of the reranker.")
    return_documents: bool | None = Field(
        None, description="Include each document's text in the result."
    )

    @field_validator("top_n")
    @classmethod
    def _top_n(cls, v: int | None) -> int | None:
        _check_int("top_n", v, 1)
        return v


class ReRankerObject(BaseModel):
    """One ranked document."""

    document: str | None = Field(None, description="The document's text, if requested.")
    index: int = Field(description="Position of the document in the request's list.")
    relevance_score: float = Field(description="Relevance to the query; higher is better.")


class ReRankerResponse(BaseModel):
    """Response of POST reranker: documents sorted by descending relevance."""

    id: str = Field(description="Identifier of the request.")
    data: list[ReRankerObject] = Field(description="Ranked documents, best first.")
    failure: str | None = Field(None, description="Why ranking failed, if it did.")
    model: str = Field(description="The model that ranked.")
    object: str = Field(description="Always 'list'.")
    usage: UsageInfo = Field(description="Token counts.")


# --------------------------------------------------------------------------- images


class ImageSamplingParams(_Request):
    """Generation parameters of text-to-image requests (the client always sends its defaults)."""

    negative_prompt: str | None = Field("blurry", description="What the image should not show.")
    seed: int | None = Field(
        27, description="Seed of the first image.", json_schema_extra=schema_range(*SEED_RANGE)
    )
    seed_increment: int | None = Field(
        100,
        description="Image i is generated with seed + i * seed_increment.",
        json_schema_extra=schema_range(*SEED_RANGE),
    )
    n: int | None = Field(
        1, description="Number of images, >= 1.", json_schema_extra=schema_range(1, INT32_MAX)
    )
    num_inference_steps: int | None = Field(
        20, description="Denoising steps, >= 1.", json_schema_extra=schema_range(1, INT32_MAX)
    )
    size: str | None = Field("512x512", description="Image size as '<width>x<height>'.")
    guidance_scale: float | None = Field(
        6.5,
        description="Classifier-free guidance scale in [0, 100]; <= 1 disables guidance.",
        json_schema_extra=schema_range(*GUIDANCE_SCALE_RANGE),
    )
    cache_interval: int | None = Field(
        None,
        description="Reuse UNet features every this many steps (model-dependent), >= 0.",
        json_schema_extra=schema_range(0, INT32_MAX),
    )
    response_format: str | None = Field(
        "b64_json", description="'b64_json' for inline PNG data or 'url' for a file path."
    )

    @field_validator("n", "num_inference_steps")
    @classmethod
    def _positive(cls, v: int | None, info: Any) -> int | None:
        _check_int(info.field_name, v, 1)
        return v

    @field_validator("seed", "seed_increment")
    @classmethod
    def _seed(cls, v: int | None, info: Any) -> int | None:
        _check_int(info.field_name, v, *SEED_RANGE)
        return v

    @field_validator("cache_interval")
    @classmethod
    def _cache_interval(cls, v: int | None) -> int | None:
        _check_int("cache_interval", v, 0)
        return v

    @field_validator("guidance_scale")
    @classmethod
    def _guidance(cls, v: float | None) -> float | None:
        _check_range("guidance_scale", v, *GUIDANCE_SCALE_RANGE, "[0, 100]")
        return v


class ImageRequest(ImageSamplingParams):
    """Body of POST images/generations."""

    prompt: str = Field(description="What the image should show.")
    model: str = Field(description="Name (or alias) of the text-to-image model.")
    stream: bool = Field(description="Send one server-sent event per finished image.")


class Image(BaseModel):
    """One generated image."""

    b64_json: str | None = Field(None, description="Base64 of the PNG file.")
    url: str | None = Field(None, description="Path of the PNG file, relative to the API root.")


class ImageResponse(BaseModel):
    """Response of POST images/generations (and each event of its stream)."""

    id: str = Field(description="Identifier of the request.")
    model: str = Field(description="The model that generated.")
    object: str = Field(description="Always 'text_to_image'.")
    created: float = Field(description="Creation time, seconds since the epoch.")
    data: list[Image] = Field(description="The images.")


# --------------------------------------------------------------------------- transcribe


class TranscribeRequest(_Request):
    """The form fields of POST transcribe besides the audio file."""

    model: str = Field(description="Name (or alias) of the speech-to-text model.")


class TranscribeResponse(BaseModel):
    """Response of POST transcribe."""

    generation_time: float = Field(description="Seconds spent transcribing.")
    id: str = Field(description="Identifier of the request.")
    text: str = Field(description="The transcript.")
    ts: str | None = Field(description="ISO 8601 time of the transcription, or null.")


# --------------------------------------------------------------------------- health and usage


class PingResponse(BaseModel):
    """Response of GET ping."""

    message: str = Field(description="Always 'pong'.")
    status: str = Field(description="Always 'ok'.")


class HealthResponse(BaseModel):
    """Response of GET health: the hosted service's store names, filled honestly on a device."""

    postgres: str = Field(description="State of a PostgreSQL store; 'not used' on a device.")
    redis: str = Field(description="State of a Redis store; 'not used' on a device.")
    models: str = Field(
        description="State of the models: load state, execution provider and resident memory."
    )


class UsageRecordAggregated(BaseModel):
    """Usage totals of one model over the whole requested period."""

    userid: str = Field(description="The user the usage is counted for.")
    model: str = Field(description="The model used.")
    total_input_tokens: int = Field(description="Prompt tokens.")
    total_output_tokens: int = Field(description="Generated tokens.")
    total_tokens: int = Field(description="Prompt plus generated tokens.")
    total_generation_time: float = Field(description="Seconds spent generating.")


class UsageRecord(UsageRecordAggregated):
    """Usage totals of one model in one time bin."""

    date_bin: dt.datetime = Field(description="Start of the time bin.")


class UsageResponse(BaseModel):
    """Response of GET usage."""

    usage: list[UsageRecord] = Field(description="Totals per model and time bin.")
    overall: list[UsageRecordAggregated] = Field(description="Totals per model.")
