"""KV-cache slots of decoder graphs, and the bound forward step that runs a graph over a slot.

Owns:
- :class:`DecoderSpec`: what the runtime needs to know about a decoder graph's inputs and outputs.
- :class:`KVSlot`: one sequence's preallocated per-layer K/V buffers ``[1, kv_heads, max_length,
  head_size]`` and the token ids whose K/V they hold.
- :class:`KVRows`: the K/V buffers of all of a pool's slots as rows of one array per layer
  ``[num_slots, kv_heads, max_length, head_size]``, so that a batched step can bind a range of
  slots as one batch (runtime/step_batcher.py); a slot's buffers are views of its row.
- :class:`KVCachePool`: a few slots per model handed to requests, reusing the slot whose tokens
  are the longest prefix of the new prompt (the next turn of a chat), otherwise the least
  recently used one.
- :class:`Decoder`: what a forward step over a slot provides; the shared-buffer one for
  ``GroupQueryAttention`` graphs is in runtime/shared_buffer_decoder.py, the static one for QNN
  graphs in runtime/static_decoder.py.

How the shared buffer works (as onnxruntime-genai binds ``past_present_share_buffer``):
``past_key_values.N.*`` and ``present.N.*`` are bound, once per slot, to the same full-length
buffer. GroupQueryAttention reads the valid length from the attention mask (``seqlens_k =
sum(mask) - 1``, ``total_sequence_length`` = mask width), writes the new positions in place and
attends only to the valid ones. A step copies no K/V, and rewinding a slot to a shorter prefix
is just setting its length. Graphs with static shapes (QNN) instead emit only the new K/V, which
the host writes into the slot with :meth:`KVSlot.write`.

Invariants:
- ``slot.tokens[:slot.length]`` are exactly the tokens whose K/V are in the slot's buffers, and
  ``slot.prefill_logits`` are the logits after ``tokens[:prefill_length]`` when that is > 0.
- A request whose prompt is exactly a slot's last prefilled prompt runs no token at all and
  samples from the kept logits: repeating a request gives bit-identical numbers. A partly reused
  prompt runs its new tokens against cached K/V; its logits may differ from a cold run's in the
  last bits (different kernel shapes), as with any prefix cache.
- A slot is leased to at most one request at a time; a released slot keeps its contents, so a
  later request can reuse them.
- Buffers are anonymous memory maps (:func:`lazy_zeros`): memory is touched only as positions
  fill. (``np.zeros`` is not enough: when malloc serves it from recycled heap memory, calloc
  writes every page, and an 8,192-position slot of SmolLM2 was 396 MiB resident after 12 tokens.)
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from imagine_edge.runtime.decoder_spec import DecoderSpec, lazy_zeros
from imagine_edge.sdk.errors import ImagineAPITooManyRequestsException

__all__ = [
    "Decoder",
    "DecoderSpec",
    "KVCachePool",
    "KVRows",
    "KVSlot",
    "SlotUsage",
    "lazy_zeros",
    "reusable_prefix",
]


class KVRows:
    """Per-layer K/V arrays ``[rows, kv_heads, max_length, head_size]``, one row per slot."""

    def __init__(self, spec: DecoderSpec, rows: int) -> None:
        shape = (rows, spec.num_kv_heads, spec.max_length, spec.head_size)
        self.rows = rows
        self.keys = [lazy_zeros(shape, spec.kv_dtype) for _ in range(spec.num_layers)]
        self.values = [lazy_zeros(shape, spec.kv_dtype) for _ in range(spec.num_layers)]


class KVSlot:
    """One sequence's K/V buffers and the tokens they hold.

    With ``rows`` the buffers are row ``index`` of those arrays, else arrays of its own."""

    def __init__(self, index: int, spec: DecoderSpec, rows: KVRows | None = None) -> None:
        self.index = index
        if rows is None:
            rows, row = KVRows(spec, 1), 0
        else:
            row = index
        self.keys = [k[row : row + 1] for k in rows.keys]
        self.values = [v[row : row + 1] for v in rows.values]
        self.tokens = np.zeros(spec.max_length, np.int64)
        self.length = 0
        self.last_used = 0
        self.leased = False
        # The logits at the end of the last prefill (position ``prefill_length - 1``), so that
        # a repeated prompt skips even its last token and samples from the very same numbers.
        self.prefill_logits = np.zeros(spec.vocab_size, np.float32)
        self.prefill_length = 0
        self.high_water = 0
        # The decoder's per-slot state (an IOBinding for the shared-buffer decoder).
        self.binding: Any = None

    @property
    def nbytes(self) -> int:
        """Bytes allocated (virtual: the zeroed pages are mapped as positions fill)."""
        arrays = itertools.chain(self.keys, self.values, (self.tokens, self.prefill_logits))
        return sum(a.nbytes for a in arrays)

    @property
    def touched_bytes(self) -> int:
        """Bytes of the positions ever filled: what the slot holds in memory."""
        per_position = sum(a.nbytes for a in itertools.chain(self.keys, self.values))
        per_position //= max(1, self.tokens.size)
        fixed = self.tokens.nbytes + self.prefill_logits.nbytes
        return fixed + per_position * max(self.high_water, self.length)

    def reusable(self, prompt: npt.NDArray[np.int64]) -> int:
        """How many leading tokens of ``prompt`` this slot can serve (see reusable_prefix)."""
        n = len(prompt)
        if self.prefill_length == n <= self.length and np.array_equal(self.tokens[:n], prompt):
            return n
        return reusable_prefix(self.tokens[: self.length], prompt)

    def reusable_running(self, prompt: npt.NDArray[np.int64]) -> int:
        """How many leading tokens of ``prompt`` this slot's computed positions hold (at most
        ``len(prompt) - 1``: the last prompt token is always run)."""
        return reusable_prefix(self.tokens[: self.length], prompt)

    def copy_prefix(self, donor: KVSlot, n: int, start: int = 0) -> None:
        """Make this slot hold ``donor``'s first ``n`` positions (tokens and K/V), copying those
        from ``start`` on (the ones before are already the same)."""
        for mine, theirs in zip(self.keys + self.values, donor.keys + donor.values, strict=True):
            mine[:, :, start:n, :] = theirs[:, :, start:n, :]
        self.tokens[start:n] = donor.tokens[start:n]
        self.length = n
        if self.prefill_length > start:
            self.prefill_length = 0
        self.high_water = max(self.high_water, n)

    def save_prefill(self, logits: npt.NDArray[np.float32]) -> None:
        """Keep the logits that end the prefill of ``tokens[:length]``."""
        np.copyto(self.prefill_logits, logits)
        self.prefill_length = self.length

    def write(
        self,
        layer: int,
        start: int,
        key: npt.NDArray[np.floating[Any]],
        value: npt.NDArray[np.floating[Any]],
    ) -> None:
        """Copy new K/V ``[1, kv_heads, n, head_size]`` into positions ``start..start+n``."""
        n = key.shape[2]
        self.keys[layer][:, :, start : start + n, :] = key
        self.values[layer][:, :, start : start + n, :] = value


def reusable_prefix(cached: npt.NDArray[np.int64], prompt: npt.NDArray[np.int64]) -> int:
    """How many leading prompt tokens can be served from ``cached``.

    At most ``len(prompt) - 1``: the last prompt token is run, since its logits give the first
    generated token (unless the slot kept them: :meth:`KVSlot.reusable`).
    """
    n = min(len(cached), len(prompt) - 1)
    if n <= 0:
        return 0
    differ = np.flatnonzero(cached[:n] != prompt[:n])
    return int(differ[0]) if differ.size else n


@dataclass(frozen=True, slots=True)
class SlotUsage:
    """A pool's slots at one instant: leased to a running sequence, allocated, the limit."""

    leased: int
    allocated: int
    total: int
    resident_bytes: int


