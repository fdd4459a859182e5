"""KV-cache slots, the slot pool and the shared-buffer decoder step, on a tiny GQA graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from imagine_edge.runtime.kv_cache import (
    DecoderSpec,
    KVCachePool,
    KVSlot,
    SharedBufferDecoder,
    reusable_prefix,
)
from imagine_edge.runtime.memory import process_resident_bytes
from imagine_edge.sdk.errors import ContextLengthError, ImagineAPITooManyRequestsException

LAYERS, KV_HEADS, HEAD_SIZE, VOCAB = 2, 2, 16, 258


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _reference_logits(session: ort.InferenceSession, ids: list[int]) -> np.ndarray:
    """Last-position logits of ``ids`` computed from scratch, with no cache reuse."""
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.array([ids], np.int64),
        "attention_mask": np.ones((1, len(ids)), np.int64),
    }
    for i in range(LAYERS):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, KV_HEADS, 0, HEAD_SIZE), np.float32)
    logits: np.ndarray = session.run(["logits"], feeds)[0]
    return logits[0, -1]


@pytest.fixture(params=["all_positions", "last_only"])
def decoder(request, tiny_decoder, tiny_decoder_last_logits) -> SharedBufferDecoder:
    path = tiny_decoder if request.param == "all_positions" else tiny_decoder_last_logits
    session = _session(path)
    spec = DecoderSpec.from_session(session, max_length=48, prefill_chunk=4)
    return SharedBufferDecoder(session, spec, num_slots=2)


def _run(decoder: SharedBufferDecoder, slot, ids: list[int], chunk: int) -> np.ndarray:
    slot.tokens[slot.length : len(ids)] = ids[slot.length :]
    logits = None
    while slot.length < len(ids):
        logits = decoder.forward(slot, min(chunk, len(ids) - slot.length)).copy()
    assert logits is not None
    return logits


def test_spec_is_read_from_the_graph(tiny_decoder, tiny_decoder_last_logits):
    spec = DecoderSpec.from_session(_session(tiny_decoder), max_length=64)
    assert (spec.num_layers, spec.num_kv_heads, spec.head_size) == (LAYERS, KV_HEADS, HEAD_SIZE)
    assert spec.vocab_size == VOCAB
    assert not spec.last_logits_only
    assert not spec.has_position_ids
    assert spec.slot_bytes == LAYERS * 2 * KV_HEADS * 64 * HEAD_SIZE * 4
    pruned = DecoderSpec.from_session(_session(tiny_decoder_last_logits), max_length=64)
    assert pruned.last_logits_only


@pytest.mark.parametrize("chunk", [1, 3, 4, 64])
def test_chunked_prefill_matches_a_fresh_run(decoder, chunk):
    ids = [5, 17, 200, 3, 3, 90, 41, 7, 250, 12, 1]
    slot, reused = decoder.pool.acquire(np.array(ids))
    assert reused == 0
    logits = _run(decoder, slot, ids, chunk)
    np.testing.assert_allclose(logits, _reference_logits(decoder._session, ids), atol=1e-4)
    assert slot.length == len(ids)


def test_decode_steps_write_kv_in_place(decoder):
    ids = [9, 8, 7, 6, 5]
    slot, _ = decoder.pool.acquire(np.array(ids))
    _run(decoder, slot, ids, chunk=4)
    for token in (100, 101, 102):
        slot.tokens[slot.length] = token
        ids.append(token)
        logits = decoder.forward(slot, 1)
    np.testing.assert_allclose(logits, _reference_logits(decoder._session, ids), atol=1e-4)
    # The graph wrote K/V straight into the slot's buffer (past and present are one buffer):
    # the filled positions are non-zero, the rest untouched.
    keys = slot.keys[0]
    assert np.all(np.abs(keys[0, :, : len(ids), :]).sum(axis=-1) > 0)
    assert not keys[0, :, len(ids) :, :].any()


def test_prefix_reuse_gives_the_same_logits_as_recomputing(decoder):
    first = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    slot, _ = decoder.pool.acquire(np.array(first))
    _run(decoder, slot, first, chunk=4)
    decoder.pool.release(slot)

    # The next turn: the old sequence with a different tail, plus new tokens.
    second = [*first[:7], 40, 41, 42, 43]
    again, reused = decoder.pool.acquire(np.array(second))
    assert again is slot
    assert reused == 7
    assert slot.length == 7
    logits = _run(decoder, slot, second, chunk=4)
    np.testing.assert_allclose(logits, _reference_logits(decoder._session, second), atol=1e-4)


def test_reusable_prefix_always_leaves_one_token_to_run():
    cached = np.array([1, 2, 3, 4], np.int64)
    assert reusable_prefix(cached, np.array([1, 2, 3, 4])) == 3
    assert reusable_prefix(cached, np.array([1, 2, 3, 4, 5, 6])) == 4
    assert reusable_prefix(cached, np.array([1, 2, 9, 4, 5])) == 2
    assert reusable_prefix(cached, np.array([7, 2, 3])) == 0
    assert reusable_prefix(cached, np.array([1])) == 0
    assert reusable_prefix(cached[:0], np.array([1, 2])) == 0


def test_a_repeated_prompt_reuses_the_kept_prefill_logits(decoder):
    ids = [4, 5, 6, 7, 8, 9]
    slot, _ = decoder.pool.acquire(np.array(ids))
    logits = _run(decoder, slot, ids, chunk=4)
    slot.save_prefill(logits)
    slot.tokens[slot.length] = 77
    decoder.forward(slot, 1)  # a generated token after the prompt
    decoder.pool.release(slot)

    again, reused = decoder.pool.acquire(np.array(ids))
    assert (again, reused, again.length) == (slot, len(ids), len(ids))
    np.testing.assert_array_equal(again.prefill_logits, logits)
    decoder.pool.release(again)
    # A shorter prompt rewinds below the kept logits: they are dropped, one token is rerun.
    shorter, reused = decoder.pool.acquire(np.array(ids[:4]))
    assert (reused, shorter.prefill_length) == (3, 0)


def _spec(max_length: int = 32) -> DecoderSpec:
    return DecoderSpec(
        num_layers=1,
        num_kv_heads=1,
        head_size=8,
        vocab_size=VOCAB,
        max_length=max_length,
        prefill_chunk=8,
    )


def _fill(pool: KVCachePool, ids: list[int]) -> None:
    slot, _ = pool.acquire(np.array(ids))
    slot.tokens[: len(ids)] = ids
    slot.length = len(ids)
    pool.release(slot)


def test_pool_reuses_the_longest_prefix_then_evicts_the_least_recently_used():
    pool = KVCachePool(_spec(), num_slots=2)
    _fill(pool, [1, 2, 3])
    _fill(pool, [7, 8, 9])
    a, b = pool.slots
    slot, reused = pool.acquire(np.array([7, 8, 9, 10]))
    assert (slot, reused) == (b, 3)
    pool.release(slot)
    # No prefix matches: the least recently used slot (a) is evicted and rewound.
    slot, reused = pool.acquire(np.array([4, 4]))
    assert (slot, reused, slot.length) == (a, 0, 0)
    pool.release(slot)
    assert len(pool.slots) == 2


def test_pool_refuses_when_every_slot_is_leased():
    pool = KVCachePool(_spec(), num_slots=1)
    with pool.lease(np.array([1, 2])), pytest.raises(ImagineAPITooManyRequestsException):
        pool.acquire(np.array([3]))
    slot, _ = pool.acquire(np.array([3]))
    assert slot.leased


def test_a_failed_run_releases_its_slot():
    pool = KVCachePool(_spec(), num_slots=1)
    with pytest.raises(RuntimeError), pool.lease(np.array([1, 2])):
        raise RuntimeError("boom")
    assert not pool.slots[0].leased


def test_forward_past_the_cache_is_a_context_error(decoder):
    ids = list(range(1, 45))
    slot, _ = decoder.pool.acquire(np.array(ids))
    _run(decoder, slot, ids, chunk=16)
    with pytest.raises(ContextLengthError) as info:
        decoder.forward(slot, 5)
    assert info.value.status_code == 400
    assert "48 positions" in str(info.value)


def test_slots_are_allocated_lazily_and_cleared_on_close(decoder):
    assert decoder.pool.slots == ()
    slot, _ = decoder.pool.acquire(np.array([1, 2]))
    empty = decoder.pool.resident_bytes()
    _run(decoder, slot, list(range(1, 11)), chunk=4)
    decoder.pool.release(slot)
    # Memory counts the positions filled, not the whole preallocated (lazily mapped) buffer.
    per_position = decoder.spec.slot_bytes // decoder.spec.max_length
    assert decoder.pool.resident_bytes() == empty + 10 * per_position
    assert slot.nbytes >= decoder.spec.slot_bytes
    decoder.close()
    assert decoder.pool.slots == ()


def _resident() -> int:
    resident = process_resident_bytes()
    assert resident is not None
    return resident


@pytest.mark.skipif(process_resident_bytes() is None, reason="reads /proc")
def test_a_slot_costs_memory_only_for_the_positions_it_fills():
    # SmolLM2's shape at its full context: 377 MB of K/V if every page were touched.
    spec = DecoderSpec(num_layers=30, num_kv_heads=3, head_size=64, vocab_size=8,
                       max_length=8192, prefill_chunk=128)  # fmt: skip
    big = np.ones(4 * 2**20)  # malloc reuses freed heap memory, which calloc must clear
    del big
    before = _resident()
    slot = KVSlot(0, spec)
    for k, v in zip(slot.keys, slot.values, strict=True):
        k[0, :, :12] = 1.0  # 12 positions written, as after a short prompt
        v[0, :, :12] = 1.0
    grown = _resident() - before
    assert sum(k.nbytes + v.nbytes for k, v in zip(slot.keys, slot.values, strict=True)) > 3e8
    assert grown < 16 * 2**20, grown / 2**20
