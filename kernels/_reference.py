"""The sampling specification, written as plain numpy (the "reference" backend).

This module *is* the spec: the C extension must return the same token id for the same inputs and
leave bit-identical logits. Every step is an IEEE float32/float64 operation or an integer
operation that C reproduces exactly; nothing depends on summation order (see `docs/sampling.md`).

Stage order (pinned; vLLM's, with the allowed-token mask of constrained decoding first):
allowed-token mask -> stop-id mask -> repetition penalty -> presence/frequency penalties ->
temperature (<= 1e-5: greedy argmax, later stages skipped) -> top-k -> top-p -> draw.

Probabilities are integer weights: ``w = trunc(exp32(x - max(x)) * 2**30)`` with `exp32` the fixed
polynomial below, so that sums are exact integers in any order. Top-p orders tokens by (weight
descending, id ascending); the draw walks kept tokens in id order and returns the first whose
running weight exceeds ``floor(uniform * W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from imagine_edge.kernels._checks import (
    check_allowed,
    check_batch,
    check_row,
    check_uniform,
    mask_words,
    stop_mask_ids,
)
from imagine_edge.kernels._config import SamplingConfig, SequenceState

__all__ = [
    "WEIGHT_BITS",
    "apply_allowed",
    "apply_penalties",
    "apply_temperature",
    "apply_top_k",
    "apply_top_p",
    "draw",
    "exp32",
    "process_logits",
    "sample",
    "sample_batch",
    "weights",
]

WEIGHT_BITS: Final = 30
"""Probability weights are fixed point with this many fractional bits (the top token has 2**30)."""

_F = np.float32
# exp32 constants (Cody-Waite ln 2 split as in Cephes' expf), spelled as exact float32 hex so that
# C and numpy use identical values.
_EXP_FLOOR: Final = _F(float.fromhex("-0x1.5cp+6"))  # -87: keeps 2**n a normal float
_LOG2E: Final = _F(float.fromhex("0x1.715476p+0"))
_ROUNDER: Final = _F(float.fromhex("0x1.8p+23"))  # adding and subtracting 1.5 * 2**23 rounds
_LN2_HI: Final = _F(float.fromhex("0x1.63p-1"))
_LN2_LO: Final = _F(float.fromhex("-0x1.bd0106p-13"))
# q(r) ~ (exp(r) - 1 - r) / r**2 on |r| <= ln(2)/2, highest degree first; fitted for relative
# error of exp (max 1.8e-7 over [-87, 0]).
_POLY: Final = tuple(
    _F(float.fromhex(h))
    for h in ("0x1.106284p-7", "0x1.5729fp-5", "0x1.5557aep-3", "0x1.fffdfcp-2")
)
_ONE: Final = _F(1.0)
_WEIGHT_SCALE: Final = _F(2.0**WEIGHT_BITS)
_NEG_INF: Final = _F(-np.inf)
_NO_IDS: Final = np.zeros(0, dtype=np.int32)


def exp32(d: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """exp(d) for d <= 0 in float32: range reduction by ln 2, then 1 + r + r**2 * q(r), q cubic.

    Inputs below -87 (including -inf) are clamped to -87. The operation sequence is the
    specification: C evaluates exactly these float32 operations in this order.
    """
    d = np.maximum(d, _EXP_FLOOR)
    n = (d * _LOG2E + _ROUNDER) - _ROUNDER
    r = d - n * _LN2_HI
    r = r - n * _LN2_LO
    z = r * r
    p = _POLY[0] * r + _POLY[1]
    for c in _POLY[2:]:
        p = p * r + c
    p = p * z + r
    p = p + _ONE
    scale = ((n.astype(np.int32) + 127) << 23).view(np.float32)
    e: npt.NDArray[np.float32] = p * scale
    return e


def weights(x: npt.NDArray[np.float32], x_max: np.float32) -> npt.NDArray[np.int32]:
    """Fixed-point probability weights ``trunc(exp32(x - x_max) * 2**30)``; -inf weighs 0."""
    return (exp32(x - x_max) * _WEIGHT_SCALE).astype(np.int32)


def _check_drawable(x: npt.NDArray[np.float32]) -> None:
    if np.isnan(x).any() or np.isposinf(x).any():
        raise ValueError("logits contain NaN or +inf (after penalties and temperature)")
    if not np.isfinite(x).any():
        raise ValueError("no token can be sampled: every logit is -inf")


def apply_allowed(logits: npt.NDArray[np.float32], allowed: npt.NDArray[np.uint32]) -> None:
    """-inf, in place, for every token the bitmask leaves out (bit i % 32 of word i // 32).

    Bits at or past the row's length are ignored. Raises ValueError when no token is allowed.
    """
    vocab = logits.shape[0]
    as_bytes = allowed.astype("<u4", copy=False).view(np.uint8)
    bits = np.unpackbits(as_bytes, bitorder="little")[:vocab]
    if not bits.any():
        raise ValueError("the allowed-token mask allows no token")
    logits[bits == 0] = _NEG_INF


def apply_penalties(
    logits: npt.NDArray[np.float32], config: SamplingConfig, state: SequenceState
) -> None:
    """Repetition, then presence/frequency penalties, in place, touching only history tokens.

    Repetition (HF/vLLM): over distinct prompt and generated ids, positive logits are divided by
    the penalty and negative ones multiplied (so a penalty > 1 always lowers them).
    Presence/frequency (OpenAI): ``logit -= float32(frequency * count + presence)`` over generated
    ids, the adjustment computed in float64 and rounded once.
    """
    if config.has_repetition_penalty:
        ids = state.repetition_ids
        values = logits[ids]
        penalty = _F(config.repetition_penalty)
        logits[ids] = np.where(values > 0, values / penalty, values * penalty)
    if config.has_presence_frequency:
        ids = state.generated_ids
        counts = state.generated_counts.astype(np.float64)
        adjust = (config.frequency_penalty * counts + config.presence_penalty).astype(np.float32)
        logits[ids] = logits[ids] - adjust


def apply_temperature(logits: npt.NDArray[np.float32], temperature: float) -> None:
    """Scale in place by ``float32(1 / temperature)`` (a multiply, identical in C)."""
    logits *= _F(1.0 / temperature)


def apply_top_k(logits: npt.NDArray[np.float32], top_k: int) -> None:
    """Keep the top_k largest finite logits (ties: lowest id wins); write -inf elsewhere."""
    if top_k <= 0 or top_k >= logits.shape[0]:
        return
    order = np.argsort(-logits, kind="stable")  # stable: equal logits keep id order
    logits[order[top_k:]] = _NEG_INF


def apply_top_p(logits: npt.NDArray[np.float32], top_p: float) -> npt.NDArray[np.int32]:
    """Keep the smallest prefix, by (weight desc, id asc), whose weight sum S has S >= p * W.

    W is the total weight; the comparison is ``float64(S) >= top_p * float64(W)``. Writes -inf to
    the logits of dropped tokens and returns the weights with dropped tokens zeroed.
    """
    w = weights(logits, logits.max())
    if top_p >= 1.0:
        return w
    order = np.argsort(-w.astype(np.int64), kind="stable")
    cumulative = np.cumsum(w[order], dtype=np.int64)
    target = top_p * float(cumulative[-1])
    keep = int(np.argmax(cumulative.astype(np.float64) >= target)) + 1
    dropped = order[keep:]
    logits[dropped] = _NEG_INF
    w[dropped] = 0
    return w


def draw(w: npt.NDArray[np.int32], uniform: float) -> int:
    """Inverse CDF in id order: the first id whose running weight exceeds floor(uniform * W)."""
    cumulative = np.cumsum(w, dtype=np.int64)
    total = int(cumulative[-1])
    r = min(int(uniform * float(total)), total - 1)
    return int(np.searchsorted(cumulative, r, side="right"))


def _sample_row(
    logits: npt.NDArray[np.float32],
    config: SamplingConfig,
    state: SequenceState,
    uniform: float,
    mask_ids: npt.NDArray[np.int32],
    allowed: npt.NDArray[np.uint32] | None,
) -> int:
    if allowed is not None:
        apply_allowed(logits, allowed)
    if state.num_generated < config.min_tokens:
        logits[mask_ids] = _NEG_INF
    apply_penalties(logits, config, state)
    if config.is_greedy:
        _check_drawable(logits)
        return int(np.argmax(logits))  # first maximum: lowest id wins ties
    apply_temperature(logits, config.temperature)
    _check_drawable(logits)
    apply_top_k(logits, config.top_k)
    w = apply_top_p(logits, config.top_p)
    return draw(w, uniform)


def process_logits(
    logits: npt.NDArray[np.float32],
    config: SamplingConfig,
    state: SequenceState,
    *,
    eos_token_ids: Sequence[int] = (),
    allowed_mask: npt.NDArray[np.uint32] | npt.NDArray[np.int32] | None = None,
) -> None:
    """Stages 1-5 of `sample` in place (mask, stop ids, penalties, temperature unless greedy)."""
    row = check_row(logits, state)
    vocab = state.vocab_size
    if allowed_mask is not None:
        apply_allowed(row, check_allowed(allowed_mask, (mask_words(vocab),), vocab))
    if state.num_generated < config.min_tokens:
        row[stop_mask_ids(eos_token_ids, vocab)] = _NEG_INF
    apply_penalties(row, config, state)
    if not config.is_greedy:
        apply_temperature(row, config.temperature)


def sample(
    logits: npt.NDArray[np.float32],
    config: SamplingConfig,
    state: SequenceState,
    uniform: float,
    *,
    eos_token_ids: Sequence[int] = (),
    allowed_mask: npt.NDArray[np.uint32] | npt.NDArray[np.int32] | None = None,
) -> int:
    """Run the whole chain on one `[V]` row and return the drawn token id. See `kernels.sample`."""
    row = check_row(logits, state)
    u = check_uniform(uniform)
    vocab = state.vocab_size
    allowed = None
    if allowed_mask is not None:
        allowed = check_allowed(allowed_mask, (mask_words(vocab),), vocab)
    masked = state.num_generated < config.min_tokens  # ids are checked only when used, as in C
    mask = stop_mask_ids(eos_token_ids, vocab) if masked else _NO_IDS
    return _sample_row(row, config, state, u, mask, allowed)


def sample_batch(
    logits: npt.NDArray[np.float32],
    configs: Sequence[SamplingConfig],
    states: Sequence[SequenceState],
    uniforms: npt.NDArray[np.float64] | Sequence[float],
    *,
    eos_token_ids: Sequence[int] = (),
    allowed_masks: npt.NDArray[np.uint32] | npt.NDArray[np.int32] | None = None,
) -> npt.NDArray[np.int32]:
    """`sample` over each row of `[B, V]` logits with per-row configs, states and uniforms."""
    batch, draws = check_batch(logits, configs, states, uniforms)
    rows, vocab = batch.shape
    allowed = None
    if allowed_masks is not None:
        allowed = check_allowed(allowed_masks, (rows, mask_words(vocab)), vocab)
    mask = stop_mask_ids(eos_token_ids, vocab)
    out = np.empty(rows, dtype=np.int32)
    for i in range(rows):
        row_allowed = None if allowed is None else allowed[i]
        try:
            out[i] = _sample_row(
                batch[i], configs[i], states[i], float(draws[i]), mask, row_allowed
            )
        except ValueError as e:
            raise ValueError(f"row {i}: {e}") from e
    return out
