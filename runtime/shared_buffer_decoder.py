"""The forward step of a GroupQueryAttention decoder whose past and present K/V share buffers.

The onnxruntime-genai builder's CPU graph. How the shared buffer works is in runtime/kv_cache.py;
this module binds a slot's buffers to one or more sessions of the graph and runs the step, on the
session a :class:`StepPolicy` picks (runtime/thread_policy.py).

:meth:`SharedBufferDecoder.forward_rows` runs one decode step for several slots at once: the
pool's slots are rows of one K/V array per layer (runtime/kv_cache.py, KVRows), so the rows from
the lowest to the highest slot index are bound as one batch. Each row has its own past length:
its attention-mask row has ones up to and including its new position and zeros after, so that
GroupQueryAttention (``seqlens_k`` = mask row sum - 1) writes and rotates each row's token at its
own position and attends only to that row's valid positions. A row in the range that is not
stepping (a free slot, or one between prefill chunks) gets a placeholder token at its current
length, a position that is rewritten before it is ever read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from imagine_edge.runtime.kv_cache import DecoderSpec, KVCachePool, KVRows, KVSlot
from imagine_edge.runtime.ort_names import RunConfig
from imagine_edge.runtime.thread_policy import FixedPolicy, StepPolicy
from imagine_edge.sdk.errors import ContextLengthError, ModelRunError

__all__ = ["SharedBufferDecoder", "quiet_run_options"]


@dataclass(slots=True)
class _Bound:
    """A slot's IOBinding and what is currently bound to it."""

    io: Any
    tokens_ptr: int
    # (address of the logits buffer, rows) bound as the ``logits`` output.
    logits: tuple[int, int] = (0, 0)


def quiet_run_options() -> ort.RunOptions:
    """Run options for a per-token loop.

    onnxruntime's Python ``run_with_iobinding`` looks up the WebGPU graph-capture id in the run
    options on every call; when the entry is missing the lookup raises and catches a C++
    exception, ~0.1 ms a call on a busy core. "-1" (capture off) makes it a plain read.
    """
    options = ort.RunOptions()
    options.add_run_config_entry(RunConfig.GPU_GRAPH_ID, "-1")
    return options


