"""Out-of-range sampling values fail with a message naming the value and the valid range."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from imagine_edge.sdk import types as t
from imagine_edge.sdk.errors import (
    ContextLengthError,
    ImagineAPIException,
    ImagineAPITooManyRequestsException,
    ImagineException,
    InvalidRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
)
from imagine_edge.sdk.validation import MAX_REQUEST_CHARS, request_error, validation_message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("temperature", 2.5, "temperature must be in [0, 2], got 2.5"),
        ("temperature", -0.1, "temperature must be in [0, 2], got -0.1"),
        ("top_p", 0.0, "top_p must be in (0, 1], got 0.0"),
        ("top_p", 1.5, "top_p must be in (0, 1], got 1.5"),
        ("presence_penalty", 2.1, "presence_penalty must be in [-2, 2], got 2.1"),
        ("frequency_penalty", -3.0, "frequency_penalty must be in [-2, 2], got -3.0"),
        ("repetition_penalty", 0.0, "repetition_penalty must be in [0.001, 1000], got 0.0"),
        # A denormal passed '> 0' and then made the logits NaN.
        ("repetition_penalty", 1e-300, "repetition_penalty must be in [0.001, 1000], got 1e-300"),
        ("repetition_penalty", 1e300, "repetition_penalty must be in [0.001, 1000], got 1e+300"),
        ("top_k", -2, "top_k must be an integer in [-1, 2147483647] (-1 or 0 = off), got -2"),
        (
            "top_k",
            2**63,
            f"top_k must be an integer in [-1, 2147483647] (-1 or 0 = off), got {2**63}",
        ),
        ("max_tokens", 0, "max_tokens must be in [1, 2147483647], got 0"),
        ("max_tokens", 2**64, f"max_tokens must be in [1, 2147483647], got {2**64}"),
        ("max_seconds", 0, "max_seconds must be in [1, 2147483647], got 0"),
        ("stop_token_ids", [[]], "stop_token_ids must not contain an empty sequence"),
        ("stop_token_ids", [[1, -1]], "token ids in [0, 2147483647], got [1, -1]"),
        ("stop_token_ids", [[2**70]], "token ids in [0, 2147483647]"),
        ("stop_token_ids", [[1]] * 17, "at most 16 sequences, got 17"),
        ("stop", ["x"] * 100_000, "stop must hold at most 16 strings, got 100000"),
        ("stop", ["x" * 501], "at most 500 characters, got one of 501"),
        ("temperature", float("nan"), "temperature must be a finite number, got nan"),
        ("top_p", float("inf"), "top_p must be a finite number, got inf"),
    ],
)
def test_out_of_range_values_are_named(field: str, value: object, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        t.CompletionRequest(prompt="x", model="m", stream=False, **{field: value})
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 0.0),
        ("temperature", 2.0),
        ("top_p", 1.0),
        ("top_k", -1),
        ("top_k", 0),
        ("top_k", 1),
        ("presence_penalty", -2.0),
        ("repetition_penalty", 1e-3),
    ],
)
def test_range_edges_are_accepted(field: str, value: object) -> None:
    request = t.CompletionRequest(prompt="x", model="m", stream=False, **{field: value})
    assert getattr(request, field) == value


def test_image_and_rerank_counts_are_validated() -> None:
    with pytest.raises(ValidationError, match=r"n must be in \[1, 2147483647\], got 0"):
        t.ImageRequest(prompt="p", model="m", stream=False, n=0)
    with pytest.raises(ValidationError, match=r"top_n must be in \[1, 2147483647\], got 0"):
        t.ReRankerRequest(query="q", documents=["d"], model="m", top_n=0)
    with pytest.raises(ValidationError, match="top_n must be in"):
        t.ReRankerRequest(query="q", documents=["d"], model="m", top_n=2**63)
    with pytest.raises(ValidationError, match="seed must be in"):
        t.ImageRequest(prompt="p", model="m", stream=False, seed=2**64)
    with pytest.raises(ValidationError, match=r"guidance_scale must be in \[0, 100\]"):
        t.ImageRequest(prompt="p", model="m", stream=False, guidance_scale=1e308)
    with pytest.raises(ValidationError, match="guidance_scale must be a finite number"):
        t.ImageRequest(prompt="p", model="m", stream=False, guidance_scale=float("nan"))


LONE = "a\ud800b"


@pytest.mark.parametrize(
    ("build", "where"),
    [
        (lambda: t.CompletionRequest(prompt=LONE, model="m", stream=False), "prompt"),
        (lambda: t.TranslateRequest(prompt="x", model=LONE, stream=False), "model"),
        (lambda: t.EmbeddingRequest(input=["ok", LONE], model="m"), "input.1"),
        (lambda: t.ReRankerRequest(query="q", documents=[LONE], model="m"), "documents.0"),
        (lambda: t.ImageRequest(prompt="p", negative_prompt=LONE, model="m", stream=False),
         "negative_prompt"),
        (lambda: t.ChatCompletionRequest(
            model="m", stream=False, messages=[t.ChatMessage(role="user", content=LONE)]),
         "messages.0.content"),
        (lambda: t.ChatCompletionRequest(
            model="m", stream=False, messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "function", "function": {"name": LONE}}]),
         "tools.0.function.name"),
        (lambda: t.CompletionRequest(prompt="x", model="m", stream=False, stop=[LONE]), "stop.0"),
    ],
)  # fmt: skip
def test_lone_surrogates_are_refused_in_every_text_field(build: object, where: str) -> None:
    # JSON's '\ud800' escape decodes to a lone surrogate, which no UTF-8 encoder accepts.
    with pytest.raises(ValidationError) as info:
        build()  # type: ignore[operator]
    message = validation_message(info.value.errors())
    assert f"{where} contains a lone UTF-16 surrogate (U+D800 at character 1)" in message
    assert request_error(info.value.errors()).http_status == 422


def test_text_over_the_request_limit_is_a_413() -> None:
    half = "x" * (MAX_REQUEST_CHARS // 2 + 1)
    with pytest.raises(ValidationError) as info:
        t.EmbeddingRequest(input=[half, half], model="m")
    error = request_error(info.value.errors())
    assert isinstance(error, PayloadTooLargeError)
    assert f"over the limit of {MAX_REQUEST_CHARS} characters (at input.1)" in str(error)
    t.EmbeddingRequest(input=[half], model="m")  # one half is fine


def test_nan_anywhere_in_a_request_is_refused() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"x": float("inf")}}}
    with pytest.raises(ValidationError, match=r"tools\.0\.function\.parameters\.x must be"):
        t.ChatCompletionRequest(
            model="m", stream=False, messages=[{"role": "user", "content": "x"}], tools=[tool]
        )


def test_deep_nesting_is_refused_before_it_cannot_be_serialized() -> None:
    deep: list[object] = []
    for _ in range(900):  # pydantic's serializer gave up on this (a 500)
        deep = [deep]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"a": deep}}}
    with pytest.raises(
        ValidationError, match=r"tools\.0\.function\.parameters… is nested more than 64"
    ):
        t.ChatCompletionRequest(
            model="m", stream=False, messages=[{"role": "user", "content": "x"}], tools=[tool]
        )


def test_schema_states_the_ranges() -> None:
    props = t.CompletionRequest.model_json_schema()["properties"]
    assert props["temperature"]["minimum"] == 0
    assert props["temperature"]["maximum"] == 2
    assert props["top_p"]["exclusiveMinimum"] == 0
    assert props["top_k"]["maximum"] == t.INT32_MAX
    assert props["repetition_penalty"]["minimum"] == 0.001
    assert props["stop"]["maxItems"] == t.MAX_STOP_STRINGS


def test_chat_message_content_key_is_required_but_nullable() -> None:
    with pytest.raises(ValidationError):
        t.ChatMessage(role="user")  # type: ignore[call-arg]
    assert t.ChatMessage(role="assistant", content=None).content is None


def test_enum_str_matches_the_official_client() -> None:
    # LangChain reports str(finish_reason); the client's enums are (str, Enum).
    assert str(t.FinishReason.stop) == "FinishReason.stop"
    assert repr(t.ModelType.LLM) == "<ModelType.LLM>"


def test_error_hierarchy_carries_status_codes() -> None:
    assert issubclass(ModelNotFoundError, ImagineAPIException)
    assert ModelNotFoundError("x").http_status == 404
    assert InvalidRequestError("x").http_status == 422
    assert ContextLengthError("x").http_status == 400
    assert PayloadTooLargeError("x").http_status == 413
    busy = ImagineAPITooManyRequestsException("queue full", retry_after=2.4)
    assert busy.http_status == 429
    assert busy.headers == {"Retry-After": "2"}
    assert str(ImagineException()) == "<empty message>"
