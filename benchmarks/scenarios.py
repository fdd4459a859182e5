"""One benchmark scenario per ModelType, written against the official client's API.

Each scenario drives a client (``ImagineEdge()`` in process, or ``ImagineEdge(base_url=...)``
over HTTP: the same methods) and returns :class:`Point` s: one measured configuration each, with
latency summaries (warm-up excluded) and throughput. Samples are wall-clock times around the
client call, so over HTTP they include the server's overhead. What every scenario shares (the
configuration, points, texts and timing) is ``scenario_base.py``.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagine_edge.benchmarks.scenario_base import (
    BenchConfig,
    Point,
    Progress,
    Scenario,
    latency_of,
    prompt_of,
    sample_metrics,
    sentences,
    timed_calls,
)
from imagine_edge.sdk.types import ModelType

__all__ = ["SCENARIOS", "BenchConfig", "Point", "Progress", "Scenario", "prompt_of"]


def _stream_sample(
    chunks: Iterator[Any], start: float, deadline: float = float("inf")
) -> dict[str, float]:
    """TTFT, inter-token latency, end-to-end latency and decode rate of one streamed answer.

    A stream still running at ``deadline`` is closed (the engine cancels it): its tokens and
    TTFT count, its end-to-end time and decode rate do not.
    """
    arrivals: list[float] = []
    completion_tokens = None
    try:
        for chunk in chunks:
            now = time.perf_counter()
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(now)
            if chunk.usage is not None and chunk.usage.completion_tokens is not None:
                completion_tokens = chunk.usage.completion_tokens
            if now >= deadline:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    end = time.perf_counter()
    tokens = completion_tokens if completion_tokens is not None else len(arrivals)
    sample = {"completion_tokens": float(tokens)}
    if completion_tokens is None:
        return sample | ({"ttft_s": arrivals[0] - start} if arrivals else {})
    sample["e2e_s"] = end - start
    if arrivals:
        sample["ttft_s"] = arrivals[0] - start
        if tokens > 1 and end > arrivals[0]:
            decode = end - arrivals[0]
            sample["tpot_s"] = decode / (tokens - 1)
            sample["decode_tokens_per_s"] = (tokens - 1) / decode
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        if gaps:
            sample["itl_s"] = sum(gaps) / len(gaps)
    return sample


@dataclass(frozen=True, slots=True)
class LLMScenario:
    model_type: ModelType = ModelType.LLM

    def run(self, client: Any, model: str, config: BenchConfig, progress: Progress) -> list[Point]:
        pairs = [(n, c) for n in config.llm_prompt_lengths for c in config.llm_concurrency]
        # Warm-up before the first point only: the model stays loaded and warm after it.
        return [
            self._point(client, model, length, concurrency, config, progress, warmup=i == 0)
            for i, (length, concurrency) in enumerate(pairs)
        ]

    def _point(
        self,
        client: Any,
        model: str,
        length: int,
        concurrency: int,
        config: BenchConfig,
        progress: Progress,
        warmup: bool = True,
    ) -> Point:
        requests = itertools.count()
        deadline = float("inf")

        def one() -> dict[str, float]:
            prompt = prompt_of(length, next(requests))
            start = time.perf_counter()
            stream = client.completion_stream(
                prompt,
                model=model,
                max_tokens=config.llm_max_tokens,
                ignore_eos=True,
                temperature=0.7,
                top_k=50,
                top_p=0.9,
                repetition_penalty=1.1,
            )
            return _stream_sample(stream, start, deadline)

        for _ in range(config.warmup if warmup else 0):
            one()
        deadline = time.perf_counter() + config.point_seconds
        samples, errors, wall = _closed_loop(one, concurrency, deadline, progress)
        point = Point(
            label=f"prompt {length} / concurrency {concurrency}",
            params={
                "prompt_tokens": length,
                "concurrency": concurrency,
                "max_tokens": config.llm_max_tokens,
            },
            metrics=sample_metrics(samples),
            errors=errors,
        )
        tokens = sum(s["completion_tokens"] for s in samples)
        point.throughput = {
            "output_tokens_per_s": tokens / wall if wall else 0.0,
            "requests_per_s": len(samples) / wall if wall else 0.0,
        }
        return point


def _closed_loop(
    call: Callable[[], dict[str, float]],
    concurrency: int,
    deadline: float,
    progress: Progress,
) -> tuple[list[dict[str, float]], int, float]:
    """``concurrency`` clients each calling back to back until ``deadline`` (``call`` closes
    a stream still running then)."""
    samples: list[dict[str, float]] = []
    errors = 0
    lock = threading.Lock()
    start = time.perf_counter()

    def worker() -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            try:
                sample = call()
            except Exception:  # a rejected (429) or failed request counts, it does not stop us
                with lock:
                    errors += 1
                time.sleep(0.05)
                continue
            with lock:
                samples.append(sample)
            progress.update()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples, errors, time.perf_counter() - start


@dataclass(frozen=True, slots=True)
class EmbeddingScenario:
    model_type: ModelType = ModelType.EMBEDDING

    def run(self, client: Any, model: str, config: BenchConfig, progress: Progress) -> list[Point]:
        pool = sentences(256)
        points = []
        for batch in config.embedding_batch_sizes:
            texts = pool[:batch]
            samples, _ = timed_calls(
                latency_of(functools.partial(client.embeddings, texts, model=model)),
                config,
                progress,
            )
            point = Point(
                label=f"batch {batch}",
                params={"batch_size": batch},
                metrics=sample_metrics(samples),
            )
            p50 = point.metrics["latency_s"]["p50"]
            point.throughput = {"sentences_per_s": batch / p50 if p50 else 0.0}
            points.append(point)
        points.extend(
            self._clients_point(client, model, pool, clients, config, progress)
            for clients in config.embedding_clients
        )
        return points

    def _clients_point(
        self,
        client: Any,
        model: str,
        pool: list[str],
        clients: int,
        config: BenchConfig,
        progress: Progress,
    ) -> Point:
        """``clients`` callers each embedding one sentence per request, back to back."""
        texts = itertools.cycle(pool)

        def one() -> dict[str, float]:
            return {
                "latency_s": latency_of(lambda: client.embeddings([next(texts)], model=model))()
            }

        deadline = time.perf_counter() + config.point_seconds
        samples, errors, wall = _closed_loop(one, clients, deadline, progress)
        point = Point(
            label=f"{clients} clients x 1 sentence",
            params={"batch_size": 1, "clients": clients},
            metrics=sample_metrics(samples),
            errors=errors,
        )
        point.throughput = {"sentences_per_s": len(samples) / wall if wall else 0.0}
        return point


@dataclass(frozen=True, slots=True)
class RerankerScenario:
    model_type: ModelType = ModelType.RERANKER

    def run(self, client: Any, model: str, config: BenchConfig, progress: Progress) -> list[Point]:
        pool = sentences(max(config.reranker_documents))
        points = []
        for count in config.reranker_documents:
            docs = pool[:count]
            samples, _ = timed_calls(
                latency_of(
                    functools.partial(
                        client.reranker,
                        "Where did the cargo ship unload oranges?",
                        docs,
                        model=model,
                    )
                ),
                config,
                progress,
            )
            point = Point(
                label=f"{count} documents",
                params={"documents": count},
                metrics=sample_metrics(samples),
            )
            p50 = point.metrics["latency_s"]["p50"]
            point.throughput = {"documents_per_s": count / p50 if p50 else 0.0}
            points.append(point)
        return points


def _default_audio() -> Path | None:
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("beckett.wav"))
        if found:
            return found[0]
    return None


def _wav_seconds(path: Path) -> float:
    import wave

    with wave.open(str(path), "rb") as w:
        return w.getnframes() / float(w.getframerate())


@dataclass(frozen=True, slots=True)
class TranscribeScenario:
    model_type: ModelType = ModelType.TRANSCRIBE

    def run(self, client: Any, model: str, config: BenchConfig, progress: Progress) -> list[Point]:
        audio = Path(config.audio_file) if config.audio_file else _default_audio()
        if audio is None:
            raise FileNotFoundError("no audio: pass --audio FILE.wav (or install moonshine-voice)")
        seconds = _wav_seconds(audio)

        def one() -> dict[str, float]:
            start = time.perf_counter()
            with audio.open("rb") as f:
                client.transcribe(f, model=model)
            latency = time.perf_counter() - start
            return {"latency_s": latency, "rtf": latency / seconds}

        samples, _ = timed_calls(one, config, progress)
        point = Point(
            label=audio.name, params={"audio_seconds": seconds}, metrics=sample_metrics(samples)
        )
        point.throughput = {"audio_seconds_per_s": 1.0 / point.metrics["rtf"]["p50"]}
        return [point]


@dataclass(frozen=True, slots=True)
class TranslateScenario:
    model_type: ModelType = ModelType.TRANSLATE

    def run(self, client: Any, model: str, config: BenchConfig, progress: Progress) -> list[Point]:
        pool = sentences(64, 8, 24)
        index = 0

        def one() -> dict[str, float]:
            nonlocal index
            text = pool[index % len(pool)]
            index += 1
            start = time.perf_counter()
            response = client.translate(text, model)
            latency = time.perf_counter() - start
            tokens = (response.usage.completion_tokens or 0) if response.usage else 0
            return {"latency_s": latency, "output_tokens": float(tokens)}

        samples, wall = timed_calls(one, config, progress)
        point = Point(label="sentences of 8-24 words", params={}, metrics=sample_metrics(samples))
        point.throughput = {
            "sentences_per_s": len(samples) / wall if wall else 0.0,
            "output_tokens_per_s": sum(s["output_tokens"] for s in samples) / wall if wall else 0.0,
        }
        return [point]


@dataclass(frozen=True, slots=True)
class TextToImageScenario:
    model_type: ModelType = ModelType.TEXT_TO_IMAGE

    def run(self, client: Any, model: str, config: BenchConfig, progress: Progress) -> list[Point]:
        steps = config.image_steps

        def one() -> dict[str, float]:
            start = time.perf_counter()
            client.images_generate(
                "a lighthouse on a cliff at sunset",
                model=model,
                num_inference_steps=steps,
                size=config.image_size,
                n=1,
            )
            latency = time.perf_counter() - start
            return {"seconds_per_image": latency, "seconds_per_step": latency / steps}

        samples, _ = timed_calls(one, config, progress)
        point = Point(
            label=f"{config.image_size}, {steps} steps",
            params={"size": config.image_size, "steps": steps},
            metrics=sample_metrics(samples),
        )
        point.throughput = {"images_per_s": 1.0 / point.metrics["seconds_per_image"]["p50"]}
        return [point]


SCENARIOS: dict[ModelType, Scenario] = {
    ModelType.LLM: LLMScenario(),
    ModelType.EMBEDDING: EmbeddingScenario(),
    ModelType.RERANKER: RerankerScenario(),
    ModelType.TRANSCRIBE: TranscribeScenario(),
    ModelType.TRANSLATE: TranslateScenario(),
    ModelType.TEXT_TO_IMAGE: TextToImageScenario(),
}
