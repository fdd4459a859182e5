"""Stub for the C extension `_native` (kernels/_native_module.c over kernels/src/ie_sampling.h).

Any C-contiguous buffer with the right item size works; the wrapper passes numpy arrays: logits
float32 (changed in place), id and count arrays int32, allowed-token bitmasks uint32 (or int32, as
llguidance allocates them) of (vocab + 31) // 32 words, uniforms float64, workspace uint8 of at
least `workspace_bytes(vocab)` bytes, out int32.
"""

from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt

_Ids: TypeAlias = npt.NDArray[np.int32]
_Words: TypeAlias = npt.NDArray[np.uint32] | npt.NDArray[np.int32]

WEIGHT_BITS: Final[int]
MAX_VOCAB: Final[int]

_Plan: TypeAlias = tuple[float, float, float, float, float, int, bool]
"""(temperature, top_p, repetition_penalty, presence_penalty, frequency_penalty, top_k, greedy)."""

_Row: TypeAlias = tuple[_Plan, bool, _Ids, int, _Ids, _Ids, int, _Words | None]
"""(plan, mask_active, repetition_ids, n_rep, generated_ids, generated_counts, n_gen, allowed):
only the first n_rep / n_gen entries of the arrays are read; allowed is None (every token) or the
row's bitmask (bit i % 32 of word i // 32 allows token i)."""

def isa() -> str: ...
def select_isa(name: str | None, /) -> None: ...
def workspace_bytes(vocab: int, /) -> int: ...
def sample(
    logits: npt.NDArray[np.float32],
    row: _Row,
    mask_ids: _Ids,
    uniform: float,
    workspace: npt.NDArray[np.uint8],
    /,
) -> int: ...
def process(logits: npt.NDArray[np.float32], row: _Row, mask_ids: _Ids, /) -> None: ...
def sample_batch(
    logits: npt.NDArray[np.float32],
    vocab: int,
    rows: tuple[_Row, ...],
    mask_ids: _Ids,
    uniforms: npt.NDArray[np.float64],
    workspace: npt.NDArray[np.uint8],
    out: _Ids,
    /,
) -> None: ...