class KVCachePool:
    """A few KV slots of one model, leased to requests with prefix reuse and LRU eviction."""

    def __init__(self, spec: DecoderSpec, num_slots: int = 2) -> None:
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}")
        self.spec = spec
        self.num_slots = num_slots
        self._slots: list[KVSlot] = []
        self._rows: KVRows | None = None
        self._clock = itertools.count(1)
        self._lock = threading.Lock()
        # Called (outside the pool's lock) after a lease begins or ends: the step batcher counts
        # the sequences it may wait for.
        self.on_lease_change: Callable[[], None] | None = None

    @property
    def rows(self) -> KVRows | None:
        """The slots' K/V rows (None until the first slot is made)."""
        return self._rows

    @property
    def slots(self) -> tuple[KVSlot, ...]:
        return tuple(self._slots)

    def _choose(self, prompt: npt.NDArray[np.int64]) -> tuple[KVSlot, int]:
        free = [s for s in self._slots if not s.leased]
        scored = [(s.reusable(prompt), s) for s in free]
        best = max(scored, key=lambda t: (t[0], t[1].last_used), default=None)
        # A running sequence's prompt positions never change while it runs: a new request that
        # shares more of its prompt with one (n choices of one request, apps with one system
        # prompt) copies those positions instead of computing them again.
        donors = [(s.reusable_running(prompt), s) for s in self._slots if s.leased]
        donor = max(donors, key=lambda t: t[0], default=(0, None))
        if best is not None and best[0] > 0 and best[0] >= donor[0]:
            return best[1], best[0]
        if best is not None and best[0] > 0:
            slot = best[1]
        elif len(self._slots) < self.num_slots:
            if self._rows is None:
                self._rows = KVRows(self.spec, self.num_slots)
            used = {s.index for s in self._slots}
            index = min(i for i in range(self.num_slots) if i not in used)
            slot = KVSlot(index, self.spec, self._rows)
            self._slots.append(slot)
        elif not free:
            raise ImagineAPITooManyRequestsException(
                f"all {self.num_slots} KV-cache slots are busy; retry shortly"
            )
        else:
            slot = min(free, key=lambda s: s.last_used)
        if donor[1] is not None and donor[0] > 0:
            slot.copy_prefix(donor[1], donor[0])
            return slot, donor[0]
        return slot, 0

    def acquire(self, prompt: npt.NDArray[np.int64]) -> tuple[KVSlot, int]:
        """Lease a slot for ``prompt``; returns it and the number of prompt tokens it already
        holds. The slot is rewound to those tokens; the caller runs the rest. When that number
        is the whole prompt, ``slot.prefill_logits`` are the logits to sample from."""
        with self._lock:
            slot, reused = self._choose(prompt)
            slot.leased = True
            slot.length = reused
            if reused < slot.prefill_length:
                slot.prefill_length = 0  # the kept logits belong to positions being rewritten
            slot.last_used = next(self._clock)
        if self.on_lease_change is not None:
            self.on_lease_change()
        return slot, reused

    def release(self, slot: KVSlot) -> None:
        with self._lock:
            slot.high_water = max(slot.high_water, slot.length)
            slot.leased = False
            slot.last_used = next(self._clock)
        if self.on_lease_change is not None:
            self.on_lease_change()

    def extend_from_running(self, slot: KVSlot, upto: int) -> int:
        """Copy into leased ``slot`` the positions from its length up to ``upto`` that another
        running sequence has computed for the same tokens (``slot.tokens[:upto]`` are the
        caller's prompt); returns how many were copied."""
        with self._lock:
            start = slot.length
            want = slot.tokens[:upto]
            best, donor = start, None
            for other in self._slots:
                if other is slot or not other.leased or other.length <= best:
                    continue
                n = min(other.length, upto)
                if not np.array_equal(other.tokens[:start], want[:start]):
                    continue
                differ = np.flatnonzero(other.tokens[start:n] != want[start:n])
                n = start + int(differ[0]) if differ.size else n
                if n > best:
                    best, donor = n, other
            if donor is None:
                return 0
            slot.copy_prefix(donor, best, start)
            return best - start

    @property
    def leased(self) -> int:
        """How many slots are leased to a running sequence now."""
        with self._lock:
            return sum(1 for s in self._slots if s.leased)

    @contextmanager
    def lease(self, prompt: npt.NDArray[np.int64]) -> Iterator[tuple[KVSlot, int]]:
        # A failed or cancelled run keeps what it computed: ``forward`` advances
        # ``slot.length`` only after a successful step, and positions past it are rewritten.
        slot, reused = self.acquire(prompt)
        try:
            yield slot, reused
        finally:
            self.release(slot)

    def resident_bytes(self) -> int:
        """Memory the slots hold: the positions they ever filled (see KVSlot.touched_bytes)."""
        return sum(s.touched_bytes for s in self._slots)

    def usage(self) -> SlotUsage:
        """How many slots run a sequence now, how many exist and may exist, and their memory."""
        with self._lock:
            slots = list(self._slots)
        leased = sum(1 for s in slots if s.leased)
        memory = sum(s.touched_bytes for s in slots)
        return SlotUsage(leased, len(slots), self.num_slots, memory)

    def forget(self) -> None:
        """Drop what the free slots hold (keeping their buffers): no prefix is reused after."""
        with self._lock:
            for slot in self._slots:
                if not slot.leased:
                    slot.length = slot.prefill_length = 0

    def clear(self) -> None:
        """Drop the free slots; their memory goes back when no slot is left."""
        with self._lock:
            self._slots = [s for s in self._slots if s.leased]
            if not self._slots:
                self._rows = None


class Decoder(Protocol):
    """A decoder graph bound to KV slots: what the generation loop drives."""

    @property
    def spec(self) -> DecoderSpec: ...

    @property
    def pool(self) -> KVCachePool: ...

    @property
    def provider(self) -> str: ...

    def forward(self, slot: KVSlot, count: int) -> npt.NDArray[np.float32]:
        """Run ``slot.tokens[slot.length : slot.length + count]``, advance ``slot.length`` and
        return the logits of the last position (a view, valid until the next call)."""
        ...

    def resident_bytes(self) -> int: ...

    def close(self) -> None: ...
