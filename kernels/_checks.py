"""Argument checks shared by both backends, so that both reject the same inputs the same way.

The C code asserts only internal invariants; everything a caller can get wrong (dtype, shape,
contiguity, id ranges, the uniform draw) is checked here and raised as `ValueError` naming the bad
value and the valid range.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from imagine_edge.kernels._config import SamplingConfig, SequenceState

__all__ = [
    "check_allowed",
    "check_batch",
    "check_row",
    "check_uniform",
    "mask_words",
    "stop_mask_ids",
]

_NO_IDS = np.zeros(0, dtype=np.int32)


def _check_array(logits: object, ndim: int) -> npt.NDArray[np.float32]:
    if not isinstance(logits, np.ndarray):
        raise ValueError(f"logits must be a numpy float32 array, got {type(logits).__name__}")
    if logits.dtype != np.float32:
        raise ValueError(f"logits must have dtype float32, got {logits.dtype}")
    if logits.ndim != ndim:
        raise ValueError(f"logits must be {ndim}-D, got shape {logits.shape}")
    if not logits.flags.c_contiguous or not logits.flags.writeable:
        raise ValueError("logits must be C-contiguous and writeable (it is modified in place)")
    return logits


def check_row(logits: object, state: SequenceState) -> npt.NDArray[np.float32]:
    """Validate a `[V]` logits row against the sequence's vocabulary size."""
    row = _check_array(logits, 1)
    if row.shape[0] != state.vocab_size:
        raise ValueError(
            f"logits has {row.shape[0]} entries but the sequence's vocab_size is {state.vocab_size}"
        )
    return row


def check_batch(
    logits: object,
    configs: Sequence[SamplingConfig],
    states: Sequence[SequenceState],
    uniforms: object,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Validate `[B, V]` logits with B configs, states and uniforms; returns the typed arrays."""
    batch = _check_array(logits, 2)
    rows, vocab = batch.shape
    if len(configs) != rows or len(states) != rows:
        raise ValueError(
            f"need one config and one state per row: {rows} rows, "
            f"{len(configs)} configs, {len(states)} states"
        )
    for i, state in enumerate(states):
        if state.vocab_size != vocab:
            raise ValueError(f"states[{i}].vocab_size is {state.vocab_size}, logits have V={vocab}")
    draws = np.ascontiguousarray(uniforms, dtype=np.float64)
    if draws.shape != (rows,):
        raise ValueError(f"uniforms must have shape ({rows},), got {draws.shape}")
    if draws.size and not (np.all(draws >= 0.0) and np.all(draws < 1.0)):
        bad = draws[~((draws >= 0.0) & (draws < 1.0))][0]
        raise ValueError(f"uniforms must be in [0, 1), got {bad!r}")
    return batch, draws


def check_uniform(uniform: float) -> float:
    """The caller's uniform variate, from its per-request seeded generator, in [0, 1)."""
    value = float(uniform)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"uniform must be in [0, 1), got {uniform!r}")
    return value


def stop_mask_ids(eos_token_ids: Sequence[int], vocab_size: int) -> npt.NDArray[np.int32]:
    """The ids masked while ``num_generated < min_tokens``, as an int32 array within range."""
    if len(eos_token_ids) == 0:
        return _NO_IDS
    ids = np.asarray(eos_token_ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"eos_token_ids must be a flat sequence of ints, got shape {ids.shape}")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"eos_token_ids must be in [0, {vocab_size}), got {low if low < 0 else high}"
        )
    return ids.astype(np.int32)


def mask_words(vocab_size: int) -> int:
    """Words of an allowed-token bitmask for this vocabulary: ``ceil(vocab_size / 32)``."""
    return (vocab_size + 31) // 32


def check_allowed(
    allowed: object, shape: tuple[int, ...], vocab_size: int
) -> npt.NDArray[np.uint32]:
    """An allowed-token bitmask of `shape` words as uint32 (a view, never a copy).

    The layout is llguidance's: bit ``i % 32`` of word ``i // 32`` allows token i; bits at or past
    `vocab_size` are ignored. int32 masks (what llguidance allocates) are viewed as uint32.
    """
    if not isinstance(allowed, np.ndarray):
        raise ValueError(
            f"allowed_mask must be a numpy uint32 or int32 array, got {type(allowed).__name__}"
        )
    if allowed.dtype not in (np.uint32, np.int32):
        raise ValueError(f"allowed_mask must have dtype uint32 or int32, got {allowed.dtype}")
    if allowed.shape != shape:
        raise ValueError(
            f"allowed_mask must have shape {shape} (ceil({vocab_size} / 32) words per row), "
            f"got {allowed.shape}"
        )
    if not allowed.flags.c_contiguous:
        raise ValueError("allowed_mask must be C-contiguous")
    words: npt.NDArray[np.uint32] = allowed.view(np.uint32)
    return words
