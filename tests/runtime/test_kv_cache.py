"""KV-cache slots and the slot pool."""

from __future__ import annotations

import numpy as np
import pytest

from imagine_edge.runtime.kv_cache import (
    DecoderSpec,
    KVCachePool,
    KVSlot,
    reusable_prefix,
)
from imagine_edge.runtime.memory import process_resident_bytes
from imagine_edge.sdk.errors import ImagineAPITooManyRequestsException


def test_reusable_prefix_always_leaves_one_token_to_run():
    cached = np.array([1, 2, 3, 4], np.int64)
    assert reusable_prefix(cached, np.array([1, 2, 3, 4])) == 3
    assert reusable_prefix(cached, np.array([1, 2, 3, 4, 5, 6])) == 4
    assert reusable_prefix(cached, np.array([1, 2, 9, 4, 5])) == 2
    assert reusable_prefix(cached, np.array([7, 2, 3])) == 0
    assert reusable_prefix(cached, np.array([1])) == 0
    assert reusable_prefix(cached[:0], np.array([1, 2])) == 0


def _spec(max_length: int = 32) -> DecoderSpec:
    return DecoderSpec(
        num_layers=1,
        num_kv_heads=1,
        head_size=8,
        vocab_size=258,
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


def test_usage_counts_leased_and_allocated_slots():
    pool = KVCachePool(_spec(), num_slots=2)
    assert (pool.usage().leased, pool.usage().allocated, pool.usage().total) == (0, 0, 2)
    with pool.lease(np.array([1, 2, 3], dtype=np.int64)):
        during = pool.usage()
    after = pool.usage()
    assert (during.leased, during.allocated) == (1, 1)
    assert (after.leased, after.allocated, after.total) == (0, 1, 2)


def test_a_prompt_shared_with_a_running_sequence_copies_its_positions():
    pool = KVCachePool(_spec(), num_slots=3)
    running, reused = pool.acquire(np.array([1, 2, 3, 4, 5]))
    assert reused == 0
    running.tokens[:7] = [1, 2, 3, 4, 5, 60, 61]  # its prompt and two generated tokens
    running.length = 7
    for layer in range(1):
        running.keys[layer][0, 0, :7, :] = np.arange(7)[:, None]
        running.values[layer][0, 0, :7, :] = -np.arange(7)[:, None]
    # The same prompt (n choices), and a longer one with the same start, while it runs.
    twin, reused = pool.acquire(np.array([1, 2, 3, 4, 5]))
    assert twin is not running
    assert reused == 4
    np.testing.assert_array_equal(twin.keys[0][0, 0, :4, 0], [0, 1, 2, 3])
    np.testing.assert_array_equal(twin.values[0][0, 0, :4, 0], [0, -1, -2, -3])
    np.testing.assert_array_equal(twin.tokens[:4], [1, 2, 3, 4])
    longer, reused = pool.acquire(np.array([1, 2, 3, 4, 5, 60, 99]))
    assert reused == 6
    assert longer.length == 6
    # The running sequence's own buffers are untouched.
    np.testing.assert_array_equal(running.keys[0][0, 0, :7, 0], np.arange(7))
    # A free slot that holds as much is reused in place instead.
    pool.release(twin)
    again, reused = pool.acquire(np.array([1, 2, 3, 4, 5]))
    assert again is twin
    assert reused == 4
