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
from typing import Any, Final, Literal, cast

from tokenizers import Tokenizer

from imagine_edge.models.base import GenerationChunk, GenerationStats
from imagine_edge.models.chat_format import ChatMLFormat, ToolCallFilter
from imagine_edge.models.chat_gemma import GemmaFormat
from imagine_edge.models.store import Manifest
from imagine_edge.runtime.generate import (
    Delta,
    GenerationPlan,
    RunStats,
    SamplingDefaults,
    TextGenerationLoop,
)
from imagine_edge.runtime.kv_cache import Decoder, DecoderSpec
from imagine_edge.runtime.session import LoadedSession, Target, shared_factory
from imagine_edge.runtime.shared_buffer_decoder import SharedBufferDecoder
from imagine_edge.runtime.static_decoder import StaticDecoder
from imagine_edge.runtime.thread_policy import AdaptivePolicy, FixedPolicy, StepPolicy
from imagine_edge.sdk.errors import ModelRunError, ModelUnavailableError
from imagine_edge.sdk.types import ChatCompletionRequest, CompletionRequest, FinishReason

__all__ = ["SMOLLM2", "SMOLLM2_DEFAULTS", "ChatModel", "load_chat_model"]

log = logging.getLogger(__name__)

SMOLLM2: Final = "smollm2-135m-instruct"
# The model card's recommended sampling (temperature 0.2, top_p 0.9).
SMOLLM2_DEFAULTS: Final = SamplingDefaults(temperature=0.2, top_k=-1, top_p=0.9, max_tokens=256)
# Prompt tokens per forward call of the CPU graph: bounds the logits and attention scratch.
CPU_PREFILL_CHUNK: Final = 128
# How the CPU graph's intra-op workers wait between a decode step's ~700 small kernels. Spinning
# answers faster on idle cores, sleeping when other processes want them (measured on 2 cores:
# 110 against 80 tok/s idle, 54 against 74 beside one busy process). "auto" keeps one session of
# each, sharing memory-mapped pre-packed weights, and picks per step from measured step times
# (runtime/thread_policy.py). Spinning stops when a run returns ("force_spinning_stop"): the
# workers would otherwise spin through the sampling between steps (98 against 110 tok/s idle).
# A session on the factory's global thread pool keeps the pool's setting.
ThreadMode = Literal["auto", "spin", "sleep"]
SPIN_CONFIG: Final = "session.intra_op.allow_spinning"
THREAD_CONFIGS: Final[dict[str, dict[str, str]]] = {
    "sleep": {SPIN_CONFIG: "0"},
    "spin": {SPIN_CONFIG: "1", "session.force_spinning_stop": "1"},
}


