"""Batched decode steps on the tiny GQA graph: rows of one K/V array stepped together give each
sequence the logits it gets alone, and concurrent generation loops on a BatchedDecoder give
each sequence the tokens it generates alone."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from imagine_edge.runtime.generate import TextGenerationLoop
from imagine_edge.runtime.kv_cache import DecoderSpec, KVSlot
from imagine_edge.runtime.sampling import GenerationPlan, SamplingDefaults
from imagine_edge.runtime.shared_buffer_decoder import SharedBufferDecoder
from imagine_edge.runtime.step_batcher import BatchedDecoder
from imagine_edge.sdk.types import CompletionRequest

EOS = 256
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [40, 41], [100, 101, 102, 103, 104, 105, 106, 107, 108, 109]]


class _SlowDecoder(SharedBufferDecoder):
    """Steps take a few milliseconds, as a real model's do, so that sequences overlap."""

    def forward(self, slot: KVSlot, count: int, *, arm: int | None = None) -> np.ndarray:
        time.sleep(0.002)
        return super().forward(slot, count, arm=arm)

    def forward_rows(self, slots, *, arm: int = 0):  # type: ignore[no-untyped-def]
        time.sleep(0.002)
        return super().forward_rows(slots, arm=arm)


def _decoder(
    path: Path,
    slots: int = 4,
    slow: bool = False,
    kind: type[SharedBufferDecoder] | None = None,
) -> SharedBufferDecoder:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = DecoderSpec.from_session(session, max_length=64, prefill_chunk=4)
    kind = kind or (_SlowDecoder if slow else SharedBufferDecoder)
    return kind(session, spec, num_slots=slots)


def _prefill(decoder: SharedBufferDecoder, ids: list[int]) -> tuple[KVSlot, np.ndarray]:
    slot, _ = decoder.pool.acquire(np.array(ids, np.int64))
    slot.tokens[: len(ids)] = ids
    logits = None
    while slot.length < len(ids):
        logits = decoder.forward(slot, min(4, len(ids) - slot.length)).copy()
    assert logits is not None
    slot.save_prefill(logits)
    return slot, logits


@pytest.fixture(params=["all_positions", "last_only"])
def graph(request, tiny_decoder, tiny_decoder_last_logits) -> Path:
    return tiny_decoder if request.param == "all_positions" else tiny_decoder_last_logits


def test_rows_stepped_together_match_each_row_stepped_alone(graph):
    alone, together = _decoder(graph), _decoder(graph)
    solo = [_prefill(alone, p) for p in PROMPTS]
    rows = [_prefill(together, p) for p in PROMPTS]
    # A free row inside the batched range (slot 1 released) is stepped with a placeholder.
    together.pool.release(rows[1][0])
    stepping = [rows[0][0], rows[2][0]]
    for step in range(6):
        tokens = [int(np.argmax(solo[i][1])) for i in (0, 2)]
        for slot, token in zip(stepping, tokens, strict=True):
            slot.tokens[slot.length] = token
        batched = [r.copy() for r in together.forward_rows(stepping)]
        for k, i in enumerate((0, 2)):
            slot, _ = solo[i]
            slot.tokens[slot.length] = tokens[k]
            expected = alone.forward(slot, 1).copy()
            solo[i] = (slot, expected)
            np.testing.assert_allclose(batched[k], expected, rtol=1e-5, atol=1e-5)
            assert stepping[k].length == slot.length, step


def test_a_free_row_keeps_its_cached_prefix_through_placeholder_steps(graph):
    decoder = _decoder(graph)
    first, _ = _prefill(decoder, PROMPTS[0])
    kept, kept_logits = _prefill(decoder, PROMPTS[1])
    third, _ = _prefill(decoder, PROMPTS[2])
    decoder.pool.release(kept)
    for _ in range(3):
        first.tokens[first.length] = third.tokens[third.length] = 3
        decoder.forward_rows([first, third])
    decoder.pool.release(first)
    decoder.pool.release(third)
    # The same prompt again is served whole from the slot, with the very logits it kept.
    slot, reused = decoder.pool.acquire(np.array(PROMPTS[1], np.int64))
    assert slot is kept
    assert reused == len(PROMPTS[1])
    np.testing.assert_array_equal(slot.prefill_logits, kept_logits)
    # And continuing it from its K/V gives what a cold decoder gives.
    slot.tokens[slot.length] = 9
    _, cold = _prefill(_decoder(graph), [*PROMPTS[1], 9])
    np.testing.assert_allclose(decoder.forward(slot, 1), cold, rtol=1e-5, atol=1e-5)


def _plan(**params) -> GenerationPlan:
    request = CompletionRequest(prompt="", model="tiny", stream=False, **params)
    return GenerationPlan.from_params(request, SamplingDefaults(temperature=0.0))


