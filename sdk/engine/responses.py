"""Response DTOs built from model outputs.

Streaming and non-streaming text responses are both built from the same
:class:`~imagine_edge.runtime.results.GenerationChunk` s, folded by :class:`TextFold`, so a stream's
concatenated deltas always equal the non-streaming text (docs/contract.md, Endpoints).

Invariants:
- ids are '<prefix>-<uuid hex>' strings; ``created`` is epoch seconds as a float.
- Streamed ``delta.content`` is always a string; the final chunk carries ``finish_reason`` and
  ``usage``; an assistant message with tool calls has ``content`` "" and finish reason
  ``tool_calls``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal, overload

from imagine_edge.runtime.results import GenerationChunk, GenerationStats
from imagine_edge.sdk.engine.calls import Call
from imagine_edge.sdk.engine.worker import JobContext
from imagine_edge.sdk.types import (
    ChatCompletionResponse,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    ChatMessageToolCall,
    ChoiceLogprobs,
    CompletionResponse,
    CompletionResponseChoice,
    CompletionResponseStreamChoice,
    CompletionStreamResponse,
    DeltaMessage,
    FinishReason,
    Function,
    UsageInfo,
    UsageTimings,
)

__all__ = ["Head", "TextEvent", "TextFold", "new_id", "usage_timings"]

TextEvent = Callable[[str, bool, bool], Any]  # (text, first, final) -> stream event

# The stream event class, its choice class and its 'object' name, for chat and for completion.
_CHAT_STREAM: Final[tuple[Any, Any, str]] = (
    ChatCompletionStreamResponse,
    ChatCompletionResponseStreamChoice,
    "chat.completion.chunk",
)
_COMPLETION_STREAM: Final[tuple[Any, Any, str]] = (
    CompletionStreamResponse,
    CompletionResponseStreamChoice,
    "text_completion",
)


def new_id(prefix: str) -> str:
    """A fresh response id such as 'chatcmpl-<32 hex digits>'."""
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Head:
    """The fields every chunk and the final response of one request share."""

    id: str
    model: str
    created: float = field(default_factory=time.time)


@dataclass(slots=True)
class TextFold:
    """Folds generation chunks into the final text, finish reason, tool calls and stats."""

    parts: list[str] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    tool_calls: list[ChatMessageToolCall] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)
    context: JobContext | None = None  # the running job's, for the timings in usage
    seed: int | None = None  # the request's sampling seed, reported in usage
    logprobs: ChoiceLogprobs | None = None  # on the final chunk, when asked for
    _timings: UsageTimings | None = None  # fixed once the run has finished

    def add(self, chunk: GenerationChunk) -> None:
        """Take one chunk into account."""
        self.parts.append(chunk.text)
        if chunk.tool_calls:
            self.tool_calls.extend(_complete_tool_call(c) for c in chunk.tool_calls)
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
        if chunk.logprobs is not None:
            self.logprobs = chunk.logprobs
        if chunk.stats is not None:
            self.stats = chunk.stats

    def consume(
        self,
        chunks: Iterator[GenerationChunk],
        call: Call[Any, Any],
        ctx: JobContext,
        event: TextEvent | None,
    ) -> None:
        """Run a generation into this fold, emitting stream events when ``event`` is given."""
        self.context = ctx
        first = True
        try:
            for chunk in chunks:
                self.add(chunk)
                final = chunk.finish_reason is not None
                if event is not None and (chunk.text or final):
                    call.emit(event(chunk.text, first, final))
                    first = False
                if final or call.cancelled:
                    break
        finally:
            # Closing the generator at once frees the model's per-request state (KV cache).
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if event is not None and self.finish_reason is None and not call.cancelled:
            call.emit(event("", first, True))
        ctx.stats = self.stats

    @property
    def text(self) -> str:
        """The generated text so far."""
        return "".join(self.parts)

    def finish(self) -> FinishReason:
        """The finish reason to report: tool_calls whenever calls were made; stop by default."""
        if self.tool_calls:
            return FinishReason.tool_calls
        return self.finish_reason or FinishReason.stop

    def usage(self) -> UsageInfo:
        """Token counts of the generation, and its timings once it has run."""
        prompt, completion = self.stats.prompt_tokens, self.stats.completion_tokens
        timings = self._timings
        if timings is None and self.context is not None and self.context.started:
            decode = self.stats.decode_seconds
            if not decode and completion:
                # A run that ended inside its decode loop (a stop string) sets decode_seconds
                # after its last chunk: the time since prefill is the decode so far.
                run = time.monotonic() - self.context.started
                decode = max(0.0, run - self.stats.prefill_seconds)
            timings = usage_timings(self.context, self.stats.prefill_seconds, decode, completion)
            if self.finish_reason is not None:  # the last event and the response agree
                self._timings = timings
        return UsageInfo(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            timings=timings,
            seed=self.seed,
        )

    # ---------------------------------------------------------------- stream events

    @overload
    def chunk(
        self,
        head: Head,
        text: str,
        *,
        chat: Literal[True],
        first: bool,
        final: bool,
        failed: bool = False,
    ) -> ChatCompletionStreamResponse: ...
    @overload
    def chunk(
        self,
        head: Head,
        text: str,
        *,
        chat: Literal[False],
        first: bool,
        final: bool,
        failed: bool = False,
    ) -> CompletionStreamResponse: ...
    def chunk(
        self,
        head: Head,
        text: str,
        *,
        chat: bool,
        first: bool,
        final: bool,
        failed: bool = False,
    ) -> ChatCompletionStreamResponse | CompletionStreamResponse:
        """A stream event: a chat's role on the first, finish reason and usage on the final.

        Completions stream chat-style ``delta.content`` too (docs/contract.md, Endpoints).
        ``failed``
        makes the final event of a stream that broke off: finish reason 'error'.
        """
        cls, choice, name = _CHAT_STREAM if chat else _COMPLETION_STREAM
        finish = FinishReason.error if failed else self.finish() if final else None
        delta = DeltaMessage(role="assistant" if chat and first else None, content=text)
        return cls(  # type: ignore[no-any-return]
            id=head.id,
            object=name,
            created=head.created,
            model=head.model,
            choices=[choice(index=0, delta=delta, finish_reason=finish)],
            usage=self.usage() if final or failed else None,
        )

    # ---------------------------------------------------------------- final responses

    def chat_response(self, head: Head) -> ChatCompletionResponse:
        """The non-streaming chat response."""
        message = ChatMessage(
            role="assistant", content=self.text, tool_calls=self.tool_calls or None
        )
        return ChatCompletionResponse(
            id=head.id,
            object="chat.completion",
            created=head.created,
            model=head.model,
            choices=[
                ChatCompletionResponseChoice(
                    index=0, message=message, finish_reason=self.finish(), logprobs=self.logprobs
                )
            ],
            usage=self.usage(),
        )

    def completion_response(
        self,
        head: Head,
        generation_time: float,
        *,
        cls: type[CompletionResponse] = CompletionResponse,
        object_name: str = "text_completion",
    ) -> CompletionResponse:
        """The non-streaming completion (or, with ``cls``, translate) response."""
        return cls(
            id=head.id,
            object=object_name,
            created=head.created,
            model=head.model,
            choices=[
                CompletionResponseChoice(
                    index=0, text=self.text, finish_reason=self.finish(), logprobs=self.logprobs
                )
            ],
            usage=self.usage(),
            generation_time=generation_time,
        )


def usage_timings(
    ctx: JobContext, prefill_seconds: float, decode_seconds: float = 0.0, tokens: int = 0
) -> UsageTimings:
    """The timings in a response's usage (docs/server.md, Timings), in milliseconds."""
    return UsageTimings(
        queue_ms=round(ctx.queue_seconds * 1e3, 3),
        load_ms=round(ctx.load_seconds * 1e3, 3),
        prefill_ms=round(prefill_seconds * 1e3, 3),
        decode_ms=round(decode_seconds * 1e3, 3),
        tokens_per_s=round(tokens / decode_seconds, 3) if tokens and decode_seconds > 0 else None,
    )


def _complete_tool_call(call: ChatMessageToolCall) -> ChatMessageToolCall:
    """A tool call with the id and type clients rely on (LangChain needs the id)."""
    function = call.function or Function()
    return ChatMessageToolCall(
        id=call.id or f"call_{uuid.uuid4().hex[:24]}",
        type=call.type or "function",
        function=Function(name=function.name, arguments=function.arguments or "{}"),
    )
