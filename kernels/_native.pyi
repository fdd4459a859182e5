"""Stub for the C extension `_native` (kernels/_native_module.c over kernels/src/ie_sampling.h).

Buffers must be C-contiguous: logits float32 (writable, changed in place), id and count arrays
int32, uniforms float64, workspace uint8 of at least `workspace_bytes(vocab)` bytes, out int32.
"""

from typing import Final, TypeAlias

from typing_extensions import Buffer

WEIGHT_BITS: Final[int]
MAX_VOCAB: Final[int]

Plan: TypeAlias = tuple[float, float, float, float, float, int, bool]
"""(temperature, top_p, repetition_penalty, presence_penalty, frequency_penalty, top_k, greedy)."""

Row: TypeAlias = tuple[Plan, bool, Buffer, Buffer, Buffer]
"""(plan, mask_active, repetition_ids, generated_ids, generated_counts)."""

def isa() -> str: ...
def select_isa(name: str | None, /) -> None: ...
def workspace_bytes(vocab: int, /) -> int: ...
def sample(
    logits: Buffer, row: Row, mask_ids: Buffer, uniform: float, workspace: Buffer, /
) -> int: ...
def sample_batch(
    logits: Buffer,
    vocab: int,
    rows: tuple[Row, ...],
    mask_ids: Buffer,
    uniforms: Buffer,
    workspace: Buffer,
    out: Buffer,
    /,
) -> None: ...