def _generate(loop: TextGenerationLoop, prompt: list[int], plan: GenerationPlan) -> list[int]:
    chunks = list(loop.run(prompt, plan))
    stats = chunks[-1].stats
    assert stats is not None
    return list(stats.token_ids)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_concurrent_loops_generate_what_each_generates_alone(graph, byte_tokenizer, temperature):
    plan = _plan(max_tokens=24, temperature=temperature, seed=None, ignore_eos=True)
    plans = [GenerationPlan(**{**_fields(plan), "seed": 1000 + i}) for i in range(len(PROMPTS))]
    alone = TextGenerationLoop(_decoder(graph), byte_tokenizer, [EOS])
    expected = [_generate(alone, p, q) for p, q in zip(PROMPTS, plans, strict=True)]
    batched = BatchedDecoder(_decoder(graph, slow=True), prefill_while_decoding=2)
    loop = TextGenerationLoop(batched, byte_tokenizer, [EOS])
    results: list[list[int] | None] = [None] * len(PROMPTS)
    start = threading.Barrier(len(PROMPTS))

    def run(i: int) -> None:
        start.wait()
        results[i] = _generate(loop, PROMPTS[i], plans[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == expected
    counts = batched.counts()
    assert max(counts.by_batch_size) >= 2, counts  # the steps really were shared
    assert batched.pool.leased == 0


def test_a_sequence_that_leaves_early_frees_its_slot_for_the_others(graph, byte_tokenizer):
    batched = BatchedDecoder(_decoder(graph, slots=2, slow=True))
    loop = TextGenerationLoop(batched, byte_tokenizer, [EOS])
    short, long = _plan(max_tokens=2, ignore_eos=True), _plan(max_tokens=30, ignore_eos=True)
    out: dict[str, list[int]] = {}
    threads = [
        threading.Thread(
            target=lambda: out.__setitem__("short", _generate(loop, PROMPTS[0], short))
        ),
        threading.Thread(target=lambda: out.__setitem__("long", _generate(loop, PROMPTS[1], long))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(out["short"]) == 2
    assert len(out["long"]) == 30
    assert batched.pool.leased == 0


def _fields(plan: GenerationPlan) -> dict[str, object]:
    return {name: getattr(plan, name) for name in plan.__dataclass_fields__}


def test_a_prompt_a_running_sequence_shares_is_copied_not_run(graph, byte_tokenizer):
    """Three choices of one prompt (n = 3): the first prefills it, the others copy its
    positions, and each generates what it generates alone with its seed."""
    prompt = [7] * 9 + [3, 4, 5]
    base = _plan(max_tokens=16, temperature=1.0, ignore_eos=True)
    plans = [GenerationPlan(**{**_fields(base), "seed": 7 + i}) for i in range(3)]
    alone = TextGenerationLoop(_decoder(graph), byte_tokenizer, [EOS])
    expected = [_generate(alone, prompt, p) for p in plans]
    batched = BatchedDecoder(_decoder(graph, slow=True), prefill_while_decoding=4)
    loop = TextGenerationLoop(batched, byte_tokenizer, [EOS])
    results: list[list[int] | None] = [None] * 3
    start = threading.Barrier(3)

    def run(i: int) -> None:
        start.wait()
        results[i] = _generate(loop, prompt, plans[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    np.testing.assert_equal(results, expected)
    assert batched.counts().copied_positions >= len(prompt) - 1


class _RecordingDecoder(SharedBufferDecoder):
    """Records the graph calls the batcher makes: ("rows", batch) or ("one", tokens)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int]] = []

    def forward(self, slot: KVSlot, count: int, *, arm: int | None = None) -> np.ndarray:
        self.calls.append(("one", count))
        return super().forward(slot, count, arm=arm)

    def forward_rows(self, slots, *, arm: int = 0):  # type: ignore[no-untyped-def]
        self.calls.append(("rows", len(slots)))
        return super().forward_rows(slots, arm=arm)


def test_waiting_prompts_share_the_step_budget_while_a_sequence_decodes(graph):
    """One step: the decode row, then the first prompt whole (3 of the budget's 4 tokens) and
    the second prompt's first token; its other tokens wait for the next step."""
    inner = _decoder(graph, kind=_RecordingDecoder)
    assert isinstance(inner, _RecordingDecoder)
    batched = BatchedDecoder(inner, prefill_while_decoding=4)
    running, _ = batched.pool.acquire(np.array([1, 2, 3], np.int64))
    running.tokens[:3] = [1, 2, 3]
    batched.forward(running, 3)
    running.tokens[3] = 4
    prompts = []
    for ids in ([20, 21, 22], [30, 31, 32]):
        slot, _ = batched.pool.acquire(np.array(ids, np.int64))
        slot.tokens[:3] = ids
        prompts.append(slot)
    inner.calls.clear()
    calls = [(running, 1), (prompts[0], 3), (prompts[1], 3)]
    threads = [threading.Thread(target=batched.forward, args=c, daemon=True) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), inner.calls
    assert inner.calls == [("rows", 1), ("one", 3), ("one", 1)]
    assert [s.length for s in (running, *prompts)] == [4, 3, 1]
