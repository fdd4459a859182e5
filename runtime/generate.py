"""The generation loop: prefill a prompt into a KV slot, then decode with the kernels' sampler.

Owns:
- :class:`GenerationPlan`: the per-request plan built once from the contract's
  ``LLMSamplingParams`` (no pydantic on the hot path, STYLE.md P1).
- :class:`TextGenerationLoop`: tokenizer + decoder + end-of-sequence ids; its :meth:`run` yields
  :class:`Delta` text increments and ends with one carrying ``finish_reason`` and :class:`RunStats`.

Per token, in this order: sample (kernels pipeline, in place on the decoder's logits buffer) ->
end of sequence -> detokenize (UTF-8-safe incremental decoding: a character split across tokens
is emitted once complete, never as U+FFFD) -> stop strings (the returned text includes the stop)
-> stop token ids -> ``max_tokens`` -> the ``max_seconds`` wall-clock budget -> cancellation ->
run the token through the decoder.

Determinism: the contract has no seed field. Each request samples with its own
``numpy.random.Generator``, seeded with ``GenerationPlan.seed`` when the model is configured with
one, else with a hash of the prompt's token ids. The same request therefore always gives the
same text (and streaming equals non-streaming), while different prompts draw independently.

``max_seconds`` is a hard budget measured from the start of :meth:`run` (prefill included): the
loop checks it after every token and every prefill chunk and ends with finish_reason ``length``.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

from imagine_edge import kernels
from imagine_edge.runtime.kv_cache import Decoder, KVSlot
from imagine_edge.sdk.errors import ContextLengthError, InvalidRequestError
from imagine_edge.sdk.types import LLMSamplingParams

if TYPE_CHECKING:  # llguidance is imported only by callers that constrain
    from imagine_edge.runtime.constraint import Constraint

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Delta",
    "FinishReason",
    "GenerationPlan",
    "RunStats",
    "SamplingDefaults",
    "TextGenerationLoop",
]

DEFAULT_MAX_TOKENS: Final = 256

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """A model's defaults for the parameters a request leaves unset."""

    temperature: float = 0.7
    top_k: int = -1
    top_p: float = 1.0
    max_tokens: int = DEFAULT_MAX_TOKENS


@dataclass(frozen=True, slots=True)
class GenerationPlan:
    """Everything the loop needs about one request, validated and frozen."""

    sampling: kernels.SamplingConfig
    # None: the model's default, clipped to the room left in the context.
    max_tokens: int | None = None
    max_seconds: float | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[tuple[int, ...], ...] = ()
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    # None: derived from the prompt's token ids (see the module docstring).
    seed: int | None = None
    default_max_tokens: int = DEFAULT_MAX_TOKENS

    @classmethod
    def from_params(
        cls,
        params: LLMSamplingParams,
        defaults: SamplingDefaults | None = None,
        *,
        seed: int | None = None,
    ) -> GenerationPlan:
        """The plan of a contract request; unset parameters take ``defaults``."""
        d = defaults or SamplingDefaults()

        def pick(value: float | None, default: float) -> float:
            return default if value is None else value

        try:
            sampling = kernels.SamplingConfig(
                temperature=pick(params.temperature, d.temperature),
                top_k=int(pick(params.top_k, d.top_k)),
                top_p=pick(params.top_p, d.top_p),
                repetition_penalty=pick(params.repetition_penalty, 1.0),
                presence_penalty=pick(params.presence_penalty, 0.0),
                frequency_penalty=pick(params.frequency_penalty, 0.0),
                min_tokens=0,
            )
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
        return cls(
            sampling=sampling,
            max_tokens=params.max_tokens,
            max_seconds=None if params.max_seconds is None else float(params.max_seconds),
            stop=tuple(s for s in params.stop or () if s),
            stop_token_ids=tuple(tuple(s) for s in params.stop_token_ids or ()),
            ignore_eos=bool(params.ignore_eos),
            skip_special_tokens=params.skip_special_tokens is not False,
            seed=seed,
            default_max_tokens=d.max_tokens,
        )

    def seed_for(self, prompt: npt.NDArray[np.int64]) -> int:
        if self.seed is not None:
            return self.seed
        return int.from_bytes(hashlib.blake2b(prompt.tobytes(), digest_size=8).digest(), "little")


