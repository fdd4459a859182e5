"""Continuous batching on the real SmolLM2: sequences decoded together generate what each
generates alone, and a cancelled stream leaves the batch and frees its slot at the next step."""

from __future__ import annotations

import threading
import time

import pytest

from imagine_edge.models.llm import ChatModel
from imagine_edge.models.store import Manifest
from imagine_edge.runtime.step_batcher import BatchedDecoder
from imagine_edge.sdk.types import CompletionRequest

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village by the sea, there lived",
    "Water boils at",
]


@pytest.fixture(scope="module")
def batched(smollm2_manifest: Manifest) -> ChatModel:
    model = ChatModel(smollm2_manifest, max_length=1024, parallel=4)
    yield model
    model.close()


@pytest.fixture(scope="module")
def alone(smollm2_manifest: Manifest) -> ChatModel:
    model = ChatModel(smollm2_manifest, max_length=1024, parallel=1)
    yield model
    model.close()


def _request(prompt: str, **params: object) -> CompletionRequest:
    return CompletionRequest(
        model="smollm2-135m-instruct", prompt=prompt, stream=False, ignore_eos=True, **params
    )


def _tokens(model: ChatModel, request: CompletionRequest) -> list[int]:
    chunks = list(model.generate_completion(request, threading.Event()))
    stats = chunks[-1].stats
    assert stats is not None
    return list(stats.token_ids)


def _together(model: ChatModel, requests: list[CompletionRequest]) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in requests]
    start = threading.Barrier(len(requests))

    def run(i: int) -> None:
        start.wait()
        out[i] = _tokens(model, requests[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return out


def test_the_batching_model_serves_four_at_once(batched: ChatModel, alone: ChatModel) -> None:
    assert batched.max_concurrent_requests == 4
    assert alone.max_concurrent_requests == 1
    assert batched.kv_slots().total == 4


def test_greedy_sequences_batched_equal_each_alone_for_64_tokens(
    batched: ChatModel, alone: ChatModel
) -> None:
    requests = [_request(p, max_tokens=64, temperature=0.0) for p in PROMPTS]
    expected = [_tokens(alone, r) for r in requests]
    decoder = batched.loop.decoder
    assert isinstance(decoder, BatchedDecoder)
    before = decoder.counts().by_batch_size.get(4, 0)
    assert _together(batched, requests) == expected
    assert decoder.counts().by_batch_size.get(4, 0) > before  # four rows really stepped together


def test_sampled_sequences_with_their_seeds_batched_equal_each_alone(
    batched: ChatModel, alone: ChatModel
) -> None:
    # Sampling draws from each sequence's own generator (its seed), so batching changes a
    # token only where the batch's logits differ from a lone step's in the last bits and that
    # difference crosses a sampling threshold; with these prompts and seeds none does.
    requests = [
        _request(p, max_tokens=48, temperature=0.8, top_p=0.95, seed=100 + i)
        for i, p in enumerate(PROMPTS)
    ]
    expected = [_tokens(alone, r) for r in requests]
    assert _together(batched, requests) == expected


def test_a_cancelled_sequence_leaves_the_batch_and_frees_its_slot(batched: ChatModel) -> None:
    long = _request(PROMPTS[2], max_tokens=400, temperature=0.0)
    cancel = threading.Event()
    done: dict[str, object] = {}

    def stream() -> None:
        count = 0
        for _chunk in batched.generate_completion(long, cancel):
            count += 1
            if count == 5:
                cancel.set()
        done["count"] = count

    other = threading.Thread(
        target=lambda: done.setdefault(
            "other", _tokens(batched, _request(PROMPTS[0], max_tokens=120, temperature=0.0))
        )
    )
    cancelled = threading.Thread(target=stream)
    other.start()
    cancelled.start()
    cancelled.join(timeout=120)
    assert not cancelled.is_alive()
    deadline = time.monotonic() + 30
    while batched.kv_slots().leased > (1 if other.is_alive() else 0):
        assert time.monotonic() < deadline, batched.kv_slots()
        time.sleep(0.01)
    assert int(done["count"]) < 10  # type: ignore[call-overload]
    other.join(timeout=120)
    assert len(done["other"]) == 120  # type: ignore[arg-type]
    assert batched.kv_slots().leased == 0
