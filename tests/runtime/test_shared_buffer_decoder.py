"""The shared-buffer decoder step on a tiny GQA graph: chunked prefill, in-place K/V, prefix
reuse, and several sessions of one graph chosen per step by a policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from imagine_edge.runtime.kv_cache import DecoderSpec
from imagine_edge.runtime.shared_buffer_decoder import SharedBufferDecoder
from imagine_edge.runtime.thread_policy import AdaptivePolicy, FixedPolicy
from imagine_edge.sdk.errors import ContextLengthError

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
    np.testing.assert_allclose(logits, _reference_logits(decoder.sessions[0], ids), atol=1e-4)
    assert slot.length == len(ids)


def test_decode_steps_write_kv_in_place(decoder):
    ids = [9, 8, 7, 6, 5]
    slot, _ = decoder.pool.acquire(np.array(ids))
    _run(decoder, slot, ids, chunk=4)
    for token in (100, 101, 102):
        slot.tokens[slot.length] = token
        ids.append(token)
        logits = decoder.forward(slot, 1)
    np.testing.assert_allclose(logits, _reference_logits(decoder.sessions[0], ids), atol=1e-4)
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
    np.testing.assert_allclose(logits, _reference_logits(decoder.sessions[0], second), atol=1e-4)


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


class _Alternating:
    """A policy that switches session on every decode step and remembers what it was told."""

    def __init__(self) -> None:
        self.step = 0
        self.recorded: list[int] = []

    @property
    def preferred(self) -> int:
        return 0

    def choose(self) -> int:
        return self.step % 2

    def record(self, arm: int, seconds: float) -> None:
        assert seconds > 0
        self.recorded.append(arm)
        self.step += 1

    def describe(self) -> str:
        return "alternating"

    def stats(self) -> dict[str, object]:
        return {}


def _decode(decoder: SharedBufferDecoder, prompt: list[int], steps: int) -> list[np.ndarray]:
    slot, _ = decoder.pool.acquire(np.array(prompt))
    out = [_run(decoder, slot, prompt, chunk=4)]
    for _ in range(steps):
        slot.tokens[slot.length] = int(np.argmax(out[-1]))
        out.append(decoder.forward(slot, 1).copy())
    decoder.pool.release(slot)
    return out


def test_steps_switching_sessions_give_the_numbers_of_one_session(tiny_decoder):
    spec = DecoderSpec.from_session(_session(tiny_decoder), max_length=48, prefill_chunk=4)
    single = SharedBufferDecoder(_session(tiny_decoder), spec)
    policy = _Alternating()
    switching = SharedBufferDecoder(
        _session(tiny_decoder), spec, alternates=[_session(tiny_decoder)], policy=policy
    )
    prompt = [3, 1, 4, 1, 5, 9, 2, 6]
    expected = _decode(single, prompt, steps=6)
    got = _decode(switching, prompt, steps=6)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)
    # Both sessions ran decode steps on the same K/V buffers; prefill was not recorded.
    assert policy.recorded == [0, 1, 0, 1, 0, 1]


def test_an_adaptive_policy_drives_a_decoder_to_the_end(tiny_decoder):
    spec = DecoderSpec.from_session(_session(tiny_decoder), max_length=48, prefill_chunk=4)
    policy = AdaptivePolicy(["a", "b"], period=4, probe=2)
    decoder = SharedBufferDecoder(
        _session(tiny_decoder), spec, alternates=[_session(tiny_decoder)], policy=policy
    )
    single = SharedBufferDecoder(_session(tiny_decoder), spec)
    prompt = [7, 7, 8]
    for a, b in zip(_decode(single, prompt, 30), _decode(decoder, prompt, 30), strict=True):
        np.testing.assert_array_equal(a, b)
    assert policy.probes >= 2
    assert set(policy.stats()["median_step_ms"]) == {"a", "b"}


def test_alternate_sessions_need_a_policy(tiny_decoder):
    session = _session(tiny_decoder)
    spec = DecoderSpec.from_session(session, max_length=8)
    with pytest.raises(ValueError, match="policy"):
        SharedBufferDecoder(session, spec, alternates=[_session(tiny_decoder)])
    decoder = SharedBufferDecoder(session, spec, policy=FixedPolicy("one"))
    assert decoder.policy.describe() == "one"
    assert decoder.sessions == (session,)
