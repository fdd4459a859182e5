"""Decode speed with a JSON schema active against unconstrained decoding, on the real SmolLM2.

``python -m imagine_edge.benchmarks.constrained_decode [--rounds N] [--tokens N]`` prepares (or
reuses) SmolLM2's CPU graph, then runs the same chat prompt in-process through the generation
loop, alternating which of the two runs goes first in each round, and reports median decode
tokens/s of each, their ratio (of the medians, and the median of each round's ratio, which
cancels load that drifts between rounds), the load average before and after, and the grammar's
own cost per token (llguidance's mask computation and token consumption, replayed over the
constrained output). The unconstrained run ignores EOS so that both generate a comparable number
of tokens. Not collected by pytest: it needs the prepared model and takes a few minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace

from imagine_edge import kernels
from imagine_edge.models.catalog import prepared
from imagine_edge.models.llm import SMOLLM2, ChatModel
from imagine_edge.runtime.constraint import ConstraintCompiler, Grammar
from imagine_edge.runtime.generate import TextGenerationLoop
from imagine_edge.runtime.results import GenerationStats
from imagine_edge.runtime.sampling import GenerationPlan
from imagine_edge.sdk.types import ChatCompletionRequest, ChatMessage

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 60},
        "genre": {"enum": ["fantasy", "science fiction", "mystery", "romance"]},
        "year": {"type": "integer", "minimum": 1800, "maximum": 2030},
        "summary": {"type": "string", "minLength": 200, "maxLength": 400},
    },
    "required": ["title", "genre", "year", "summary"],
    "additionalProperties": False,
}
PROMPT = "Invent a novel and describe it as JSON with a title, genre, year and a long summary."


def _run(
    loop: TextGenerationLoop, prompt: list[int], plan: GenerationPlan, grammar: Grammar | None
) -> GenerationStats:
    constraint = None if grammar is None else grammar.start()
    last = list(loop.run(prompt, plan, constraint=constraint))[-1]
    assert last.stats is not None
    return last.stats


def _rate(stats: GenerationStats) -> float:
    # The first token comes from the prefill's logits; the rest each cost one decode step.
    return (stats.completion_tokens - 1) / stats.decode_seconds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--tokens", type=int, default=128, help="max_tokens of each run")
    args = parser.parse_args(argv)

    manifest = prepared(SMOLLM2, ["cpu"])
    model = ChatModel(manifest, max_length=1024)
    try:
        loop = model.loop
        eos = manifest.special_tokens.eos_token_ids[0]
        compiler = ConstraintCompiler(loop.tokenizer, loop.decoder.spec.vocab_size, eos)
        grammar = compiler.compile("json_schema", SCHEMA)
        request = ChatCompletionRequest(
            messages=[ChatMessage(role="user", content=PROMPT)], model=SMOLLM2, stream=False
        )
        prompt = model.chat_prompt(request)
        constrained_plan = GenerationPlan(
            sampling=kernels.SamplingConfig(temperature=0.7, top_p=0.95),
            max_tokens=args.tokens,
            seed=0,
        )
        free_plan = replace(constrained_plan, ignore_eos=True)
        _run(loop, prompt, free_plan, None)  # warm-up: sessions, caches
        _run(loop, prompt, constrained_plan, grammar)

        load_before = os.getloadavg()
        rates: dict[str, list[float]] = {"unconstrained": [], "json-schema": []}
        tokens: dict[str, list[int]] = {"unconstrained": [], "json-schema": []}
        last_ids: list[int] = []
        for i in range(args.rounds):
            order = [("unconstrained", None), ("json-schema", grammar)]
            for name, g in order if i % 2 == 0 else order[::-1]:
                plan = free_plan if g is None else replace(constrained_plan, seed=i)
                stats = _run(loop, prompt, plan, g)
                rates[name].append(_rate(stats))
                tokens[name].append(stats.completion_tokens)
                if g is not None:
                    last_ids = stats.token_ids
        load_after = os.getloadavg()

        fill, consume = _grammar_cost(grammar, last_ids, eos)
        print(f"SmolLM2 CPU graph, {args.rounds} rounds alternating, max_tokens {args.tokens}")
        print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
        for name, values in rates.items():
            print(
                f"{name:>14}: median {statistics.median(values):.1f} tokens/s "
                f"(min {min(values):.1f}, max {max(values):.1f}), "
                f"median {statistics.median(tokens[name]):.0f} tokens per run"
            )
        ratio = statistics.median(rates["json-schema"]) / statistics.median(rates["unconstrained"])
        paired = [c / u for c, u in zip(rates["json-schema"], rates["unconstrained"], strict=True)]
        print(f"ratio of medians json-schema / unconstrained: {ratio:.3f}")
        print(
            f"median of the per-round ratios: {statistics.median(paired):.3f} "
            f"(min {min(paired):.3f}, max {max(paired):.3f})"
        )
        print(
            f"grammar cost per token (llguidance, replayed over {len(fill)} tokens): "
            f"fill median {statistics.median(fill):.1f} us, mean {statistics.fmean(fill):.1f} "
            f"us, max {max(fill):.1f} us; consume median {statistics.median(consume):.1f} us, "
            f"max {max(consume):.1f} us"
        )
    finally:
        model.close()
    return 0


def _grammar_cost(
    grammar: Grammar, token_ids: list[int], eos: int
) -> tuple[list[float], list[float]]:
    """Microseconds of each `fill` and `consume` over a replay of a constrained output."""
    constraint = grammar.start()
    fills: list[float] = []
    consumes: list[float] = []
    for token in token_ids:
        if token == eos and constraint.done:
            break
        start = time.perf_counter()
        constraint.fill()
        filled = time.perf_counter()
        constraint.consume(token)
        consumes.append((time.perf_counter() - filled) * 1e6)
        fills.append((filled - start) * 1e6)
    return fills, consumes


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
