"""A model that serves several requests at once (continuous batching) gets up to that many of
its jobs together; the rest wait in order, a full queue is a 429, and work on the model itself
(unload) waits for the running jobs."""

from __future__ import annotations

import threading
import time

import pytest

from imagine_edge.models.base import ModelType
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.errors import ImagineAPITooManyRequestsException
from imagine_edge.sdk.testing import EchoLLM, fake_cards
from imagine_edge.sdk.types import ChatCompletionRequest, ChatMessage

WORDS = " ".join(f"w{i}" for i in range(12))


def _chat(engine: Engine):  # type: ignore[no-untyped-def]
    request = ChatCompletionRequest(
        model="echo-llm", messages=[ChatMessage(role="user", content=WORDS)], stream=False
    )
    return engine.chat(request)


def _engine(tmp_path, model: EchoLLM, max_queue: int = 16) -> Engine:  # type: ignore[no-untyped-def]
    cards = fake_cards({ModelType.LLM: model})
    return Engine(cards, data_dir=tmp_path, max_queue=max_queue)


@pytest.mark.parametrize("concurrent", [1, 3])
def test_up_to_its_width_of_jobs_run_together(tmp_path, concurrent):  # type: ignore[no-untyped-def]
    model = EchoLLM(delay=0.02, concurrent=concurrent)
    with _engine(tmp_path, model) as engine:
        calls = [_chat(engine) for _ in range(5)]
        texts = [c.result().choices[0].message.content for c in calls]
    assert texts == [WORDS] * 5
    assert model.peak_active == concurrent


def test_health_counts_the_running_jobs_and_a_full_queue_is_a_429(tmp_path):  # type: ignore[no-untyped-def]
    model = EchoLLM(delay=0.2, concurrent=2)
    with _engine(tmp_path, model, max_queue=3) as engine:
        calls = [_chat(engine) for _ in range(3)]
        deadline = time.monotonic() + 30
        while engine.model_states()[0].running < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        (state,) = engine.model_states()
        assert (state.running, state.queued) == (2, 3)
        with pytest.raises(ImagineAPITooManyRequestsException):
            _chat(engine)
        for call in calls:
            call.result()


def test_unload_waits_for_the_running_jobs(tmp_path):  # type: ignore[no-untyped-def]
    model = EchoLLM(delay=0.05, concurrent=3)
    with _engine(tmp_path, model) as engine:
        calls = [_chat(engine) for _ in range(3)]
        while model.active < 3:
            time.sleep(0.005)
        unloaded = threading.Event()
        thread = threading.Thread(target=lambda: (engine.unload("echo-llm"), unloaded.set()))
        thread.start()
        results = [c.result() for c in calls]
        thread.join(timeout=30)
        assert unloaded.is_set()
        assert model.closed
        assert all(r.choices[0].finish_reason == "stop" for r in results)
        # It loads again for the next request.
        assert _chat(engine).result().choices[0].message.content == WORDS
