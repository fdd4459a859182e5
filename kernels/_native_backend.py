"""The native backend: argument checks and buffer packing around the C extension `_native`.

Importing this module raises ImportError when the extension is not built; `kernels/__init__.py`
handles that. Each thread owns a reusable workspace (scratch the C code needs, 16 bytes per vocab
entry), so the hot path allocates nothing after the first call and concurrent callers never share
scratch (the C code runs with the GIL released).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from imagine_edge.kernels import _native
from imagine_edge.kernels._checks import (
    check_allowed,
    check_batch,
    check_row,
    check_uniform,
    mask_words,
    stop_mask_ids,
)
from imagine_edge.kernels._config import SamplingConfig, SequenceState

__all__ = ["process_logits", "sample", "sample_batch"]

_NO_IDS = np.zeros(0, dtype=np.int32)
_F32 = np.dtype(np.float32)
_local = threading.local()


def _workspace(vocab: int) -> npt.NDArray[np.uint8]:
    if getattr(_local, "vocab", None) != vocab:
        need = _native.workspace_bytes(vocab)
        ws: npt.NDArray[np.uint8] | None = getattr(_local, "workspace", None)
        if ws is None or ws.shape[0] < need:
            _local.workspace = np.empty(need, dtype=np.uint8)
        _local.vocab = vocab
    workspace: npt.NDArray[np.uint8] = _local.workspace
    return workspace


def _row(
    config: SamplingConfig, state: SequenceState, allowed: npt.NDArray[np.uint32] | None
) -> _native._Row:
    # The state's private arrays with their used lengths: slicing views per token costs more.
    return (
        config.native_plan,
        state._num_generated < config.min_tokens,
        state._rep_ids,
        state._n_rep,
        state._gen_ids,
        state._gen_counts,
        state._n_gen,
        allowed,
    )


def _is_plain_row(logits: object, vocab: int) -> bool:
    """The common case, checked cheaply; anything else goes through `check_row`."""
    if type(logits) is not np.ndarray or logits.dtype is not _F32 or logits.shape != (vocab,):
        return False
    flags = logits.flags
    return bool(flags.c_contiguous and flags.writeable)


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
    vocab = state.vocab_size
    row = logits if _is_plain_row(logits, vocab) else check_row(logits, state)
    u = check_uniform(uniform)
    allowed = None
    if allowed_mask is not None:
        allowed = check_allowed(allowed_mask, (mask_words(vocab),), vocab)
    masked = state._num_generated < config.min_tokens
    mask = stop_mask_ids(eos_token_ids, vocab) if masked else _NO_IDS
    return _native.sample(row, _row(config, state, allowed), mask, u, _workspace(vocab))


def process_logits(
    logits: npt.NDArray[np.float32],
    config: SamplingConfig,
    state: SequenceState,
    *,
    eos_token_ids: Sequence[int] = (),
    allowed_mask: npt.NDArray[np.uint32] | npt.NDArray[np.int32] | None = None,
) -> None:
    """Stages 1-5 of `sample` in place. See `kernels.process_logits`."""
    vocab = state.vocab_size
    row = logits if _is_plain_row(logits, vocab) else check_row(logits, state)
    allowed = None
    if allowed_mask is not None:
        allowed = check_allowed(allowed_mask, (mask_words(vocab),), vocab)
    masked = state._num_generated < config.min_tokens
    mask = stop_mask_ids(eos_token_ids, vocab) if masked else _NO_IDS
    _native.process(row, _row(config, state, allowed), mask)


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
    packed = tuple(
        _row(c, s, None if allowed is None else allowed[i])
        for i, (c, s) in enumerate(zip(configs, states, strict=True))
    )
    _native.sample_batch(batch, vocab, packed, mask, draws, _workspace(vocab), out)
    return out