class SharedBufferDecoder:
    """The forward step of a GroupQueryAttention decoder with past and present sharing buffers."""

    def __init__(
        self,
        session: ort.InferenceSession,
        spec: DecoderSpec,
        *,
        num_slots: int = 2,
        provider: str = "CPUExecutionProvider",
        alternates: Sequence[ort.InferenceSession] = (),
        policy: StepPolicy | None = None,
    ) -> None:
        """``alternates``: sessions of the same graph with other thread settings; ``policy``
        picks which one runs each decode step (runtime/thread_policy.py)."""
        self._sessions: list[Any] = [session, *alternates]
        if policy is None and alternates:
            raise ValueError("alternate sessions need a policy to choose between them")
        self._policy: StepPolicy = policy or FixedPolicy("single session")
        self._spec = spec
        self._pool = KVCachePool(spec, num_slots)
        self._provider = provider
        self._run_options = quiet_run_options()
        self._mask = np.ones(spec.max_length, np.int64)
        self._mask_ptr: int = self._mask.ctypes.data
        self._positions = np.arange(spec.max_length, dtype=np.int64)
        # Batched steps: one binding per (first row, rows, session) and logits per slot row.
        self._row_bindings: dict[tuple[int, int, int], Any] = {}
        self._bound_rows: KVRows | None = None
        self._logits_rows = np.zeros((num_slots, 1, spec.vocab_size), np.float32)
        self._logits_one = np.zeros((1, 1, spec.vocab_size), np.float32)
        self._logits_one_ptr: int = self._logits_one.ctypes.data
        self._last_one: npt.NDArray[np.float32] = self._logits_one[0, 0]
        # Logits of every position of a prompt chunk, when the LM head is not pruned.
        self._logits_chunk: npt.NDArray[np.float32] | None = None

    @property
    def spec(self) -> DecoderSpec:
        return self._spec

    @property
    def pool(self) -> KVCachePool:
        return self._pool

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def policy(self) -> StepPolicy:
        return self._policy

    @property
    def sessions(self) -> tuple[ort.InferenceSession, ...]:
        """The sessions a step may run on, in the policy's arm order."""
        return tuple(self._sessions)

    def _bound(self, slot: KVSlot, arm: int) -> _Bound:
        """The slot's binding to session ``arm``, made once for the slot's lifetime."""
        if slot.binding is None:
            slot.binding = [None] * len(self._sessions)
        bound: _Bound | None = slot.binding[arm]
        if bound is None:
            bound = slot.binding[arm] = self._bind_slot(slot, self._sessions[arm], self._spec)
        return bound

    @staticmethod
    def _bind_slot(slot: KVSlot, session: Any, spec: DecoderSpec) -> _Bound:
        """Bind the slot's buffers as both past and present."""
        binding = session.io_binding()
        shape = list(slot.keys[0].shape)
        dtype = spec.kv_dtype
        for layer, (k, v) in enumerate(zip(slot.keys, slot.values, strict=True)):
            for kind, buf in (("key", k), ("value", v)):
                ptr = buf.ctypes.data
                binding.bind_input(f"past_key_values.{layer}.{kind}", "cpu", 0, dtype, shape, ptr)
                binding.bind_output(f"present.{layer}.{kind}", "cpu", 0, dtype, shape, ptr)
        return _Bound(binding, slot.tokens.ctypes.data)

    def _logits_target(self, count: int) -> tuple[npt.NDArray[np.float32], int, int]:
        """The buffer the logits of ``count`` tokens go to, its address and the rows filled."""
        if count == 1 or self._spec.last_logits_only:
            return self._logits_one, self._logits_one_ptr, 1
        chunk = self._logits_chunk
        if chunk is None or chunk.shape[1] < count:
            rows = max(count, self._spec.prefill_chunk)
            chunk = np.empty((1, rows, self._spec.vocab_size), np.float32)
            self._logits_chunk = chunk
        return chunk, chunk.ctypes.data, count

    def forward(
        self, slot: KVSlot, count: int, *, arm: int | None = None
    ) -> npt.NDArray[np.float32]:
        """Run ``count`` tokens of ``slot`` (see the Decoder protocol); ``arm`` forces the
        session (else the policy picks it, and a single-token step is measured)."""
        start = slot.length
        total = start + count
        if count < 1 or total > self._spec.max_length:
            raise ContextLengthError(
                f"cannot run {count} tokens after {start}: the KV cache holds "
                f"{self._spec.max_length} positions"
            )
        measured = arm is None and count == 1
        if arm is None:
            arm = self._policy.choose() if count == 1 else self._policy.preferred
        bound = self._bound(slot, arm)
        io = bound.io
        # Only what moves is rebound: the ids and mask views, and the logits on a shape change.
        io.bind_input("input_ids", "cpu", 0, np.int64, [1, count], bound.tokens_ptr + start * 8)
        io.bind_input("attention_mask", "cpu", 0, np.int64, [1, total], self._mask_ptr)
        if self._spec.has_position_ids:
            pos_ptr = self._positions.ctypes.data + start * 8
            io.bind_input("position_ids", "cpu", 0, np.int64, [1, count], pos_ptr)
        target, ptr, rows = self._logits_target(count)
        if bound.logits != (ptr, rows):
            io.bind_output("logits", "cpu", 0, np.float32, [1, rows, self._spec.vocab_size], ptr)
            bound.logits = (ptr, rows)
        began = time.perf_counter()
        try:
            self._sessions[arm].run_with_iobinding(io, self._run_options)
        except Exception as exc:
            raise ModelRunError(f"decoder step failed at position {start}: {exc}") from exc
        if measured:
            self._policy.record(arm, time.perf_counter() - began)
        slot.length = total
        if target is self._logits_one:
            return self._last_one
        last: npt.NDArray[np.float32] = target[0, count - 1]
        return last

    def forward_rows(
        self, slots: Sequence[KVSlot], *, arm: int = 0
    ) -> list[npt.NDArray[np.float32]]:
        """One decode step for each of ``slots``: run ``slot.tokens[slot.length]``, advance each
        slot's length, and return each one's logits (views, valid until its next step).

        On session ``arm`` (default the first: with the adaptive policy, workers that sleep)."""
        rows = self._pool.rows
        if rows is None or not slots:
            raise ValueError("forward_rows needs slots of this decoder's pool")
        stepping = {s.index: s for s in slots}
        if len(stepping) != len(slots):
            raise ValueError("a slot appears twice in one step")
        first, last = min(stepping), max(stepping)
        batch, max_length = last - first + 1, self._spec.max_length
        others = {s.index: s for s in self._pool.slots if s.index not in stepping}
        ids = np.zeros((batch, 1), np.int64)
        positions = np.empty((batch, 1), np.int64)
        for row in range(batch):
            slot = stepping.get(first + row)
            if slot is not None:
                if slot.length >= max_length:
                    raise ContextLengthError(
                        f"cannot run a token after {slot.length}: the KV cache holds "
                        f"{max_length} positions"
                    )
                ids[row, 0] = slot.tokens[slot.length]
                positions[row, 0] = slot.length
            else:
                positions[row, 0] = self._placeholder_position(others.get(first + row))
        total = int(positions.max()) + 1
        mask = (np.arange(total, dtype=np.int64) <= positions).astype(np.int64)
        io = self._row_binding(rows, first, batch, arm)
        io.bind_input("input_ids", "cpu", 0, np.int64, [batch, 1], ids.ctypes.data)
        io.bind_input("attention_mask", "cpu", 0, np.int64, [batch, total], mask.ctypes.data)
        if self._spec.has_position_ids:
            io.bind_input("position_ids", "cpu", 0, np.int64, [batch, 1], positions.ctypes.data)
        logits = self._logits_rows[first : first + batch]
        io.bind_output(
            "logits", "cpu", 0, np.float32, [batch, 1, self._spec.vocab_size], logits.ctypes.data
        )
        try:
            self._sessions[arm].run_with_iobinding(io, self._run_options)
        except Exception as exc:
            raise ModelRunError(f"batched decoder step failed: {exc}") from exc
        out = []
        for slot in slots:
            slot.length += 1
            out.append(self._logits_rows[slot.index, 0])
        return out

    def _placeholder_position(self, slot: KVSlot | None) -> int:
        """Where a row that is not stepping takes the batch's placeholder token: its length,
        which the row rewrites before reading; a full row gives up its last position."""
        if slot is None:
            return 0
        if slot.length >= self._spec.max_length:
            slot.length = self._spec.max_length - 1
            if slot.prefill_length > slot.length:
                slot.prefill_length = 0
        return slot.length

    def _row_binding(self, rows: KVRows, first: int, batch: int, arm: int) -> Any:
        """The binding of rows ``first..first+batch`` of ``rows`` as past and present."""
        key = (first, batch, arm)
        io = self._row_bindings.get(key)
        if io is not None and self._bound_rows is rows:
            return io
        if self._bound_rows is not rows:
            self._row_bindings.clear()
            self._bound_rows = rows
        io = self._sessions[arm].io_binding()
        spec = self._spec
        shape = [batch, spec.num_kv_heads, spec.max_length, spec.head_size]
        for layer, (k, v) in enumerate(zip(rows.keys, rows.values, strict=True)):
            for kind, buf in (("key", k), ("value", v)):
                ptr = buf[first:].ctypes.data
                io.bind_input(
                    f"past_key_values.{layer}.{kind}", "cpu", 0, spec.kv_dtype, shape, ptr
                )
                io.bind_output(f"present.{layer}.{kind}", "cpu", 0, spec.kv_dtype, shape, ptr)
        self._row_bindings[key] = io
        return io

    def resident_bytes(self) -> int:
        chunk = self._logits_chunk.nbytes if self._logits_chunk is not None else 0
        fixed = self._logits_one.nbytes + self._logits_rows.nbytes
        return self._pool.resident_bytes() + chunk + fixed

    def close(self) -> None:
        self._pool.clear()
        self._row_bindings.clear()
        self._bound_rows = None
        self._logits_chunk = None
        self._sessions = []
