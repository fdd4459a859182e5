"""Opening an LLM's decoder: its prepared graphs and a target in, a :class:`Decoder` out.

Owns the one way a decoder model is put on a target (runtime/targets.py): "cpu" opens the CPU
graph (GroupQueryAttention, shared KV buffer: runtime/shared_buffer_decoder.py); "qnn" the static
prefill/decode pair on the HTP (runtime/static_decoder.py), failing if QNN cannot run it; "auto"
the pair when it is prepared and every node runs on QNN, else the CPU graph, with the reason in
the decoder's ``provider``. It also owns the CPU graph's thread policy:

How the CPU graph's intra-op workers wait between a decode step's ~700 small kernels. Spinning
answers faster on idle cores, sleeping when other processes want them (measured on 2 cores: 110
against 80 tok/s idle, 54 against 74 beside one busy process). "auto" keeps one session of each,
sharing memory-mapped pre-packed weights, and picks per step from measured step times
(runtime/thread_policy.py). Spinning stops when a run returns ("force_spinning_stop"): the
workers would otherwise spin through the sampling between steps (98 against 110 tok/s idle). A
session on the factory's global thread pool keeps the pool's setting.

With ``parallel`` > 1 the CPU graph's decoder batches the decode steps of up to that many
concurrent sequences (runtime/step_batcher.py), one KV slot each; the static QNN graphs have a
batch of one and serve one sequence at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from imagine_edge.runtime.graph_session import LoadedSession
from imagine_edge.runtime.kv_cache import Decoder, DecoderSpec
from imagine_edge.runtime.ort_names import SessionConfig
from imagine_edge.runtime.session import shared_factory
from imagine_edge.runtime.shared_buffer_decoder import SharedBufferDecoder
from imagine_edge.runtime.static_decoder import StaticDecoder
from imagine_edge.runtime.step_batcher import BatchedDecoder
from imagine_edge.runtime.targets import Target, place
from imagine_edge.runtime.thread_policy import AdaptivePolicy, FixedPolicy, StepPolicy

__all__ = [
    "CPU_PREFILL_CHUNK",
    "THREAD_CONFIGS",
    "DecoderGraphs",
    "OpenDecoder",
    "ThreadMode",
    "open_decoder",
]

log = logging.getLogger(__name__)

# Prompt tokens per forward call of the CPU graph: bounds the logits and attention scratch.
CPU_PREFILL_CHUNK: Final = 128
ThreadMode = Literal["auto", "spin", "sleep"]
THREAD_CONFIGS: Final[dict[str, dict[str, str]]] = {
    "sleep": {SessionConfig.ALLOW_SPINNING: "0"},
    "spin": {SessionConfig.ALLOW_SPINNING: "1", SessionConfig.FORCE_SPINNING_STOP: "1"},
}


@dataclass(frozen=True, slots=True)
class DecoderGraphs:
    """The prepared graphs of one decoder model, and the facts opening them needs."""

    name: str
    # The CPU variant's builder graph.
    cpu: Path
    # The QNN variant's static (prefill, decode) pair; None when it is not prepared.
    qnn: tuple[Path, Path] | None
    context_length: int
    # Needed when the CPU graph leaves the head size symbolic.
    head_size: int | None = None
    # The id that pads the static graphs' unused input positions.
    pad_id: int = 0


@dataclass(slots=True)
class OpenDecoder:
    """A decoder and the sessions it runs on (closed together)."""

    decoder: Decoder
    sessions: list[LoadedSession] = field(default_factory=list)
    # Why it is not on QNN, when "auto" fell back to the CPU graph.
    fallback: str | None = None

    @property
    def provider(self) -> str:
        """Where the decoder runs, and why not on QNN when it fell back."""
        suffix = f" (fallback: {self.fallback})" if self.fallback else ""
        return self.decoder.provider + suffix

    @property
    def policy(self) -> StepPolicy | None:
        """How the CPU graph's decode steps choose their session (None for the QNN graphs)."""
        decoder = self.decoder
        if isinstance(decoder, SharedBufferDecoder | BatchedDecoder):
            return decoder.policy
        return None

    @property
    def max_sequences(self) -> int:
        """How many sequences the decoder steps at once."""
        decoder = self.decoder
        return decoder.max_sequences if isinstance(decoder, BatchedDecoder) else 1

    def graph_files(self) -> list[Path]:
        """The files of the graphs the sessions opened (each graph and its external data)."""
        return sorted({p for s in self.sessions for p in _graph_files(s.path)})

    def close(self) -> None:
        self.decoder.close()
        for loaded in self.sessions:
            loaded.close()
        self.sessions = []


