"""Continuous batching: the decode steps of concurrent sequences run as one graph step.

:class:`BatchedDecoder` is a :class:`~imagine_edge.runtime.kv_cache.Decoder` that several
generation loops (runtime/generate.py), each on its own thread, drive at once. Each loop calls
``forward`` as it would alone; the call waits until every sequence that holds a KV slot has asked
for its next step (a sequence between steps is only sampling, well under a millisecond), then the
last one to ask runs the whole step on its own thread and hands every waiter its logits:

1. the waiting decode tokens, one per sequence, as one batch
   (:meth:`SharedBufferDecoder.forward_rows`), or as the single-sequence step when alone, so a
   lone stream runs exactly as it would without batching;
2. then the waiting prompts, in arrival order: while other sequences decode they share a budget
   of ``prefill_while_decoding`` tokens per step, so a new request's prompt stalls the running
   streams for about one budget's time per step instead of its whole length (the loop asks for
   the rest: it computes each chunk from ``slot.length``); with nothing decoding, each runs
   whole. Positions of a prompt that another running sequence has already computed for the same
   tokens are copied from its slot instead (KVCachePool.extend_from_running): the n choices of
   one request, or apps sharing a system prompt, prefill it once.

Every waiter is woken as soon as its own logits are ready: the decoders sample and stream while
the prompts run, and a prompt's first token does not wait for the prompts behind it.

Sequences join and leave between steps: a finished, failed or cancelled sequence releases its
slot, and the pool's lease callback wakes the waiters, who no longer wait for it. Each sequence
keeps its own sampler state, seed, stops and limits in its own loop; only the graph step is
shared. A batched step computes each row's logits with the batch's kernel shapes, so they may
differ from a lone step's in the last bits (docs/batching.md says what this changes).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from imagine_edge.runtime.kv_cache import DecoderSpec, KVCachePool, KVSlot
from imagine_edge.runtime.shared_buffer_decoder import SharedBufferDecoder
from imagine_edge.runtime.thread_policy import StepPolicy

__all__ = ["PREFILL_WHILE_DECODING", "SHARED_ARM", "BatchedDecoder", "StepCounts"]

# Prompt tokens per step while other sequences decode (shared by the waiting prompts): a whole
# 128-token prompt, so its first token comes after one step. On SmolLM2 (2 AVX2 cores) that chunk
# takes ~230 ms, about 13 four-sequence decode steps, once per new request; 32-token chunks paused
# the streams less each time but gave four prompts arriving together a median first token of
# 0.95 s in process, against 0.57 s.
PREFILL_WHILE_DECODING: Final = 128
# The session of the steps several sequences share: the first, whose intra-op workers sleep
# under the adaptive thread policy. Workers that spin through a step hold both cores while the
# other sequences' threads want them (sampling, detokenizing, streaming): measured on 2 cores,
# four streams decoded 58 tok/s in aggregate on spinning workers and 105 on sleeping ones.
SHARED_ARM: Final = 0


@dataclass(eq=False, slots=True)
class _Request:
    slot: KVSlot
    count: int
    logits: npt.NDArray[np.float32] | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(slots=True)
class StepCounts:
    """What the batcher has run: steps by batch size, and prompt chunks."""

    by_batch_size: dict[int, int] = field(default_factory=dict)
    prefill_chunks: int = 0
    # Prompt positions copied from a running sequence's slot instead of being run.
    copied_positions: int = 0

    @property
    def decode_steps(self) -> int:
        return sum(self.by_batch_size.values())

    @property
    def batched_tokens(self) -> int:
        return sum(size * n for size, n in self.by_batch_size.items())


class BatchedDecoder:
    """A shared-buffer decoder whose decode steps are batched across concurrent sequences."""

    def __init__(
        self,
        decoder: SharedBufferDecoder,
        *,
        prefill_while_decoding: int = PREFILL_WHILE_DECODING,
    ) -> None:
        if prefill_while_decoding < 1:
            raise ValueError("prefill_while_decoding must be >= 1")
        self._decoder = decoder
        self._prefill_while_decoding = prefill_while_decoding
        self._cond = threading.Condition()
        self._waiting: list[_Request] = []
        self._stepping = False
        self._counts = StepCounts()
        decoder.pool.on_lease_change = self._wake

    # The Decoder protocol.
    @property
    def spec(self) -> DecoderSpec:
        return self._decoder.spec

    @property
    def pool(self) -> KVCachePool:
        return self._decoder.pool

    @property
    def provider(self) -> str:
        return self._decoder.provider

    @property
    def policy(self) -> StepPolicy:
        return self._decoder.policy

    @property
    def inner(self) -> SharedBufferDecoder:
        return self._decoder

    @property
    def max_sequences(self) -> int:
        return self._decoder.pool.num_slots

    def counts(self) -> StepCounts:
        """A copy of the step counts so far."""
        with self._cond:
            counts = self._counts
            return StepCounts(
                dict(counts.by_batch_size), counts.prefill_chunks, counts.copied_positions
            )

    def forward(self, slot: KVSlot, count: int) -> npt.NDArray[np.float32]:
        request = _Request(slot, count)
        with self._cond:
            self._waiting.append(request)
            while not request.done:
                if not self._stepping and len(self._waiting) >= self.pool.leased:
                    self._lead()
                else:
                    self._cond.wait()
        if request.error is not None:
            raise request.error
        assert request.logits is not None
        return request.logits

    def _lead(self) -> None:
        """Run the step for everyone waiting; called, and returns, with the lock held."""
        batch, self._waiting = self._waiting, []
        self._stepping = True
        self._cond.release()
        try:
            leftover = self._step(batch)
        finally:
            self._cond.acquire()
            self._stepping = False
            self._waiting[:0] = leftover  # prompts keep their turn
            self._cond.notify_all()

    def _step(self, batch: list[_Request]) -> list[_Request]:
        """Run ``batch``'s decodes, then its prompts within the step's budget; returns the
        prompts left for the next step.

        Each request is woken as soon as its own logits are ready, so the decoders sample
        (and stream) while the prompt chunks run, and a prompt's first token does not wait
        for the prompts behind it."""
        decodes = [r for r in batch if r.count == 1]
        prompts = [r for r in batch if r.count > 1]
        if decodes:
            self._run_decodes(decodes, alone=not prompts)
            self._wake()
        # While sequences decode, prompts share a token budget per step, so the streams pause
        # for about one budget's time; with nothing decoding, each waiting prompt runs whole.
        budget = self._prefill_while_decoding if decodes else None
        left: list[_Request] = []
        for request in prompts:
            if budget is not None and budget < 1:
                left.append(request)
                continue
            # What a running sequence already computed of this prompt is copied, not run again
            # (n choices of one request, apps with one system prompt); the chunk's last token
            # always runs, since its logits are the chunk's result.
            slot = request.slot
            copied = self.pool.extend_from_running(slot, slot.length + request.count - 1)
            count = request.count - copied
            if budget is not None:
                count = min(count, budget)
                budget -= count
            self._finish(request, count, shared=len(batch) > 1)
            if request.logits is not None:
                # The next prompt's chunk writes the same logits buffer while this one samples.
                request.logits = request.logits.copy()
            with self._cond:
                self._counts.prefill_chunks += 1
                self._counts.copied_positions += copied
                self._cond.notify_all()
        return left

    def _wake(self) -> None:
        """Wake the waiters: some have their logits, or the leases changed (the pool's
        callback), so who the step waits for changed."""
        with self._cond:
            self._cond.notify_all()

    def _run_decodes(self, decodes: Sequence[_Request], *, alone: bool) -> None:
        """One step of every decode; ``alone``: no prompt chunk follows in this step.

        A lone decode takes the single-sequence path (its logits buffer is the one a prompt
        chunk also writes, hence only when none follows)."""
        with self._cond:
            sizes = self._counts.by_batch_size
            sizes[len(decodes)] = sizes.get(len(decodes), 0) + 1
        if len(decodes) == 1 and alone:
            only = decodes[0]
            self._finish(only, 1, shared=False)
            return
        try:
            rows = self._decoder.forward_rows([r.slot for r in decodes], arm=SHARED_ARM)
        except BaseException as exc:
            for r in decodes:
                r.error, r.done = exc, True
            return
        for r, logits in zip(decodes, rows, strict=True):
            r.logits, r.done = logits, True

    def _finish(self, request: _Request, count: int, *, shared: bool) -> None:
        """Run ``count`` of the request's tokens on its own; ``shared``: other sequences run
        beside it, so on the sleeping workers' session (see the module docstring)."""
        try:
            arm = SHARED_ARM if shared else None
            request.logits = self._decoder.forward(request.slot, count, arm=arm)
        except BaseException as exc:
            request.error = exc
        request.done = True

    def resident_bytes(self) -> int:
        return self._decoder.resident_bytes()

    def close(self) -> None:
        self._decoder.pool.on_lease_change = None
        self._decoder.close()