class ChatModel:
    """A ChatML decoder model loaded from a prepared manifest.

    ``target`` picks the graphs: "cpu" the CPU variant (GroupQueryAttention, shared KV buffer);
    "qnn" the static QNN variant on the HTP backend, failing if it cannot run there; "auto" QNN
    when the manifest has it and every node runs there, else the CPU graph, as a logged
    decision that shows in ``execution_provider``.
    """

    def __init__(
        self,
        manifest: Manifest,
        *,
        max_length: int | None = None,
        num_slots: int = 2,
        defaults: SamplingDefaults = SMOLLM2_DEFAULTS,
        seed: int | None = None,
        target: Target = "cpu",
        threads: ThreadMode = "auto",
    ) -> None:
        self.manifest = manifest
        self.defaults = defaults
        self.seed = seed
        template = manifest.chat_template
        self.format: ChatMLFormat | GemmaFormat = (
            GemmaFormat() if GemmaFormat.matches(template) else ChatMLFormat.from_template(template)
        )
        self._sessions: list[LoadedSession] = []
        self._threads = threads
        decoder = self._open(target, max_length, num_slots)
        tokenizer = Tokenizer.from_file(str(manifest.tokenizer))
        self.loop = TextGenerationLoop(decoder, tokenizer, manifest.special_tokens.eos_token_ids)
        graphs = {f for s in self._sessions for f in _graph_files(s.path)}
        self._weights_bytes = sum(f.stat().st_size for f in graphs)
        log.info(
            "loaded %s (%s, context %d)", manifest.name, decoder.provider, decoder.spec.max_length
        )

    def _open(self, target: Target, max_length: int | None, num_slots: int) -> Decoder:
        factory = shared_factory()
        fallback = None
        if target != "cpu":
            if "qnn" in self.manifest.variants:
                try:
                    graphs = self.manifest.variant("qnn").graphs
                    prefill = factory.create(graphs["prefill"].path, target="qnn")
                    self._sessions.append(prefill)
                    decode = factory.create(graphs["decode"].path, target="qnn")
                    self._sessions.append(decode)
                    pad = self.manifest.special_tokens.pad_token_id or 0
                    return StaticDecoder(
                        prefill.session,
                        decode.session,
                        num_slots=num_slots,
                        provider=decode.describe(),
                        pad_id=pad,
                    )
                except ModelRunError as exc:
                    self.close()
                    if target == "qnn":
                        raise
                    fallback = exc.message
            elif target == "qnn":
                raise ModelUnavailableError(f"{self.manifest.name} has no prepared QNN graphs")
            else:
                fallback = "no prepared QNN graphs"
            log.warning("%s: running on the CPU EP: %s", self.manifest.name, fallback)
        graph = self.manifest.variant("cpu").graphs["decoder"].path
        first_mode = "sleep" if self._threads == "auto" else self._threads
        loaded = factory.create(
            graph, target="cpu", session_config=THREAD_CONFIGS[first_mode], prepacked=True
        )
        self._sessions.append(loaded)
        context = self.manifest.context_length
        arch = self.manifest.architecture
        spec = DecoderSpec.from_session(
            loaded.session,
            max_length=min(max_length or context, context),
            prefill_chunk=CPU_PREFILL_CHUNK,
            head_size=arch.head_dim if arch is not None else None,
        )
        provider = loaded.describe() + (f" (fallback: {fallback})" if fallback else "")
        alternates, policy = self._thread_policy(graph, loaded, first_mode)
        return SharedBufferDecoder(
            loaded.session,
            spec,
            num_slots=num_slots,
            provider=provider,
            alternates=alternates,
            policy=policy,
        )

    def _thread_policy(
        self, graph: Path, first: LoadedSession, first_mode: str
    ) -> tuple[list[Any], StepPolicy]:
        """The sessions besides ``first`` and the policy choosing between them per step."""
        factory = shared_factory()
        if self._threads != "auto":
            return [], FixedPolicy(f"workers {first_mode}")
        if factory.shared_pool:
            return [], FixedPolicy("the global thread pool's workers")
        if first.prepacked is None:
            # Without shared pre-packed weights a second session would double the memory.
            log.warning("%s: no pre-packed copy, so decode workers always sleep", graph)
            return [], FixedPolicy("workers sleep (no pre-packed copy to share)")
        spinning = factory.create(
            graph, target="cpu", session_config=THREAD_CONFIGS["spin"], prepacked=True
        )
        self._sessions.append(spinning)
        return [spinning.session], AdaptivePolicy([first_mode, "spin"])

    @property
    def execution_provider(self) -> str:
        policy = self.thread_policy
        # A comma, not a semicolon: health separates its models with semicolons.
        threads = f", decode threads: {policy.describe()}" if policy is not None else ""
        return self.loop.decoder.provider + threads

    @property
    def thread_policy(self) -> StepPolicy | None:
        """How the CPU graph's decode steps choose their session (None for the QNN graphs)."""
        decoder = self.loop.decoder
        return decoder.policy if isinstance(decoder, SharedBufferDecoder) else None

    def resident_bytes(self) -> int:
        if not self._sessions:
            return 0
        return self._weights_bytes + self.loop.decoder.resident_bytes()

    def close(self) -> None:
        if hasattr(self, "loop"):
            self.loop.decoder.close()
        for loaded in self._sessions:
            loaded.close()
        self._sessions = []

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
        prompt = request.prompt
        if isinstance(self.format, GemmaFormat):
            prompt = self.format.completion(prompt)
        yield from _chunks(self.loop.run(self.loop.encode(prompt), plan, cancel))

    def _check_open(self) -> None:
        if not self._sessions:
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


def load_chat_model(manifest: Manifest) -> ChatModel:
    """The catalog loader of ChatML LLMs: ``manifest``'s model, configured from the environment.

    ``IMAGINE_EDGE_LLM_TARGET`` = cpu (default) | qnn | auto picks the graphs: on x86-64 the HTP
    backend is a simulator hundreds of times slower than the CPU EP, so QNN is opt-in there.
    ``IMAGINE_EDGE_LLM_MAX_LENGTH`` caps the CPU graph's KV cache (default: the model's context;
    pages are touched only as positions fill). ``IMAGINE_EDGE_LLM_SPIN`` = auto (default) | 1 | 0:
    whether the CPU graph's intra-op workers spin, chosen per step from measured speed, always,
    or never (see ``THREAD_CONFIGS``).
    """
    target = os.environ.get("IMAGINE_EDGE_LLM_TARGET", "cpu")
    if target not in ("cpu", "qnn", "auto"):
        raise ValueError(f"IMAGINE_EDGE_LLM_TARGET must be cpu, qnn or auto, got {target!r}")
    raw = os.environ.get("IMAGINE_EDGE_LLM_MAX_LENGTH")
    return ChatModel(
        manifest,
        max_length=int(raw) if raw else None,
        target=cast(Target, target),
        threads=_thread_mode(os.environ.get("IMAGINE_EDGE_LLM_SPIN", "auto")),
    )


def _thread_mode(raw: str) -> ThreadMode:
    modes: dict[str, ThreadMode] = {"auto": "auto", "1": "spin", "0": "sleep"}
    if raw not in modes:
        raise ValueError(f"IMAGINE_EDGE_LLM_SPIN must be auto, 1 or 0, got {raw!r}")
    return modes[raw]
