"""Sampling kernels for the LLM token loop: one call per generated token, exact and nearly free.

Stage order (pinned, vLLM's; the full spec is `docs/sampling.md`, the executable spec is
`kernels/_reference.py`):

1. allowed-token mask (constrained decoding, optional): every token the caller's bitmask leaves
   out is -inf (llguidance's layout: bit ``i % 32`` of uint32 word ``i // 32`` allows token i);
2. stop-id mask: while ``state.num_generated < config.min_tokens`` the given EOS/stop ids are -inf;
3. repetition penalty (HF/vLLM) over distinct prompt and generated ids;
4. presence/frequency penalties (OpenAI) over generated ids;
5. temperature; at or below 1e-5 the result is the argmax and stages 6-8 are skipped;
6. top-k (-1 or 0 = off); 7. top-p (1 = off); 8. the draw from the caller's uniform variate.

Ties break towards the lowest token id everywhere. Randomness is an input: each request draws
`uniform` from its own seeded ``numpy.random.Generator``, and both backends return the same token
id for the same uniform (probabilities are exact integer weights, see the docs).

Backends: "native" (the C extension `_native`, GIL released) or "reference" (numpy), chosen once
at import. ``IMAGINE_EDGE_KERNELS=reference|native|auto`` overrides the choice; when the extension
is missing, asking for native (or auto) logs one warning and falls back to the reference, and
`active_backend()` / `native_unavailable_reason()` report it (`native_isa()` names the SIMD
variant in use). Every backend exposes the same
`sample` / `sample_batch` / `process_logits` (stages 1-5 alone, the point log-probabilities are
taken from); `get_backend(name)` returns a specific one (tests run both).

Importing this package never needs the extension and imports only numpy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from types import ModuleType
from typing import Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

from imagine_edge.kernels import _reference
from imagine_edge.kernels._checks import mask_words
from imagine_edge.kernels._config import (
    GREEDY_TEMPERATURE,
    MAX_VOCAB_SIZE,
    SamplingConfig,
    SequenceState,
)

__all__ = [
    "BACKEND",
    "ENV_VAR",
    "GREEDY_TEMPERATURE",
    "MAX_VOCAB_SIZE",
    "STAGE_ORDER",
    "Backend",
    "BackendName",
    "SamplingConfig",
    "SequenceState",
    "active_backend",
    "available_backends",
    "get_backend",
    "mask_words",
    "native_isa",
    "native_unavailable_reason",
    "process_logits",
    "sample",
    "sample_batch",
]

_log = logging.getLogger(__name__)

BackendName = Literal["native", "reference"]
ENV_VAR: Final = "IMAGINE_EDGE_KERNELS"
STAGE_ORDER: Final = (
    "allowed_mask",
    "stop_mask",
    "repetition_penalty",
    "presence_frequency_penalty",
    "temperature",
    "top_k",
    "top_p",
    "draw",
)


class Backend(Protocol):
    """What each backend module provides (the signatures of `sample` and `sample_batch` below)."""

    def sample(
        self,
        logits: npt.NDArray[np.float32],
        config: SamplingConfig,
        state: SequenceState,
        uniform: float,
        *,
        eos_token_ids: Sequence[int] = (),
        allowed_mask: npt.NDArray[np.uint32] | npt.NDArray[np.int32] | None = None,
    ) -> int: ...

    def process_logits(
        self,
        logits: npt.NDArray[np.float32],
        config: SamplingConfig,
        state: SequenceState,
        *,
        eos_token_ids: Sequence[int] = (),
        allowed_mask: npt.NDArray[np.uint32] | npt.NDArray[np.int32] | None = None,
    ) -> None: ...

    def sample_batch(
        self,
        logits: npt.NDArray[np.float32],
        configs: Sequence[SamplingConfig],
        states: Sequence[SequenceState],
        uniforms: npt.NDArray[np.float64] | Sequence[float],
        *,
        eos_token_ids: Sequence[int] = (),
        allowed_masks: npt.NDArray[np.uint32] | npt.NDArray[np.int32] | None = None,
    ) -> npt.NDArray[np.int32]: ...


def _load_native() -> tuple[ModuleType | None, str | None]:
    try:
        from imagine_edge.kernels import _native_backend
    except ImportError as e:
        return None, f"the C extension is not built or failed to load ({e})"
    return _native_backend, None


_NATIVE, _NATIVE_ERROR = _load_native()


def _choose() -> BackendName:
    requested = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if requested not in ("auto", "native", "reference"):
        _log.warning("%s=%r is not auto, native or reference; using auto", ENV_VAR, requested)
        requested = "auto"
    if requested == "reference":
        return "reference"
    if _NATIVE is None:
        _log.warning(
            "native sampling kernels unavailable, using the numpy reference: %s", _NATIVE_ERROR
        )
        return "reference"
    return "native"


BACKEND: Final[BackendName] = _choose()
"""The backend `sample` and `sample_batch` use, fixed at import."""


def active_backend() -> BackendName:
    """The backend in use: "native" or "reference"."""
    return BACKEND


def native_unavailable_reason() -> str | None:
    """Why the native backend cannot load, or None when it can."""
    return _NATIVE_ERROR


def native_isa() -> str | None:
    """The instruction set the native kernels run with ("avx2", "sse2", "neon"), or None."""
    if _NATIVE is None:
        return None
    from imagine_edge.kernels import _native

    return _native.isa()


def available_backends() -> tuple[BackendName, ...]:
    """Backends that can run in this process (the reference always can)."""
    return ("reference",) if _NATIVE is None else ("native", "reference")


def get_backend(name: BackendName) -> Backend:
    """A specific backend, regardless of the active one. Raises ValueError if unavailable."""
    if name == "reference":
        return _reference
    if name == "native" and _NATIVE is not None:
        backend: Backend = _NATIVE
        return backend
    if name == "native":
        raise ValueError(f"the native backend is unavailable: {_NATIVE_ERROR}")
    raise ValueError(f"backend must be 'native' or 'reference', got {name!r}")


_ACTIVE: Final[Backend] = get_backend(BACKEND)


def sample(
    logits: npt.NDArray[np.float32],
    config: SamplingConfig,
    state: SequenceState,
    uniform: float,
    *,
    eos_token_ids: Sequence[int] = (),
    allowed_mask: npt.NDArray[np.uint32] | npt.NDArray[np.int32] | None = None,
) -> int:
    """Sample one token id from a `[V]` float32 row of logits.

    Modifies `logits` in place: afterwards it holds the masked and penalized logits and, unless
    greedy, the temperature-scaled ones with -inf at every token top-k or top-p dropped (the
    distribution actually drawn from). `uniform` in [0, 1) comes from the request's seeded
    generator; `eos_token_ids` are masked while ``state.num_generated < config.min_tokens``.
    `allowed_mask`, when given, is a C-contiguous uint32 (or int32, as llguidance allocates it)
    array of `mask_words(V)` words: bit ``i % 32`` of word ``i // 32`` allows token i, and every
    other token is -inf before any other stage (bits past V are ignored).
    Does not call `state.accept`. Raises ValueError for bad arguments, NaN or +inf logits, a mask
    that allows no token, or a row where every token is -inf (logits are then left partly
    processed).
    """
    return _ACTIVE.sample(
        logits, config, state, uniform, eos_token_ids=eos_token_ids, allowed_mask=allowed_mask
    )


def process_logits(
    logits: npt.NDArray[np.float32],
    config: SamplingConfig,
    state: SequenceState,
    *,
    eos_token_ids: Sequence[int] = (),
    allowed_mask: npt.NDArray[np.uint32] | npt.NDArray[np.int32] | None = None,
) -> None:
    """The logits `sample` would draw from before top-k and top-p, in place: stages 1-5 (the
    allowed-token mask, the stop-id mask, the penalties and, unless greedy, the temperature).

    Log-probabilities are taken from this point (runtime/logprobs.py, docs/sampling.md). Both
    backends leave bit-identical logits, and the same values `sample` has after its stage 5.
    Does not call `state.accept`; raises ValueError as `sample` does for bad arguments or a mask
    that allows no token.
    """
    _ACTIVE.process_logits(
        logits, config, state, eos_token_ids=eos_token_ids, allowed_mask=allowed_mask
    )


def sample_batch(
    logits: npt.NDArray[np.float32],
    configs: Sequence[SamplingConfig],
    states: Sequence[SequenceState],
    uniforms: npt.NDArray[np.float64] | Sequence[float],
    *,
    eos_token_ids: Sequence[int] = (),
    allowed_masks: npt.NDArray[np.uint32] | npt.NDArray[np.int32] | None = None,
) -> npt.NDArray[np.int32]:
    """`sample` for each row of `[B, V]` logits, with per-row configs, states and uniforms.

    Rows are modified in place as in `sample`; the EOS ids are shared by all rows and masked per
    row by that row's `min_tokens`. `allowed_masks` is None or a `[B, mask_words(V)]` bitmask,
    one row per logits row (a row of all ones leaves its row unconstrained). Returns int32 token
    ids of shape `[B]`. A ValueError names the failing row; earlier rows have been processed.
    """
    return _ACTIVE.sample_batch(
        logits,
        configs,
        states,
        uniforms,
        eos_token_ids=eos_token_ids,
        allowed_masks=allowed_masks,
    )