def open_decoder(
    graphs: DecoderGraphs,
    target: Target,
    *,
    max_length: int | None = None,
    num_slots: int = 2,
    threads: ThreadMode = "auto",
    parallel: int = 1,
) -> OpenDecoder:
    """The decoder of ``graphs`` on ``target`` (see the module docstring).

    ``parallel``: how many sequences the CPU graph decodes together (it then has at least that
    many KV slots).

    ``max_length`` caps the CPU graph's KV cache (default and maximum: the model's context).
    Raises ModelUnavailableError for "qnn" without QNN graphs, ModelRunError when a graph
    cannot be opened.
    """
    qnn: Callable[[], OpenDecoder] | None = None
    if graphs.qnn is not None:
        prefill, decode = graphs.qnn

        def qnn() -> OpenDecoder:
            return _open_static(prefill, decode, num_slots=num_slots, pad_id=graphs.pad_id)

    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")

    def cpu() -> OpenDecoder:
        opened = _open_cpu(graphs, max_length, max(num_slots, parallel), threads)
        if parallel > 1 and isinstance(opened.decoder, SharedBufferDecoder):
            opened.decoder = BatchedDecoder(opened.decoder)
        return opened

    placed = place(target, graphs.name, qnn=qnn, cpu=cpu)
    placed.value.fallback = placed.fallback
    return placed.value


def _open_static(prefill: Path, decode: Path, *, num_slots: int, pad_id: int) -> OpenDecoder:
    factory = shared_factory()
    opened: list[LoadedSession] = []
    try:
        opened.append(factory.create(prefill, target="qnn"))
        opened.append(factory.create(decode, target="qnn"))
        first, second = opened
        decoder = StaticDecoder(
            first.session,
            second.session,
            num_slots=num_slots,
            provider=second.describe(),
            pad_id=pad_id,
        )
    except BaseException:
        for loaded in opened:
            loaded.close()
        raise
    return OpenDecoder(decoder, opened)


def _open_cpu(
    graphs: DecoderGraphs, max_length: int | None, num_slots: int, threads: ThreadMode
) -> OpenDecoder:
    factory = shared_factory()
    first_mode = "sleep" if threads == "auto" else threads
    loaded = factory.create(
        graphs.cpu, target="cpu", session_config=THREAD_CONFIGS[first_mode], prepacked=True
    )
    context = graphs.context_length
    spec = DecoderSpec.from_session(
        loaded.session,
        max_length=min(max_length or context, context),
        prefill_chunk=CPU_PREFILL_CHUNK,
        head_size=graphs.head_size,
    )
    sessions = [loaded]
    alternates, policy = _thread_policy(graphs.cpu, loaded, threads, first_mode, sessions)
    decoder = SharedBufferDecoder(
        loaded.session,
        spec,
        num_slots=num_slots,
        provider=loaded.describe(),
        alternates=alternates,
        policy=policy,
    )
    return OpenDecoder(decoder, sessions)


def _thread_policy(
    graph: Path,
    first: LoadedSession,
    threads: ThreadMode,
    first_mode: str,
    sessions: list[LoadedSession],
) -> tuple[list[Any], StepPolicy]:
    """The sessions besides ``first`` (appended to ``sessions``) and the policy choosing
    between them per step."""
    factory = shared_factory()
    if threads != "auto":
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
    sessions.append(spinning)
    return [spinning.session], AdaptivePolicy([first_mode, "spin"])


def _graph_files(graph: Path) -> list[Path]:
    data = graph.with_name(graph.name + ".data")
    return [p for p in (graph, data) if p.is_file()]
