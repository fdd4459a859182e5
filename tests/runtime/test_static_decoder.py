"""The static-shape (QNN-style) decoder: host-written KV slots, padded prefill chunks, masks.

Runs a tiny one-layer graph pair with the QNN graphs' interface on the CPU EP and checks every
step against plain causal attention computed in numpy.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from imagine_edge.runtime.static_decoder import MASK_VALUE, StaticDecoder
from imagine_edge.sdk.errors import ContextLengthError, ModelRunError


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture
def static(tiny_static):
    decoder = StaticDecoder(
        _session(tiny_static.prefill), _session(tiny_static.decode), provider="CPU"
    )
    return decoder, tiny_static


def _prefill(decoder: StaticDecoder, slot, ids: list[int]) -> np.ndarray:
    slot.tokens[slot.length : len(ids)] = ids[slot.length :]
    chunk = decoder.spec.prefill_chunk
    logits = None
    while slot.length < len(ids):
        logits = decoder.forward(slot, min(chunk, len(ids) - slot.length)).copy()
    assert logits is not None
    return logits


def test_spec_comes_from_the_graph_pair(static):
    decoder, tiny = static
    spec = decoder.spec
    assert (spec.max_length, spec.prefill_chunk) == (tiny.context, tiny.prefill_length)
    assert spec.num_layers == 1
    assert spec.has_position_ids


def test_padded_chunks_and_decode_steps_match_full_attention(static):
    decoder, tiny = static
    ids = [5, 77, 3, 120, 9, 9, 200, 41, 18, 250, 7]  # 4 + 4 + 3: the last chunk is padded
    slot, _ = decoder.pool.acquire(np.array(ids))
    logits = _prefill(decoder, slot, ids)
    np.testing.assert_allclose(logits, tiny.reference(ids), atol=1e-4)
    for token in (31, 32, 33):
        slot.tokens[slot.length] = token
        ids.append(token)
        logits = decoder.forward(slot, 1)
        np.testing.assert_allclose(logits, tiny.reference(ids), atol=1e-4)
    # The host wrote exactly the filled positions of the slot.
    assert np.abs(slot.keys[0][0, 0, : len(ids)]).sum(axis=-1).min() > 0
    assert not slot.keys[0][0, 0, len(ids) :].any()


def test_reused_prefix_with_stale_slots_matches_a_fresh_run(static):
    decoder, tiny = static
    first = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    slot, _ = decoder.pool.acquire(np.array(first))
    _prefill(decoder, slot, first)
    decoder.pool.release(slot)
    # Rewind to 6 tokens: slots 6..9 keep stale K/V that the mask must hide.
    second = [*first[:6], 100, 101]
    slot, reused = decoder.pool.acquire(np.array(second))
    assert reused == 6
    logits = _prefill(decoder, slot, second)
    np.testing.assert_allclose(logits, tiny.reference(second), atol=1e-4)


def test_mask_uses_the_quantization_friendly_value(static):
    decoder, tiny = static
    slot, _ = decoder.pool.acquire(np.array([1, 2, 3]))
    _prefill(decoder, slot, [1, 2, 3])
    slot.tokens[3] = 4
    decoder.forward(slot, 1)
    mask = decoder._decode.mask[0, 0, 0]
    assert set(np.unique(mask)) == {0.0, MASK_VALUE}
    assert not mask[:3].any()
    assert (mask[3 : tiny.context] == MASK_VALUE).all()
    assert mask[tiny.context] == 0.0


def test_calls_beyond_the_graphs_or_the_cache_are_refused(static):
    decoder, tiny = static
    slot, _ = decoder.pool.acquire(np.array([1]))
    with pytest.raises(ContextLengthError, match=f"1..{tiny.prefill_length} tokens"):
        decoder.forward(slot, tiny.prefill_length + 1)
    slot.length = tiny.context - 1
    slot.tokens[slot.length] = 3
    decoder.forward(slot, 1)
    with pytest.raises(ContextLengthError, match=f"{tiny.context} positions"):
        decoder.forward(slot, 1)


def test_mismatched_graphs_are_rejected(tiny_static, tiny_decoder):
    prefill, decode = _session(tiny_static.prefill), _session(tiny_static.decode)
    with pytest.raises(ModelRunError, match="do not match"):
        StaticDecoder(prefill, prefill)
    with pytest.raises(ModelRunError):
        StaticDecoder(_session(tiny_decoder), decode)
