"""The OpenAI request bodies of ``/v1``, translated into the Imagine DTOs the engine takes.

One job: parse an OpenAI-shaped body (the ranges stated for the OpenAPI document; the Imagine DTO
checks them again) and build the :class:`ChatCompletionRequest` / :class:`CompletionRequest` of
each choice. ``seed``, ``response_format``, ``tools`` / ``tool_choice``, ``logprobs`` /
``top_logprobs`` travel in the Imagine DTO's extension fields; ``n`` > 1 becomes n requests
with seeds seed, seed + 1, ... (docs/structured.md). Refused with a 400 that says so: ``n`` over
:data:`MAX_N`, ``n`` > 1 or ``logprobs`` with ``stream``, token-id prompts, embedding
``dimensions``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from imagine_edge.runtime.sampling import fresh_seed
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import (
    INT32_MAX,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MAX_TOP_LOGPROBS,
    REPETITION_PENALTY_RANGE,
    SEED_RANGE,
    ChatCompletionRequest,
    ChatMessageToolCall,
    CompletionRequest,
)
from imagine_edge.sdk.validation import build, check_request_text, schema_range

__all__ = [
    "MAX_N",
    "NamedToolChoice",
    "OpenAIChatRequest",
    "OpenAICompletionRequest",
    "OpenAIEmbeddingRequest",
    "OpenAIFunction",
    "OpenAIMessage",
    "OpenAITool",
    "ResponseFormat",
    "UnsupportedParameterError",
    "chat_requests",
    "completion_requests",
]

MAX_N: Final = 4
"""Most choices one request may ask for (``n``)."""


class UnsupportedParameterError(InvalidRequestError):
    """A parameter this server cannot honour in this combination (400, as OpenAI answers)."""

    status_code = 400


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
    n: int | None = Field(
        None,
        description=f"Choices to generate, in [1, {MAX_N}] (more than 1: not with stream).",
        json_schema_extra=schema_range(1, MAX_N),
    )
    seed: int | None = Field(
        None,
        description="Sampling seed; unset: a fresh one, reported in usage.seed. Choice i of n "
        "uses seed + i.",
        json_schema_extra=schema_range(*SEED_RANGE),
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

    def choices(self) -> int:
        """The number of choices asked for; 400 beyond :data:`MAX_N` or with a stream."""
        n = 1 if self.n is None else self.n
        if not 1 <= n <= MAX_N:
            raise UnsupportedParameterError(f"n must be in [1, {MAX_N}], got {n}")
        if n > 1 and self.stream:
            raise UnsupportedParameterError("n > 1 is not supported with stream: send stream false")
        return n

    def seeds(self) -> list[int | None]:
        """The seed of each choice: one per choice, consecutive from the request's (or a fresh)
        seed when there are several; a single choice keeps the request's (None: the engine
        draws one)."""
        n = self.choices()
        if n == 1:
            return [self.seed]
        base = self.seed if self.seed is not None else fresh_seed()
        return [(base + i) % 2**64 for i in range(n)]

    def imagine_params(self, top_logprobs: int | None) -> dict[str, Any]:
        if top_logprobs is not None and self.stream:
            raise UnsupportedParameterError(
                "logprobs are not supported with stream: send stream false to get them"
            )
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
        logprobs = (
            {"logprobs": True, "top_logprobs": top_logprobs} if top_logprobs is not None else {}
        )
        return {**params, "stop": stop, **logprobs}


class OpenAIMessage(BaseModel):
    """An OpenAI chat message (``content`` may be omitted beside tool calls)."""

    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ChatMessageToolCall] | None = None
    tool_call_id: str | None = None


class _Name(BaseModel):
    name: str = Field(min_length=1)


class OpenAIFunction(BaseModel):
    """A function offered as a tool: its name and the JSON schema of its arguments."""

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OpenAITool(BaseModel):
    """A tool of a chat request; only functions exist."""

    type: Literal["function"]
    function: OpenAIFunction


class NamedToolChoice(BaseModel):
    """``tool_choice`` naming the function that must be called."""

    type: Literal["function"]
    function: _Name


class _JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class _PlainFormat(BaseModel):
    type: Literal["text", "json_object"]


class _JsonSchemaFormat(BaseModel):
    type: Literal["json_schema"]
    json_schema: _JsonSchemaSpec


class _RegexFormat(BaseModel):
    type: Literal["regex"]
    regex: str = Field(min_length=1)


class _GrammarFormat(BaseModel):
    type: Literal["lark", "gbnf"]
    grammar: str = Field(min_length=1)


ResponseFormat = Annotated[
    _PlainFormat | _JsonSchemaFormat | _RegexFormat | _GrammarFormat, Field(discriminator="type")
]


class OpenAIChatRequest(_Sampling):
    """Body of POST /v1/chat/completions."""

    messages: list[OpenAIMessage] = Field(json_schema_extra={"minItems": 1})
    max_completion_tokens: int | None = Field(None, json_schema_extra=schema_range(1, INT32_MAX))
    tools: list[OpenAITool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="none, auto, required, or {'type': 'function', 'function': {'name'}}."
    )
    parallel_tool_calls: bool | None = Field(
        None, description="Accepted; an answer holds at most one call (docs/structured.md)."
    )
    response_format: ResponseFormat | None = Field(
        None,
        description="text, json_object, json_schema; extensions: regex, lark, gbnf.",
    )
    logprobs: bool | None = Field(None, description="Return each output token's logprob.")
    top_logprobs: int | None = Field(
        None,
        description=f"Alternatives per token, in [0, {MAX_TOP_LOGPROBS}]; needs logprobs.",
        json_schema_extra=schema_range(0, MAX_TOP_LOGPROBS),
    )

    def format_json(self) -> dict[str, Any] | None:
        """``response_format`` as the Imagine DTO's extension field takes it."""
        fmt = self.response_format
        return None if fmt is None else fmt.model_dump(by_alias=True, exclude_none=True)

    def tools_json(self) -> list[dict[str, Any]] | None:
        return None if self.tools is None else [t.model_dump(exclude_none=True) for t in self.tools]

    def choice_json(self) -> str | dict[str, Any] | None:
        choice = self.tool_choice
        return choice.model_dump() if isinstance(choice, NamedToolChoice) else choice

    def top(self) -> int | None:
        """The alternatives per token when logprobs are asked for, else None."""
        if self.top_logprobs is not None and not self.logprobs:
            raise UnsupportedParameterError("top_logprobs needs logprobs: true")
        return (self.top_logprobs or 0) if self.logprobs else None


