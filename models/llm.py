"""ModelType.LLM: a prepared decoder graph served as a ``TextGenerator`` (models/base.py).

Owns the request -> prompt -> chunks path of chat and completion requests: the chat format of the
model's manifest (``models/chat_format.py``), tools and tool calls, the model's sampling defaults,
and the mapping of the runtime's generation loop (``runtime/generate.py``) onto
:class:`GenerationChunk`. Sessions come from the runtime's shared factory; the KV cache and the
decode loop are the runtime's.

Tool calls: with ``tools`` in a chat request, text is streamed up to a ``<tool_call>`` tag and
the rest is held; at the end, parsed calls go on the final chunk with finish_reason
``tool_calls`` (text that does not parse is emitted as text instead). Streaming deltas cannot
carry tool calls in the contract (CONTRACT.md §2.9): the final chunk carries them for the
non-streaming response.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from tokenizers import Tokenizer

from imagine_edge.models.base import GenerationChunk, GenerationStats
from imagine_edge.models.chat_format import ChatMLFormat, ToolCallFilter
from imagine_edge.models.store import Manifest, prepared
from imagine_edge.runtime.generate import (
    Delta,
    GenerationPlan,
    RunStats,
    SamplingDefaults,
    TextGenerationLoop,
)
from imagine_edge.runtime.kv_cache import DecoderSpec, SharedBufferDecoder
from imagine_edge.runtime.session import LoadedSession, shared_factory
from imagine_edge.sdk.errors import ModelUnavailableError
from imagine_edge.sdk.types import ChatCompletionRequest, CompletionRequest, FinishReason

__all__ = ["SMOLLM2", "SMOLLM2_DEFAULTS", "ChatModel", "load_smollm2"]

log = logging.getLogger(__name__)

SMOLLM2: Final = "smollm2-135m-instruct"
# The model card's recommended sampling (temperature 0.2, top_p 0.9).
SMOLLM2_DEFAULTS: Final = SamplingDefaults(temperature=0.2, top_k=-1, top_p=0.9, max_tokens=256)
# Prompt tokens per forward call of the CPU graph: bounds the logits and attention scratch.
CPU_PREFILL_CHUNK: Final = 128


class ChatModel:
    """A ChatML decoder model loaded from a prepared manifest (the CPU graph variant)."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        max_length: int | None = None,
        num_slots: int = 2,
        defaults: SamplingDefaults = SMOLLM2_DEFAULTS,
        seed: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.defaults = defaults
        self.seed = seed
        self.format = ChatMLFormat.from_template(manifest.chat_template)
        variant = manifest.variant("cpu")
        graph = variant.graphs["decoder"].path
        self._loaded: LoadedSession | None = shared_factory().create(graph, target="cpu")
        context = manifest.context_length
        length = min(max_length or context, context)
        arch = manifest.architecture
        spec = DecoderSpec.from_session(
            self._loaded.session,
            max_length=length,
            prefill_chunk=CPU_PREFILL_CHUNK,
            head_size=arch.head_dim if arch is not None else None,
        )
        decoder = SharedBufferDecoder(
            self._loaded.session, spec, num_slots=num_slots, provider=self._loaded.describe()
        )
        tokenizer = Tokenizer.from_file(str(manifest.tokenizer))
        self.loop = TextGenerationLoop(decoder, tokenizer, manifest.special_tokens.eos_token_ids)
        self._weights_bytes = sum(f.stat().st_size for f in _graph_files(graph))
        log.info("loaded %s (%s, context %d)", manifest.name, decoder.provider, length)

    @property
    def execution_provider(self) -> str:
        return self.loop.decoder.provider

    def resident_bytes(self) -> int:
        if self._loaded is None:
            return 0
        return self._weights_bytes + self.loop.decoder.resident_bytes()

    def close(self) -> None:
        if self._loaded is not None:
            self.loop.decoder.close()
            self._loaded.close()
            self._loaded = None

    def _plan(self, request: ChatCompletionRequest | CompletionRequest) -> GenerationPlan:
        return GenerationPlan.from_params(request, self.defaults, seed=self.seed)

    def chat_prompt(self, request: ChatCompletionRequest) -> list[int]:
        """The prompt token ids of a chat request."""
        return self.loop.encode(self.format.render(request.messages, request.tools))

    def generate_chat(
        self, request: ChatCompletionRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        self._check_open()
        plan = self._plan(request)
        deltas = self.loop.run(self.chat_prompt(request), plan, cancel)
        if not request.tools:
            yield from _chunks(deltas)
            return
        tools = ToolCallFilter()
        for delta in deltas:
            if delta.finish_reason is None:
                if text := tools.push(delta.text):
                    yield GenerationChunk(text=text)
                continue
            parsed = tools.finish()
            if parsed.text:
                yield GenerationChunk(text=parsed.text)
            reason = (
                FinishReason.tool_calls if parsed.tool_calls else FinishReason(delta.finish_reason)
            )
            yield GenerationChunk(
                finish_reason=reason,
                stats=_stats(delta.stats),
                tool_calls=parsed.tool_calls or None,
            )

    def generate_completion(
        self, request: CompletionRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        self._check_open()
        plan = self._plan(request)
        yield from _chunks(self.loop.run(self.loop.encode(request.prompt), plan, cancel))

    def _check_open(self) -> None:
        if self._loaded is None:
            raise ModelUnavailableError(f"{self.manifest.name} is closed")


def _stats(stats: RunStats | None) -> GenerationStats:
    s = stats or RunStats()
    return GenerationStats(
        prompt_tokens=s.prompt_tokens,
        completion_tokens=s.completion_tokens,
        cached_prompt_tokens=s.cached_prompt_tokens,
        prefill_seconds=s.prefill_seconds,
        decode_seconds=s.decode_seconds,
    )


def _chunks(deltas: Iterator[Delta]) -> Iterator[GenerationChunk]:
    for delta in deltas:
        if delta.finish_reason is None:
            yield GenerationChunk(text=delta.text)
        else:
            yield GenerationChunk(
                text=delta.text,
                finish_reason=FinishReason(delta.finish_reason),
                stats=_stats(delta.stats),
            )


def _graph_files(graph: Path) -> list[Path]:
    data = graph.with_name(graph.name + ".data")
    return [p for p in (graph, data) if p.is_file()]


def load_smollm2() -> ChatModel:
    """The catalog loader of SmolLM2-135M-Instruct: prepares the CPU graph if needed.

    ``IMAGINE_EDGE_LLM_MAX_LENGTH`` caps the KV cache's positions (default: the model's 8,192).
    """
    manifest = prepared(SMOLLM2, ["cpu"])
    raw = os.environ.get("IMAGINE_EDGE_LLM_MAX_LENGTH")
    return ChatModel(manifest, max_length=int(raw) if raw else None)
