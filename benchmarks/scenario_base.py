"""What every benchmark scenario shares: :class:`BenchConfig`, :class:`Point`, the texts they
send (deterministic English, no data set) and the timing of a point's calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from imagine_edge.benchmarks.stats import summarize
from imagine_edge.sdk.types import ModelType

__all__ = [
    "BenchConfig",
    "Point",
    "Progress",
    "Scenario",
    "latency_of",
    "prompt_of",
    "sample_metrics",
    "sentences",
    "timed_calls",
]

# Realistic English for prompts and sentences: deterministic, no data set needed.
_TEXT = (
    "The river town woke slowly under a low grey sky. Fishermen carried their nets down to the "
    "water while the baker opened his shutters and the smell of bread drifted across the square. "
    "Children ran past the old church, late for school again, and an elderly woman scolded them "
    "from her window. At the harbour a cargo ship was unloading crates of oranges, timber and "
    "machine parts, and the dock workers argued about the weather, the price of fuel and the "
    "football match of the previous night. By noon the clouds had lifted, the market was full, "
    "and the town hall clock, which had been five minutes slow for as long as anyone could "
    "remember, struck twelve while the mayor was still reading his speech about the new bridge."
)
_WORDS = _TEXT.split()


def prompt_of(tokens: int, variant: int = 0) -> str:
    """About ``tokens`` tokens of English (about 1.3 BPE tokens per word).

    Each ``variant`` starts at another word, so repeated requests do not share a prefix that a
    KV cache could reuse: TTFT then measures a real prefill.
    """
    words = max(1, int(tokens / 1.3))
    return " ".join(_WORDS[(variant * 7 + i) % len(_WORDS)] for i in range(words))


def sentences(count: int, low: int = 10, high: int = 40) -> list[str]:
    """``count`` distinct sentences of ``low`` to ``high`` words, deterministically."""
    out = []
    for i in range(count):
        length = low + (i * 7) % (high - low + 1)
        start = (i * 13) % len(_WORDS)
        out.append(" ".join(_WORDS[(start + j) % len(_WORDS)] for j in range(length)))
    return out


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What to measure and for how long; ``smoke`` shrinks everything to seconds."""

    # Measured seconds of the whole run, shared by every point of every scenario and peer
    # (``--duration``); the CLI hands each scenario ``point_seconds``, its point's share.
    duration: float = 120.0
    point_seconds: float = 10.0
    warmup: int = 2  # calls excluded from the samples, before a scenario's first point
    llm_prompt_lengths: tuple[int, ...] = (32, 128, 512)
    llm_max_tokens: int = 128
    llm_concurrency: tuple[int, ...] = (1, 2, 4, 8)
    llm_multi_prompt_tokens: int = 128  # the multi-client scenario's prompt (over HTTP)
    embedding_batch_sizes: tuple[int, ...] = (1, 8, 32)
    # Concurrent clients sending one sentence per request (gathered by the server's batching).
    embedding_clients: tuple[int, ...] = (16,)
    reranker_documents: tuple[int, ...] = (10, 50, 100)
    image_size: str = "64x64"
    image_steps: int = 4
    audio_file: str | None = None

    @classmethod
    def smoke(cls) -> BenchConfig:
        return cls(
            duration=4.0,
            point_seconds=0.2,
            warmup=1,
            llm_prompt_lengths=(32,),
            llm_max_tokens=8,
            llm_concurrency=(1, 2),
            embedding_batch_sizes=(1, 4),
            embedding_clients=(4,),
            reranker_documents=(10,),
            image_steps=1,
        )


@dataclass(slots=True)
class Point:
    """One measured configuration of a scenario."""

    label: str
    params: dict[str, Any]
    metrics: dict[str, dict[str, float | int]] = field(default_factory=dict)
    throughput: dict[str, float] = field(default_factory=dict)
    errors: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "params": self.params,
            "metrics": self.metrics,
            "throughput": self.throughput,
            "errors": self.errors,
        }


def timed_calls(
    call: Callable[[], float | dict[str, float]],
    config: BenchConfig,
    progress: Progress,
) -> tuple[list[dict[str, float]], float]:
    """Warm up, then call until the point's seconds have passed (at least once).

    ``call`` returns its own latency or a dict of measurements; returns the samples and the
    measured wall time.
    """
    for _ in range(config.warmup):
        call()
    samples: list[dict[str, float]] = []
    start = time.perf_counter()
    while not samples or time.perf_counter() - start < config.point_seconds:
        result = call()
        samples.append(result if isinstance(result, dict) else {"latency_s": result})
        progress.update()
    return samples, time.perf_counter() - start


def sample_metrics(samples: Sequence[dict[str, float]]) -> dict[str, dict[str, float | int]]:
    names = sorted({k for s in samples for k in s})
    return {n: summarize([s[n] for s in samples if n in s]) for n in names}


def latency_of(call: Callable[[], object]) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    return timed


class Scenario(Protocol):
    @property
    def model_type(self) -> ModelType: ...

    def run(
        self, client: Any, model: str, config: BenchConfig, progress: Progress
    ) -> list[Point]: ...