class OpenAICompletionRequest(_Sampling):
    """Body of POST /v1/completions."""

    prompt: str | list[str] = Field(
        description="One text (a list must hold exactly one).",
        json_schema_extra={"not": {"type": "array", "not": {"minItems": 1, "maxItems": 1}}},
    )
    logprobs: int | None = Field(
        None,
        description=f"Alternatives per token, in [0, {MAX_TOP_LOGPROBS}]; null: no logprobs.",
        json_schema_extra=schema_range(0, MAX_TOP_LOGPROBS),
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


def chat_requests(body: OpenAIChatRequest) -> list[ChatCompletionRequest]:
    """The Imagine request of each choice of a chat body."""
    params = body.imagine_params(body.top())
    if body.max_completion_tokens is not None:
        params["max_tokens"] = body.max_completion_tokens
    messages = [m.model_dump(exclude_none=True) | {"content": m.content} for m in body.messages]
    offered = body.tool_choice != "none"  # the tools are then left out of the prompt
    return [
        build(
            ChatCompletionRequest,
            messages=messages,
            tools=body.tools_json() if offered else None,
            tool_choice=body.choice_json() if offered else None,
            response_format=body.format_json(),
            seed=seed,
            **params,
        )
        for seed in body.seeds()
    ]


def completion_requests(body: OpenAICompletionRequest) -> list[CompletionRequest]:
    """The Imagine request of each choice of a completion body."""
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise InvalidRequestError(f"prompt must be one text, got a list of {len(prompts)}")
    params = body.imagine_params(body.logprobs)
    return [
        build(CompletionRequest, prompt=prompts[0], seed=seed, **params) for seed in body.seeds()
    ]
