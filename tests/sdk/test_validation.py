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


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("temperature", 2.5, "temperature must be in [0, 2], got 2.5"),
        ("temperature", -0.1, "temperature must be in [0, 2], got -0.1"),
        ("top_p", 0.0, "top_p must be in (0, 1], got 0.0"),
        ("top_p", 1.5, "top_p must be in (0, 1], got 1.5"),
        ("presence_penalty", 2.1, "presence_penalty must be in [-2, 2], got 2.1"),
        ("frequency_penalty", -3.0, "frequency_penalty must be in [-2, 2], got -3.0"),
        ("repetition_penalty", 0.0, "repetition_penalty must be > 0, got 0.0"),
        ("top_k", -2, "top_k must be an integer >= -1 (-1 or 0 = off), got -2"),
        ("max_tokens", 0, "max_tokens must be >= 1, got 0"),
        ("max_seconds", 0, "max_seconds must be >= 1, got 0"),
        ("stop_token_ids", [[]], "stop_token_ids must not contain an empty sequence"),
        ("stop_token_ids", [[1, -1]], "non-negative token ids, got [1, -1]"),
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
    with pytest.raises(ValidationError, match="n must be >= 1, got 0"):
        t.ImageRequest(prompt="p", model="m", stream=False, n=0)
    with pytest.raises(ValidationError, match="top_n must be >= 1, got 0"):
        t.ReRankerRequest(query="q", documents=["d"], model="m", top_n=0)


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
