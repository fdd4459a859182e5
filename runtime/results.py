"""What a generation produces: text chunks and, on the last chunk, its statistics.

One chunk type and one stats type from the generation loop (``runtime/generate.py``) and every
text model (LLM, translation) to the engine, which folds the chunks into responses and records
the stats as they are. The finish reason is the contract's :class:`FinishReason`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imagine_edge.sdk.types import ChatMessageToolCall, ChoiceLogprobs, FinishReason

__all__ = ["GenerationChunk", "GenerationStats"]


@dataclass(slots=True)
class GenerationStats:
    """Token counts and timings of one run (a generation, or the prompt of an embedding)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Prompt tokens served from a reused KV cache instead of being recomputed.
    cached_prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    # The generated token ids, including a final end-of-sequence token (LLM runs only).
    token_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class GenerationChunk:
    """An increment of generated text; the last one has ``finish_reason`` and ``stats``.

    Text increments carry ``stats`` too (the run's counts so far): usage then records the tokens
    of a stream its consumer dropped (sdk/engine/responses.py keeps the latest)."""

    text: str = ""
    finish_reason: FinishReason | None = None
    stats: GenerationStats | None = None
    tool_calls: list[ChatMessageToolCall] | None = None
    # Per generated token, on the final chunk, when the request asked for logprobs.
    logprobs: ChoiceLogprobs | None = None
