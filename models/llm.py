"""ModelType.LLM: a prepared decoder graph served as a ``TextGenerator`` (models/base.py).

Owns the request -> prompt -> chunks path of chat and completion requests: the chat format of the
model's manifest (``models/chat_format.py``), tools and tool calls, the model's sampling defaults
(its manifest's ``sampling_defaults``), and the mapping of the runtime's generation loop
(``runtime/generate.py``) onto :class:`GenerationChunk`. The runtime opens the decoder on its
target (``runtime/llm_decoder.py``); the KV cache and the decode loop are the runtime's too.

Tool calls: with ``tools`` in a chat request, text is streamed up to a ``<tool_call>`` tag and
the rest is held; at the end, parsed calls go on the final chunk with finish_reason
``tool_calls`` (text that does not parse is emitted as text instead). Streaming deltas cannot
carry tool calls in the contract (docs/contract.md, Endpoints): the final chunk carries them for the
non-streaming response.

Structured output: ``response_format`` and ``tool_choice`` become one grammar
(``models/structured.py``), compiled by the model's :class:`GrammarCache` and applied by the
generation loop as the sampler's allowed-token mask. ``logprobs`` records each token's
log-probability (``runtime/logprobs.py``); the final chunk carries them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import Final

from tokenizers import Tokenizer

from imagine_edge.models.base import GenerationChunk
from imagine_edge.models.chat_format import ChatMLFormat, ToolCallFilter, message_text
from imagine_edge.models.chat_gemma import GemmaFormat
from imagine_edge.models.chat_jinja import JinjaFormat
from imagine_edge.models.store import Manifest
from imagine_edge.models.structured import format_instruction, structured_spec
from imagine_edge.runtime.constraint import Constraint, ConstraintCompiler, GrammarCache
from imagine_edge.runtime.generate import TextGenerationLoop
from imagine_edge.runtime.kv_cache import SlotUsage
from imagine_edge.runtime.llm_decoder import DecoderGraphs, OpenDecoder, ThreadMode, open_decoder
from imagine_edge.runtime.logprobs import LogprobRecorder, choice_logprobs
from imagine_edge.runtime.sampling import GenerationPlan, SamplingDefaults
from imagine_edge.runtime.targets import Target, target_from_env
from imagine_edge.runtime.thread_policy import StepPolicy
from imagine_edge.sdk.errors import ModelUnavailableError
from imagine_edge.sdk.types import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    FinishReason,
    ModelType,
)

__all__ = [
    "DEFAULT_PARALLEL",
    "MAX_PARALLEL",
    "PARALLEL_ENV",
    "SMOLLM2",
    "SMOLLM2_DEFAULTS",
    "ChatModel",
    "chat_format_of",
    "load_chat_model",
    "model_defaults",
]

log = logging.getLogger(__name__)

SMOLLM2: Final = "smollm2-135m-instruct"
# SmolLM2's model card's recommended sampling (temperature 0.2, top_p 0.9): the defaults of a
# manifest prepared before manifests carried ``sampling_defaults`` (every LLM then had these).
SMOLLM2_DEFAULTS: Final = SamplingDefaults(temperature=0.2, top_k=-1, top_p=0.9, max_tokens=256)
# Requests decoded together by default (continuous batching), and the most allowed.
PARALLEL_ENV: Final = "IMAGINE_EDGE_LLM_PARALLEL"
DEFAULT_PARALLEL: Final = 4
MAX_PARALLEL: Final = 64


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
        defaults: SamplingDefaults | None = None,
        seed: int | None = None,
        target: Target = "cpu",
        threads: ThreadMode = "auto",
        parallel: int = 1,
    ) -> None:
        self.manifest = manifest
        self.defaults = model_defaults(manifest) if defaults is None else defaults
        self.seed = seed
        self.format = chat_format_of(manifest)
        self._opened: OpenDecoder | None = open_decoder(
            decoder_graphs(manifest),
            target,
            max_length=max_length,
            num_slots=num_slots,
            threads=threads,
            parallel=parallel,
        )
        decoder = self._opened.decoder
        tokenizer = Tokenizer.from_file(str(manifest.tokenizer))
        self.loop = TextGenerationLoop(decoder, tokenizer, manifest.special_tokens.eos_token_ids)
        eos = manifest.special_tokens.eos_token_ids
        self.grammars = GrammarCache(
            lambda: ConstraintCompiler(tokenizer, decoder.spec.vocab_size, eos[0] if eos else 0)
        )
        self._weights_bytes = sum(f.stat().st_size for f in self._opened.graph_files())
        self._provider = self._opened.provider
        self._policy = self._opened.policy
        log.info(
            "loaded %s (%s, context %d)", manifest.name, self._provider, decoder.spec.max_length
        )

    @property
    def execution_provider(self) -> str:
        policy = self.thread_policy
        # A comma, not a semicolon: health separates its models with semicolons.
        threads = f", decode threads: {policy.describe()}" if policy is not None else ""
        return self._provider + threads

    @property
    def thread_policy(self) -> StepPolicy | None:
        """How the CPU graph's decode steps choose their session (None for the QNN graphs)."""
        return self._policy

    @property
    def max_concurrent_requests(self) -> int:
        """How many requests generate together (continuous batching; 1 on the QNN graphs)."""
        return 1 if self._opened is None else self._opened.max_sequences

    def resident_bytes(self) -> int:
        if self._opened is None:
            return 0
        return self._weights_bytes + self._opened.decoder.resident_bytes()

    def kv_slots(self) -> SlotUsage:
        """The KV slots: leased to running sequences, allocated, the limit (metrics, health)."""
        return self.loop.decoder.pool.usage()

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()
            self._opened = None

    def _plan(self, request: ChatCompletionRequest | CompletionRequest) -> GenerationPlan:
        return GenerationPlan.from_params(request, self.defaults, seed=self.seed)

    def chat_prompt(self, request: ChatCompletionRequest) -> list[int]:
        """The prompt token ids of a chat request (its tools left out under tool_choice none)."""
        _, offered = structured_spec(request.response_format, request.tools, request.tool_choice)
        tools = request.tools if offered else None
        messages = request.messages
        if (instruction := format_instruction(request.response_format)) is not None:
            messages = _with_instruction(messages, instruction)
        return self.loop.encode(self.format.render(messages, tools))

    def chat_constraint(self, request: ChatCompletionRequest) -> Constraint | None:
        """The grammar state of a chat request's output (None when the output is free);
        InvalidRequestError (400) for a bad format, tool choice or schema."""
        spec, _ = structured_spec(request.response_format, request.tools, request.tool_choice)
        return None if spec is None else self.grammars.compile(spec.kind, spec.source).start()

    def _logprobs(
        self, request: ChatCompletionRequest | CompletionRequest
    ) -> LogprobRecorder | None:
        if not request.logprobs:
            return None
        return LogprobRecorder(self.loop.decoder.spec.vocab_size, request.top_logprobs or 0)

    def generate_chat(
        self, request: ChatCompletionRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        self._check_open()
        plan = self._plan(request)
        constraint = self.chat_constraint(request)
        prompt = self.chat_prompt(request)
        recorder = self._logprobs(request)
        chunks = self._with_logprobs(
            self.loop.run(prompt, plan, cancel, constraint=constraint, logprobs=recorder), recorder
        )
        _, offered = structured_spec(request.response_format, request.tools, request.tool_choice)
        if not offered:
            yield from chunks
            return
        tools = ToolCallFilter()
        for chunk in chunks:
            if chunk.finish_reason is None:
                if text := tools.push(chunk.text):
                    yield GenerationChunk(text=text, stats=chunk.stats)
                continue
            parsed = tools.finish()
            if parsed.text:
                yield GenerationChunk(text=parsed.text)
            reason = FinishReason.tool_calls if parsed.tool_calls else chunk.finish_reason
            yield GenerationChunk(
                finish_reason=reason,
                stats=chunk.stats,
                tool_calls=parsed.tool_calls or None,
                logprobs=chunk.logprobs,
            )

    def _with_logprobs(
        self, chunks: Iterator[GenerationChunk], recorder: LogprobRecorder | None
    ) -> Iterator[GenerationChunk]:
        """``chunks``, the final one carrying the recorded log-probabilities."""
        if recorder is None:
            return chunks
        tokenizer = self.loop.tokenizer

        def attach() -> Iterator[GenerationChunk]:
            for chunk in chunks:
                if chunk.finish_reason is not None:
                    chunk.logprobs = choice_logprobs(recorder.entries, tokenizer)
                yield chunk

        return attach()

    def generate_completion(
        self, request: CompletionRequest, cancel: threading.Event
    ) -> Iterator[GenerationChunk]:
        self._check_open()
        plan = self._plan(request)
        prompt = request.prompt
        if isinstance(self.format, GemmaFormat):
            prompt = self.format.completion(prompt)
        recorder = self._logprobs(request)
        run = self.loop.run(self.loop.encode(prompt), plan, cancel, logprobs=recorder)
        yield from self._with_logprobs(run, recorder)

    def _check_open(self) -> None:
        if self._opened is None:
            raise ModelUnavailableError(f"{self.manifest.name} is closed")


def _with_instruction(messages: list[ChatMessage], instruction: str) -> list[ChatMessage]:
    """``messages`` with ``instruction`` at the end of the system turn (a new one if none)."""
    if messages and messages[0].role == "system":
        system = message_text(messages[0])
        first = messages[0].model_copy(update={"content": f"{system}\n\n{instruction}"})
        return [first, *messages[1:]]
    return [ChatMessage(role="system", content=instruction), *messages]


def chat_format_of(manifest: Manifest) -> ChatMLFormat | GemmaFormat | JinjaFormat:
    """The manifest's chat format: Gemma's turns, ChatML (with our tool-call format), or, for
    any other template a user's model brings, the template itself rendered in a sandbox."""
    template = manifest.chat_template
    if GemmaFormat.matches(template):
        return GemmaFormat()
    if template is None or "<|im_start|>" in template:
        return ChatMLFormat.from_template(template)
    special = manifest.special_tokens
    text = {i: t for t, i in special.ids.items()}
    eos = special.eos_token_ids[0] if special.eos_token_ids else None
    return JinjaFormat(
        template,
        bos_token=text.get(special.bos_token_id, "") if special.bos_token_id is not None else "",
        eos_token=text.get(eos, "") if eos is not None else "",
    )


def model_defaults(manifest: Manifest) -> SamplingDefaults:
    """The model's sampling defaults: its manifest's ``sampling_defaults``. A manifest written
    before that field existed keeps the older rule, so it need not be prepared again: the
    defaults its CPU variant's options record (an onnxruntime-genai folder's ``search``
    section), else SmolLM2's recommended ones."""
    if manifest.sampling_defaults is not None:
        return manifest.sampling_defaults
    variant = manifest.variants.get("cpu")
    options = {} if variant is None else variant.options
    if "default_temperature" not in options:
        return SMOLLM2_DEFAULTS
    return SamplingDefaults(
        temperature=float(options["default_temperature"]),
        top_k=int(options.get("default_top_k", -1)),
        top_p=float(options.get("default_top_p", 1.0)),
        max_tokens=SMOLLM2_DEFAULTS.max_tokens,
    )


def decoder_graphs(manifest: Manifest) -> DecoderGraphs:
    """The runtime's description of ``manifest``'s decoder graphs (the CPU graph, and the QNN
    pair when that variant is prepared)."""
    qnn = None
    if "qnn" in manifest.variants:
        graphs = manifest.variant("qnn").graphs
        qnn = (graphs["prefill"].path, graphs["decode"].path)
    arch = manifest.architecture
    return DecoderGraphs(
        name=manifest.name,
        cpu=manifest.variant("cpu").graphs["decoder"].path,
        qnn=qnn,
        context_length=manifest.context_length,
        head_size=arch.head_dim if arch is not None else None,
        pad_id=manifest.special_tokens.pad_token_id or 0,
    )


def load_chat_model(manifest: Manifest) -> ChatModel:
    """The catalog loader of ChatML LLMs: ``manifest``'s model, configured from the environment.

    ``IMAGINE_EDGE_LLM_TARGET`` = cpu (default) | qnn | auto picks the graphs: on x86-64 the HTP
    backend is a simulator hundreds of times slower than the CPU EP, so QNN is opt-in there.
    ``IMAGINE_EDGE_LLM_MAX_LENGTH`` caps the CPU graph's KV cache (default: the model's context;
    pages are touched only as positions fill). ``IMAGINE_EDGE_LLM_SPIN`` = auto (default) | 1 | 0:
    whether the CPU graph's intra-op workers spin, chosen per step from measured speed, always,
    or never (see ``runtime/llm_decoder.py``). ``IMAGINE_EDGE_LLM_PARALLEL`` (default 4): how
    many requests decode together (continuous batching, one KV slot each; 1 turns it off).
    """
    target = target_from_env(ModelType.LLM)
    raw = os.environ.get("IMAGINE_EDGE_LLM_MAX_LENGTH")
    return ChatModel(
        manifest,
        max_length=int(raw) if raw else None,
        target=target,
        threads=_thread_mode(os.environ.get("IMAGINE_EDGE_LLM_SPIN", "auto")),
        parallel=parallel_from_env(),
    )


def parallel_from_env() -> int:
    """``IMAGINE_EDGE_LLM_PARALLEL``: sequences decoded together (default DEFAULT_PARALLEL)."""
    raw = os.environ.get(PARALLEL_ENV, "").strip()
    if not raw:
        return DEFAULT_PARALLEL
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PARALLEL:
        raise ValueError(
            f"IMAGINE_EDGE_LLM_PARALLEL must be an integer in [1, {MAX_PARALLEL}], got {raw!r}"
        )
    return int(raw)


def _thread_mode(raw: str) -> ThreadMode:
    modes: dict[str, ThreadMode] = {"auto": "auto", "1": "spin", "0": "sleep"}
    if raw not in modes:
        raise ValueError(f"IMAGINE_EDGE_LLM_SPIN must be auto, 1 or 0, got {raw!r}")
    return modes[raw]