@dataclass(slots=True)
class RunStats:
    """Counts and timings of one run."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    # The generated token ids, including a final end-of-sequence token.
    token_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Delta:
    """A text increment; the last one has ``finish_reason`` and ``stats``."""

    text: str
    finish_reason: FinishReason | None = None
    stats: RunStats | None = None


class TextGenerationLoop:
    """Generates text for token prompts with one decoder (one model, one worker thread)."""

    def __init__(
        self, decoder: Decoder, tokenizer: Tokenizer, eos_token_ids: Sequence[int]
    ) -> None:
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)

    @property
    def context_length(self) -> int:
        return self.decoder.spec.max_length

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token markup (``<|im_start|>``) becomes its id."""
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
    ) -> Iterator[Delta]:
        """Generate from ``prompt_ids``; see the module docstring for the order of checks.

        Returns without a final delta when ``cancel`` is set. With a ``constraint``
        (runtime/constraint.py) every token is drawn from the tokens its grammar allows, and the
        run stops ("stop") once the grammar is complete.
        """
        start = time.perf_counter()
        deadline = start + plan.max_seconds if plan.max_seconds is not None else math.inf
        prompt = np.asarray(prompt_ids, dtype=np.int64)
        if prompt.size == 0:
            raise InvalidRequestError("the prompt is empty: it must have at least one token")
        limit = self.budget(len(prompt), plan)
        stats = RunStats(prompt_tokens=len(prompt))
        with self.decoder.pool.lease(prompt) as (slot, cached):
            stats.cached_prompt_tokens = cached
            logits = self._prefill(slot, prompt, cached, deadline, cancel)
            prefilled = time.perf_counter()
            stats.prefill_seconds = prefilled - start
            if logits is None:
                if cancel is not None and cancel.is_set():
                    return
                yield Delta("", "length", stats)
                return
            reason = yield from self._decode(
                slot, prompt, logits, plan, limit, deadline, cancel, stats, constraint
            )
            stats.decode_seconds = time.perf_counter() - prefilled
        if reason is not None:
            yield Delta("", reason, stats)

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
        stats: RunStats,
        constraint: Constraint | None = None,
    ) -> Generator[Delta, None, FinishReason | None]:
        """The decode loop; returns the finish reason, or None when cancelled."""
        # Everything the loop touches is bound to a local: attribute lookups cost per token.
        sampling = plan.sampling
        state = kernels.SequenceState(self.decoder.spec.vocab_size, prompt)
        draw = np.random.default_rng(plan.seed_for(prompt)).random
        eos_ids = self.eos_token_ids
        ends_turn = frozenset(() if plan.ignore_eos else eos_ids)
        stop_ids = plan.stop_token_ids
        matcher = kernels.StopStringMatcher(list(plan.stop)) if plan.stop else None
        detokenize = DecodeStream(skip_special_tokens=plan.skip_special_tokens).step
        tokenizer, tokens, forward = self.tokenizer, slot.tokens, self.decoder.forward
        sample, clock = kernels.sample, time.perf_counter
        cancelled = cancel.is_set if cancel is not None else _never
        generated = stats.token_ids
        reason: FinishReason
        while True:
            allowed = None if constraint is None else constraint.fill()
            token = sample(
                logits, sampling, state, draw(), eos_token_ids=eos_ids, allowed_mask=allowed
            )
            state.accept(token)
            if constraint is not None:
                constraint.consume(token)
            generated.append(token)
            stats.completion_tokens += 1
            if token in ends_turn:
                reason = "stop"
                break
            piece = detokenize(tokenizer, token)
            if piece:
                if matcher is not None:
                    piece, stopped = matcher.push(piece)
                    if piece:
                        yield Delta(piece)
                    if stopped:
                        return "stop"
                else:
                    yield Delta(piece)
            if stop_ids and kernels.ends_with_stop_ids(generated, stop_ids):
                reason = "stop"
                break
            if constraint is not None and constraint.done:
                reason = "stop"
                break
            if len(generated) >= limit or clock() >= deadline:
                reason = "length"
                break
            if cancelled():
                return None
            tokens[slot.length] = token
            logits = forward(slot, 1)
        if matcher is not None and (rest := matcher.flush()):
            yield Delta(rest)
        return reason


def _never() -> bool:
    return False
