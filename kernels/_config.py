"""Hot-path sampling values shared by both backends: the per-request plan and per-sequence history.

Owns `SamplingConfig` (a frozen plan of validated scalars with precomputed stage flags, built once
per request; no pydantic here) and `SequenceState` (the token history the penalties read, kept
incrementally so that a penalty stage touches only tokens that occurred, never the whole
vocabulary). Also owns the argument checks both backends run before touching any buffer, so the
two backends reject exactly the same inputs with the same messages.

Invariants: a `SequenceState` stores each distinct token once (ids in ``[0, vocab_size)``), with
generation counts parallel to the distinct generated ids; vocabularies are at most 2**23 tokens so
that integer probability weights sum exactly in a float64 (see `docs/sampling.md`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "GREEDY_TEMPERATURE",
    "MAX_VOCAB_SIZE",
    "SamplingConfig",
    "SequenceState",
]

GREEDY_TEMPERATURE: Final = 1e-5
"""A temperature at or below this means greedy argmax (vLLM's `_SAMPLING_EPS`)."""

MAX_VOCAB_SIZE: Final = 1 << 23
"""Largest vocabulary: 2**23 weights of at most 2**30 sum below 2**53, exact in a float64."""

_MAX_PENALTY: Final = 2.0  # OpenAI's documented range for presence/frequency penalties.


def _check_finite(name: str, value: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class SamplingConfig:
    """Validated sampling parameters with precomputed flags (the per-request "sampler plan").

    Every field's neutral value switches its stage off. Build one per request, outside the token
    loop: validation happens here, never on the hot path.
    """

    temperature: float = 1.0
    """Divides the logits; at or below `GREEDY_TEMPERATURE` (1e-5) sampling is greedy argmax."""
    top_k: int = -1
    """Keep the k highest logits; -1 or 0 turns the stage off."""
    top_p: float = 1.0
    """Keep the smallest most-likely set with probability mass >= top_p, in (0, 1]; 1 is off."""
    repetition_penalty: float = 1.0
    """> 0; divides positive / multiplies negative logits of prompt and generated tokens."""
    presence_penalty: float = 0.0
    """In [-2, 2]; subtracted once from every token generated at least once."""
    frequency_penalty: float = 0.0
    """In [-2, 2]; subtracted once per occurrence of a generated token."""
    min_tokens: int = 0
    """>= 0; the stop ids passed to `sample` are masked until this many tokens were generated."""

    is_greedy: bool = field(init=False, repr=False, compare=False)
    has_repetition_penalty: bool = field(init=False, repr=False, compare=False)
    has_presence_frequency: bool = field(init=False, repr=False, compare=False)
    has_penalties: bool = field(init=False, repr=False, compare=False)
    has_top_k: bool = field(init=False, repr=False, compare=False)
    has_top_p: bool = field(init=False, repr=False, compare=False)
    native_plan: tuple[float, float, float, float, float, int, bool] = field(
        init=False, repr=False, compare=False
    )
    """The scalars in the order the C binding takes them (see `_native.pyi`)."""

    def __post_init__(self) -> None:
        temperature = _check_finite("temperature", self.temperature)
        if temperature < 0.0:
            raise ValueError(f"temperature must be >= 0, got {temperature!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < -1:
            raise ValueError(f"top_k must be an integer >= -1 (-1 or 0 = off), got {self.top_k!r}")
        top_p = _check_finite("top_p", self.top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        repetition = _check_finite("repetition_penalty", self.repetition_penalty)
        if repetition <= 0.0:
            raise ValueError(f"repetition_penalty must be > 0, got {repetition!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = _check_finite(name, getattr(self, name))
            if not -_MAX_PENALTY <= value <= _MAX_PENALTY:
                raise ValueError(f"{name} must be in [-2, 2], got {value!r}")
        if (
            not isinstance(self.min_tokens, int)
            or isinstance(self.min_tokens, bool)
            or self.min_tokens < 0
        ):
            raise ValueError(f"min_tokens must be an integer >= 0, got {self.min_tokens!r}")
        greedy = temperature <= GREEDY_TEMPERATURE
        has_rep = repetition != 1.0
        has_pf = self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
        derived: dict[str, object] = {
            "is_greedy": greedy,
            "has_repetition_penalty": has_rep,
            "has_presence_frequency": has_pf,
            "has_penalties": has_rep or has_pf,
            "has_top_k": self.top_k > 0,
            "has_top_p": top_p < 1.0,
            "native_plan": (
                temperature,
                top_p,
                repetition,
                float(self.presence_penalty),
                float(self.frequency_penalty),
                max(self.top_k, 0),
                greedy,
            ),
        }
        for name, flag in derived.items():
            object.__setattr__(self, name, flag)


def _as_ids(ids: Sequence[int] | npt.NDArray[np.integer], vocab_size: int, what: str) -> list[int]:
    arr = np.asarray(ids)
    if arr.size == 0:
        return []
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be a 1-D sequence of integers, got dtype {arr.dtype}")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"{what} must be token ids in [0, {vocab_size}), got {bad}")
    return [int(t) for t in np.unique(arr)]


class SequenceState:
    """One sequence's token history, updated incrementally as tokens are accepted.

    Holds the distinct ids of prompt and generated tokens (read by the repetition penalty) and the
    distinct generated ids with their counts (read by presence/frequency penalties). Memory is
    proportional to the history, not to the vocabulary; `accept` is O(1).
    """

    __slots__ = (
        "_gen_counts",
        "_gen_ids",
        "_gen_pos",
        "_n_gen",
        "_n_rep",
        "_num_generated",
        "_rep_ids",
        "_rep_seen",
        "vocab_size",
    )

    def __init__(
        self, vocab_size: int, prompt_ids: Sequence[int] | npt.NDArray[np.integer] = ()
    ) -> None:
        if not isinstance(vocab_size, int) or not 1 <= vocab_size <= MAX_VOCAB_SIZE:
            raise ValueError(
                f"vocab_size must be an integer in [1, {MAX_VOCAB_SIZE}], got {vocab_size!r}"
            )
        self.vocab_size: Final = vocab_size
        unique = _as_ids(prompt_ids, vocab_size, "prompt_ids")
        self._rep_seen: set[int] = set(unique)
        self._n_rep = len(unique)
        self._rep_ids = np.zeros(max(64, 2 * self._n_rep), dtype=np.int32)
        self._rep_ids[: self._n_rep] = unique
        self._gen_pos: dict[int, int] = {}
        self._n_gen = 0
        self._gen_ids = np.zeros(64, dtype=np.int32)
        self._gen_counts = np.zeros(64, dtype=np.int32)
        self._num_generated = 0

    @property
    def num_generated(self) -> int:
        """How many tokens were accepted (generated) so far."""
        return self._num_generated

    @property
    def repetition_ids(self) -> npt.NDArray[np.int32]:
        """Distinct ids of prompt and generated tokens (a read-only view, any order)."""
        view = self._rep_ids[: self._n_rep]
        view.flags.writeable = False
        return view

    @property
    def generated_ids(self) -> npt.NDArray[np.int32]:
        """Distinct generated ids in first-occurrence order (a read-only view)."""
        view = self._gen_ids[: self._n_gen]
        view.flags.writeable = False
        return view

    @property
    def generated_counts(self) -> npt.NDArray[np.int32]:
        """How often each of `generated_ids` was generated (a read-only view, parallel to it)."""
        view = self._gen_counts[: self._n_gen]
        view.flags.writeable = False
        return view

    def accept(self, token_id: int) -> None:
        """Record a generated token. Raises ValueError for an id outside ``[0, vocab_size)``."""
        token = int(token_id)
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"token_id must be in [0, {self.vocab_size}), got {token_id!r}")
        pos = self._gen_pos.get(token)
        if pos is None:
            if self._n_gen == self._gen_ids.shape[0]:
                self._gen_ids = np.concatenate([self._gen_ids, np.zeros_like(self._gen_ids)])
                self._gen_counts = np.concatenate(
                    [self._gen_counts, np.zeros_like(self._gen_counts)]
                )
            pos = self._n_gen
            self._gen_pos[token] = pos
            self._gen_ids[pos] = token
            self._n_gen += 1
        self._gen_counts[pos] += 1
        if token not in self._rep_seen:
            self._rep_seen.add(token)
            if self._n_rep == self._rep_ids.shape[0]:
                self._rep_ids = np.concatenate([self._rep_ids, np.zeros_like(self._rep_ids)])
            self._rep_ids[self._n_rep] = token
            self._n_rep += 1
        self._num_generated += 1

    def __repr__(self) -> str:
        return (
            f"SequenceState(vocab_size={self.vocab_size}, history={self._n_rep} distinct ids, "
            f"num_generated={self._num_generated})"
        )
