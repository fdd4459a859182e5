"""``--compare``: other engines on the same weights, measured in the same run as ours.

LLM: onnxruntime-genai on the very ONNX graph we run, and llama.cpp (``llama-cpp-python``) on the
package's own GGUF file, with the same prompt, sampling and output length. Each peer is optional:
when it is not installed the scenario says so instead of failing. Ratios are ours divided by the
peer's for throughputs (higher is better) and for latencies (lower is better).
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from imagine_edge.benchmarks.scenarios import (
    BenchConfig,
    Point,
    Progress,
    _metrics,
    _timed_calls,
    prompt_of,
)
from imagine_edge.sdk.types import ModelType

__all__ = ["compare"]

_SAMPLING = {"temperature": 0.7, "top_k": 50, "top_p": 0.9, "repetition_penalty": 1.1}


def _decode_sample(tokens: Iterator[object], start: float) -> dict[str, float]:
    arrivals = [time.perf_counter() for _ in tokens]
    end = time.perf_counter()
    sample = {"e2e_s": end - start, "completion_tokens": float(len(arrivals))}
    if arrivals:
        sample["ttft_s"] = arrivals[0] - start
        if len(arrivals) > 1 and end > arrivals[0]:
            sample["decode_tokens_per_s"] = (len(arrivals) - 1) / (end - arrivals[0])
            sample["tpot_s"] = (end - arrivals[0]) / (len(arrivals) - 1)
    return sample


def _genai_stream(folder: Path, config: BenchConfig) -> Callable[[str], Iterator[object]]:
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)

    def stream(prompt: str) -> Iterator[object]:
        ids = tokenizer.encode(prompt)
        params = og.GeneratorParams(model)
        total = len(ids) + config.llm_max_tokens
        params.set_search_options(do_sample=True, max_length=total, min_length=total, **_SAMPLING)
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
            yield generator.get_next_tokens()[0]

    return stream


def _llama_cpp_stream(gguf: Path, config: BenchConfig) -> Callable[[str], Iterator[object]]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=2, verbose=False, seed=0)
    eos = llm.token_eos()

    def stream(prompt: str) -> Iterator[object]:
        yield from llm.create_completion(
            prompt,
            max_tokens=config.llm_max_tokens,
            stream=True,
            temperature=_SAMPLING["temperature"],
            top_k=int(_SAMPLING["top_k"]),
            top_p=_SAMPLING["top_p"],
            repeat_penalty=_SAMPLING["repetition_penalty"],
            logit_bias={eos: -1e9},  # ignore_eos, as our run does
        )

    return stream


def _llm_peer_points(
    stream: Callable[[str], Iterator[object]], config: BenchConfig, progress: Progress
) -> list[dict[str, Any]]:
    points = []
    for length in config.llm_prompt_lengths:
        requests = itertools.count()

        def one(length: int = length, requests: Iterator[int] = requests) -> dict[str, float]:
            prompt = prompt_of(length, next(requests))  # the same prompts as our run
            start = time.perf_counter()
            return _decode_sample(stream(prompt), start)

        samples, _ = _timed_calls(one, config, progress)
        point = Point(
            label=f"prompt {length} / concurrency 1",
            params={"prompt_tokens": length, "concurrency": 1, "max_tokens": config.llm_max_tokens},
            metrics=_metrics(samples),
        )
        points.append(point.to_json())
    return points


def _llm_peers(
    scenario: dict[str, Any], config: BenchConfig, progress: Progress
) -> list[dict[str, Any]]:
    from imagine_edge.models.store import lookup, prepared

    manifest = prepared(scenario["model"])
    peers: list[dict[str, Any]] = []
    cpu_dir = manifest.variant("cpu").dir
    gguf = lookup(scenario["model"]).weights
    makers: list[tuple[str, Callable[[], Callable[[str], Iterator[object]]]]] = [
        ("onnxruntime-genai", functools.partial(_genai_stream, cpu_dir, config)),
        ("llama.cpp", functools.partial(_llama_cpp_stream, gguf, config)),
    ]
    for name, make in makers:
        try:
            stream = make()
        except ImportError as exc:
            peers.append({"name": name, "points": [], "error": f"not installed: {exc}"})
            continue
        peers.append({"name": name, "points": _llm_peer_points(stream, config, progress)})
    return peers


def _p50(point: dict[str, Any], metric: str) -> float | None:
    summary = point["metrics"].get(metric) or {}
    value = summary.get("p50")
    return float(value) if value else None


def _ratios(scenario: dict[str, Any]) -> dict[str, float]:
    """Ours / peer at concurrency 1 for decode tokens/s and TTFT, per prompt length."""
    ours = {
        p["params"].get("prompt_tokens"): p
        for p in scenario["points"]
        if p["params"].get("concurrency", 1) == 1
    }
    ratios: dict[str, float] = {}
    for peer in scenario["peers"]:
        for theirs in peer["points"]:
            length = theirs["params"].get("prompt_tokens")
            mine = ours.get(length)
            if mine is None:
                continue
            for metric, label in (("decode_tokens_per_s", "tokens/s"), ("ttft_s", "TTFT")):
                a, b = _p50(mine, metric), _p50(theirs, metric)
                if a and b:
                    ratios[f"{label} vs {peer['name']} (prompt {length})"] = a / b
    return ratios


_PEERS: dict[str, Callable[[dict[str, Any], BenchConfig, Progress], list[dict[str, Any]]]] = {
    ModelType.LLM.value: _llm_peers,
}


def compare(scenario: dict[str, Any], config: BenchConfig, progress: Progress) -> None:
    """Add the peers' points and the ratios to ``scenario`` (in place)."""
    run = _PEERS.get(scenario["model_type"])
    if run is None:
        scenario["peers"] = []
        return
    scenario["peers"] = run(scenario, config, progress)
    scenario["ratios"] = _ratios(scenario)
