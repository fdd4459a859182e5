"""pytest-benchmark suite for the sampling kernels: native and numpy reference side by side.

Run with ``make bench`` (``pytest benchmarks --benchmark-enable --benchmark-only``); the unit test
run skips it (``--benchmark-disable``, and ``tests/`` is the default test path). Each group is one
operation at one vocabulary size; compare medians within a group.

- full chain: repetition, presence and frequency penalties over a 512-token history, temperature
  0.7, top_k 50, top_p 0.9, draw;
- top-p alone: temperature 0.7, top_p 0.9, top_k off (the whole row goes through top-p);
- greedy and temperature-only rows for context;
- the allowed-token mask of constrained decoding (``test_sample_masked``): greedy and the full
  chain at V = 49,152 (SmolLM2) and 262,144 (Gemma 3), with no mask, a mask allowing 12 tokens
  (a JSON grammar at a structural point) and one allowing all but 300 (inside a JSON string);
  the mask's cost per token is the difference to the unmasked median.

Rows are seeded Gaussian logits (std 2.5): no peaked head, so top-p keeps thousands of tokens, a
pessimistic case for it. Each round gets a fresh copy of the row (sampling works in place), made
outside the timed region. The native backend runs on the CPU's best instruction set and, for
comparison, on the portable baseline.

``python -m imagine_edge.benchmarks.bench_kernels RESULTS.json`` turns a ``--benchmark-json`` file
into the markdown tables of medians in ``docs/sampling.md`` and ``docs/constrained.md``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from imagine_edge import kernels
from imagine_edge.kernels import SamplingConfig, SequenceState

VOCABS = (32_000, 49_152, 151_936, 262_144)  # the last: Gemma 3
HISTORY = 512
CONFIGS = {
    "full-chain": SamplingConfig(
        temperature=0.7,
        top_k=50,
        top_p=0.9,
        repetition_penalty=1.1,
        presence_penalty=0.5,
        frequency_penalty=0.5,
    ),
    "top-p": SamplingConfig(temperature=0.7, top_p=0.9),
    "temperature": SamplingConfig(temperature=0.7),
    "greedy": SamplingConfig(temperature=0.0),
}


def _native_variants() -> list[str]:
    if "native" not in kernels.available_backends():
        return []
    from imagine_edge.kernels import _native

    best = _native.isa()
    variants = [f"native-{best}"]
    if best == "avx2":
        variants.append("native-sse2")
    return variants


BACKENDS = ["reference", *_native_variants()]


def _inputs(vocab: int) -> tuple[npt.NDArray[np.float32], SequenceState]:
    rng = np.random.default_rng(vocab)
    logits = (rng.standard_normal(vocab) * 2.5).astype(np.float32)
    state = SequenceState(vocab)
    for token in rng.integers(0, vocab, HISTORY):  # every penalty covers all 512 tokens
        state.accept(int(token))
    return logits, state


@pytest.fixture(params=BACKENDS)
def sampler(request: pytest.FixtureRequest) -> Iterator[Callable[..., int]]:
    name: str = request.param
    if name == "reference":
        yield kernels.get_backend("reference").sample
        return
    from imagine_edge.kernels import _native

    _native.select_isa(name.removeprefix("native-"))
    try:
        yield kernels.get_backend("native").sample
    finally:
        _native.select_isa(None)


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("op", list(CONFIGS))
def test_sample(benchmark, sampler: Callable[..., int], op: str, vocab: int) -> None:  # type: ignore[no-untyped-def]
    logits, state = _inputs(vocab)
    config = CONFIGS[op]
    uniforms = iter(np.random.default_rng(0).random(100_000))
    benchmark.group = f"{op} V={vocab}"

    def setup() -> tuple[tuple[object, ...], dict[str, object]]:
        return (logits.copy(), config, state, float(next(uniforms))), {}

    slow = sampler is kernels.get_backend("reference").sample
    benchmark.pedantic(sampler, setup=setup, rounds=30 if slow else 300, warmup_rounds=3)


MASK_VOCABS = (49_152, 262_144)
MASK_OPS = ("greedy", "full-chain")
MASKS = ("none", "structural", "string")


def _mask(vocab: int, kind: str) -> npt.NDArray[np.uint32] | None:
    """A grammar-shaped bitmask: 12 allowed tokens, or all but 300 (random ids, seeded)."""
    if kind == "none":
        return None
    rng = np.random.default_rng(vocab + 7)
    bits = np.zeros(kernels.mask_words(vocab) * 32, dtype=np.uint8)
    if kind == "structural":
        bits[rng.choice(vocab, 12, replace=False)] = 1
    else:
        bits[:vocab] = 1
        bits[rng.choice(vocab, 300, replace=False)] = 0
    return np.packbits(bits, bitorder="little").view("<u4").astype(np.uint32)


@pytest.mark.parametrize("vocab", MASK_VOCABS)
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("op", MASK_OPS)
def test_sample_masked(  # type: ignore[no-untyped-def]
    benchmark, sampler: Callable[..., int], op: str, mask: str, vocab: int
) -> None:
    logits, state = _inputs(vocab)
    config = CONFIGS[op]
    allowed = _mask(vocab, mask)
    uniforms = iter(np.random.default_rng(0).random(100_000))
    benchmark.group = f"mask {op} V={vocab}"

    def setup() -> tuple[tuple[object, ...], dict[str, object]]:
        args = (logits.copy(), config, state, float(next(uniforms)))
        return args, {"allowed_mask": allowed}

    slow = sampler is kernels.get_backend("reference").sample
    benchmark.pedantic(sampler, setup=setup, rounds=30 if slow else 300, warmup_rounds=3)


def mask_table(results: dict[str, Any]) -> str:
    """Markdown table of masked medians (us) and the mask's cost over the unmasked median."""
    medians: dict[tuple[str, str, str], float] = {}
    for bench in results["benchmarks"]:
        if not bench["group"].startswith("mask "):
            continue
        key = (bench["group"], bench["params"]["sampler"], bench["params"]["mask"])
        medians[key] = bench["stats"]["median"] * 1e6
    lines = [
        "| operation | V | backend | no mask (us) | 12 allowed (us) | all but 300 (us) "
        "| mask cost (us) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for op in MASK_OPS:
        for vocab in MASK_VOCABS:
            for backend in BACKENDS:
                row = [medians.get((f"mask {op} V={vocab}", backend, m)) for m in MASKS]
                if any(v is None for v in row):
                    continue
                none, few, most = (float(v) for v in row if v is not None)
                cost = f"{few - none:+,.1f} / {most - none:+,.1f}"
                lines.append(
                    f"| {op} | {vocab:,} | {backend} | {none:,.1f} | {few:,.1f} | {most:,.1f} "
                    f"| {cost} |"
                )
    return "\n".join(lines)


def median_table(results: dict[str, Any]) -> str:
    """Markdown table of medians (us) per group, with the native speed-up over the reference."""
    medians: dict[tuple[str, str], float] = {}
    for bench in results["benchmarks"]:
        backend = bench["params"]["sampler"]
        medians[(bench["group"], backend)] = bench["stats"]["median"] * 1e6
    backends = [b for b in BACKENDS if any(key[1] == b for key in medians)]
    lines = [
        "| operation | V | " + " | ".join(f"{b} (us)" for b in backends) + " | speed-up |",
        "|---|---:|" + "---:|" * len(backends) + "---:|",
    ]
    for op in CONFIGS:
        for vocab in VOCABS:
            row = [medians.get((f"{op} V={vocab}", b)) for b in backends]
            if row[0] is None or row[1] is None:
                continue
            cells = " | ".join("" if v is None else f"{v:,.1f}" for v in row)
            lines.append(f"| {op} | {vocab:,} | {cells} | {row[0] / row[1]:,.0f}x |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m imagine_edge.benchmarks.bench_kernels RESULTS.json")
        return 2
    results = json.loads(Path(argv[0]).read_text())
    print(median_table(results))
    print()
    print(mask_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
