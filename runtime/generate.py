"""The generation loop: prefill a prompt into a KV slot, then decode with the kernels' sampler.

Owns :class:`TextGenerationLoop`: tokenizer + decoder + end-of-sequence ids; its :meth:`run`
takes a request's :class:`~imagine_edge.runtime.sampling.GenerationPlan` and yields
:class:`~imagine_edge.runtime.results.GenerationChunk` text increments, ending with one that
carries the finish reason and the :class:`~imagine_edge.runtime.results.GenerationStats`.

Per token, in this order: sample (kernels pipeline, in place on the decoder's logits buffer) ->
end of sequence -> detokenize (UTF-8-safe incremental decoding: a character split across tokens
is emitted once complete, never as U+FFFD) -> stop strings (the returned text includes the stop)
-> stop token ids -> ``max_tokens`` -> the ``max_seconds`` wall-clock budget -> cancellation ->
run the token through the decoder.

Determinism: each request samples with its own ``numpy.random.Generator`` seeded with
``GenerationPlan.seed`` (the request's seed, else a fresh one: runtime/sampling.py). The same
seed and request give the same text (streaming equals non-streaming).

``max_seconds`` is a hard budget measured from the start of :meth:`run` (prefill included): the
loop checks it after every token and every prefill chunk and ends with finish_reason ``length``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from imagine_edge import kernels
from imagine_edge.runtime.kv_cache import Decoder, KVSlot
from imagine_edge.runtime.results import GenerationChunk, GenerationStats
from imagine_edge.runtime.sampling import GenerationPlan
from imagine_edge.runtime.stop import StopStringMatcher, StopTokens
from imagine_edge.sdk.errors import ContextLengthError, InvalidRequestError
from imagine_edge.sdk.types import FinishReason

if TYPE_CHECKING:  # llguidance is imported only by callers that constrain
    from imagine_edge.runtime.constraint import Constraint
    from imagine_edge.runtime.logprobs import LogprobRecorder

__all__ = ["TextGenerationLoop"]


class TextGenerationLoop:
    """Generates text for token prompts with one decoder (one model, one worker thread)."""

    def __init__(
        self, decoder: Decoder, tokenizer: Tokenizer, eos_token_ids: Sequence[int]
    ) -> None:
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        # No token stands for more characters than its vocabulary string has (byte-level BPE
        # writes one character per byte, SentencePiece one per character), so a text longer than
        # the context times this cannot fit, and is refused before the tokenizer spends seconds
        # on it (the tokenizer holds the interpreter's lock while it runs).
        self._max_token_chars = max((len(t) for t in tokenizer.get_vocab()), default=1)

    @property
    def context_length(self) -> int:
        return self.decoder.spec.max_length

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token markup (``<|im_start|>``) becomes its id.

        ContextLengthError, without tokenizing, for a text too long to fit in the context."""
        if len(text) > self.context_length * self._max_token_chars:
            raise ContextLengthError(
                f"the prompt has {len(text)} characters, more than the model's context of "
                f"{self.context_length} tokens can hold (at most {self._max_token_chars} "
                f"characters a token)"
            )
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def budget(self, prompt_tokens: int, plan: GenerationPlan) -> int:
        """The number of tokens the request may generate; ContextLengthError if none fit."""
        room = self.context_length - prompt_tokens
        if plan.max_tokens is None:
            if room < 1:
                raise ContextLengthError(
                    f"the prompt has {prompt_tokens} tokens; the model's context is "
                    f"{self.context_length} tokens, which leaves no room to generate"
                )
            return min(plan.default_max_tokens, room)
        if plan.max_tokens > room:
            raise ContextLengthError(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({plan.max_tokens}) exceeds the "
                f"model's context of {self.context_length} tokens; use max_tokens <= "
                f"{max(room, 0)} or a shorter prompt"
            )
        return plan.max_tokens

    def run(
        self,
        prompt_ids: Sequence[int] | npt.NDArray[np.int64],
        plan: GenerationPlan,
        cancel: threading.Event | None = None,
        constraint: Constraint | None = None,
        logprobs: LogprobRecorder | None = None,
    ) -> Iterator[GenerationChunk]:
        """Generate from ``prompt_ids``; see the module docstring for the order of checks.

        Returns without a final delta when ``cancel`` is set. With a ``constraint``
        (runtime/constraint.py) every token is drawn from the tokens its grammar allows, and the
        run stops ("stop") once the grammar is complete. With ``logprobs``
        (runtime/logprobs.py) each token's log-probability is recorded there.
        """
        start = time.perf_counter()
        deadline = start + plan.max_seconds if plan.max_seconds is not None else math.inf
        prompt = np.asarray(prompt_ids, dtype=np.int64)
        if prompt.size == 0:
            raise InvalidRequestError("the prompt is empty: it must have at least one token")
        limit = self.budget(len(prompt), plan)
        stats = GenerationStats(prompt_tokens=len(prompt))
        with self.decoder.pool.lease(prompt) as (slot, cached):
            stats.cached_prompt_tokens = cached
            logits = self._prefill(slot, prompt, cached, deadline, cancel)
            prefilled = time.perf_counter()
            stats.prefill_seconds = prefilled - start
            if logits is None:
                if cancel is not None and cancel.is_set():
                    return
                yield GenerationChunk("", FinishReason.length, stats)
                return
            reason = yield from self._decode(
                slot, prompt, logits, plan, limit, deadline, cancel, stats, constraint, logprobs
            )
            stats.decode_seconds = time.perf_counter() - prefilled
        if reason is not None:
            yield GenerationChunk("", reason, stats)

    def _prefill(
        self,
        slot: KVSlot,
        prompt: npt.NDArray[np.int64],
        cached: int,
        deadline: float,
        cancel: threading.Event | None,
    ) -> npt.NDArray[np.float32] | None:
        """Run the prompt's uncached tokens in chunks; None if the budget or a cancel cut it.

        Returns logits the sampler may modify in place.
        """
        if cached == len(prompt):
            return slot.prefill_logits.copy()
        slot.tokens[cached : len(prompt)] = prompt[cached:]
        chunk = self.decoder.spec.prefill_chunk
        while True:
            if (cancel is not None and cancel.is_set()) or time.perf_counter() >= deadline:
                return None
            logits = self.decoder.forward(slot, min(chunk, len(prompt) - slot.length))
            if slot.length == len(prompt):
                slot.save_prefill(logits)
                return logits

    def _decode(
        self,
        slot: KVSlot,
        prompt: npt.NDArray[np.int64],
        logits: npt.NDArray[np.float32],
        plan: GenerationPlan,
        limit: int,
        deadline: float,
        cancel: threading.Event | None,
        stats: GenerationStats,
        constraint: Constraint | None = None,
        logprobs: LogprobRecorder | None = None,
    ) -> Generator[GenerationChunk, None, FinishReason | None]:
        """The decode loop; returns the finish reason, or None when cancelled."""
        # Everything the loop touches is bound to a local: attribute lookups cost per token.
        sampling = plan.sampling
        state = kernels.SequenceState(self.decoder.spec.vocab_size, prompt)
        draw = np.random.default_rng(plan.seed).random
        stops = StopTokens.build(
            self.eos_token_ids, plan.stop_token_ids, ignore_eos=plan.ignore_eos
        )
        eos_ids, ends_turn = stops.mask_ids, stops.end_of_turn
        stop_ids, ends_with_stop_sequence = stops.stop_token_ids, stops.ends_with_stop_sequence
        matcher = StopStringMatcher(list(plan.stop)) if plan.stop else None
        detokenize = DecodeStream(skip_special_tokens=plan.skip_special_tokens).step
        tokenizer, tokens, forward = self.tokenizer, slot.tokens, self.decoder.forward
        sample, clock = kernels.sample, time.perf_counter
        cancelled = cancel.is_set if cancel is not None else _never
        generated = stats.token_ids
        reason: FinishReason
        while True:
            allowed = None if constraint is None else constraint.fill()
            if logprobs is not None:
                logprobs.observe(
                    logits, sampling, state, eos_token_ids=eos_ids, allowed_mask=allowed
                )
            token = sample(
                logits, sampling, state, draw(), eos_token_ids=eos_ids, allowed_mask=allowed
            )
            if logprobs is not None:
                logprobs.chosen(token)
            state.accept(token)
            if constraint is not None:
                constraint.consume(token)
            generated.append(token)
            stats.completion_tokens += 1
            if token in ends_turn:
                reason = FinishReason.stop
                break
            piece = detokenize(tokenizer, token)
            if piece:
                if matcher is not None:
                    piece, stopped = matcher.push(piece)
                    if piece:
                        yield GenerationChunk(piece, None, stats)
                    if stopped:
                        return FinishReason.stop
                else:
                    yield GenerationChunk(piece, None, stats)
            if (
                stop_ids
                and len(generated) >= sampling.min_tokens
                and ends_with_stop_sequence(generated)
            ):
                reason = FinishReason.stop
                break
            if constraint is not None and constraint.done:
                reason = FinishReason.stop
                break
            if len(generated) >= limit or clock() >= deadline:
                reason = FinishReason.length
                break
            if cancelled():
                return None
            tokens[slot.length] = token
            logits = forward(slot, 1)
        if matcher is not None and (rest := matcher.flush()):
            yield GenerationChunk(rest, None, stats)
        return reason


def _never() -> bool:
    return False
