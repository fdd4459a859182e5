"""A dropped stream is recorded with the prompt and completion tokens it was sent (the recorder's
invariant: a cancelled stream did spend its tokens), on the real LLM."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagine_edge.models.registry import model_cards
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.types import ChatCompletionRequest, ChatMessage, CompletionRequest

LLM = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    cards = [c for c in model_cards() if c.name == LLM]
    if not cards:
        pytest.skip(f"{LLM} is not in the catalog")
    engine = Engine(cards, data_dir=tmp_path_factory.mktemp("dropped"))
    engine.load([LLM])
    yield engine
    engine.close()


def _recorded(path: Path, call_id: str) -> tuple[str, int, int]:
    import sqlite3

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        db = sqlite3.connect(path)
        try:
            row = db.execute(
                "SELECT status, prompt_tokens, completion_tokens FROM requests WHERE id = ?",
                (call_id,),
            ).fetchone()
        finally:
            db.close()
        if row is not None:
            return str(row[0]), int(row[1]), int(row[2])
        time.sleep(0.05)
    raise AssertionError(f"request {call_id} was never recorded")


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_a_dropped_stream_records_the_tokens_it_received(engine: Engine, kind: str) -> None:
    if kind == "chat":
        messages = [ChatMessage(role="user", content="Tell me a long story about a dragon.")]
        call = engine.chat(
            ChatCompletionRequest(
                model=LLM, messages=messages, stream=True, max_tokens=200, ignore_eos=True
            )
        )
    else:
        call = engine.completion(
            CompletionRequest(
                model=LLM, prompt="Once upon a time", stream=True, max_tokens=200, ignore_eos=True
            )
        )
    for received, _ in enumerate(call.events(), 1):  # one event per chunk of >= 1 token
        if received >= 8:
            break  # leaving the loop drops the stream: the call is cancelled
    status, prompt, completion = _recorded(engine.recorder.path, call.id)
    assert status == "cancelled"
    assert prompt > 3  # the prompt was read in full before the first chunk
    assert 7 <= completion < 200  # at least the tokens of the chunks received
    overall = {u.model: u for u in engine.usage(model=LLM).overall}
    assert overall[LLM].total_input_tokens >= prompt
    assert overall[LLM].total_output_tokens >= completion
