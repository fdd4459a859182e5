"""Decode speed and time to first token of our LLM engine vs onnxruntime-genai (and llama.cpp).

Run: ``python -m imagine_edge.benchmarks.bench_llm [--model NAME] [--runs 5] [--new-tokens 128]
[--json FILE]`` (``--model gemma3-270m`` for Gemma 3 270M; SmolLM2 by default).

One process, one prompt, the same sampling for every engine (top_k 50, top_p 0.9, temperature
0.7, repetition_penalty 1.1), exactly ``--new-tokens`` tokens each (end of sequence ignored by
us, masked by ``min_length`` in onnxruntime-genai and ``logit_bias`` in llama.cpp). Engines run
interleaved (A B C A B C ...) after one warm-up each, so background load hits them alike; the
report gives medians.

- TTFT: from the prompt text to the first generated token's text (template, tokenization,
  prefill, first sample and detokenization included), per engine.
- Decode tokens/s: (new tokens - 1) / (time of the last token - time of the first).

Ours runs three times: the default (intra-op workers spin or sleep, chosen per decode step from
measured step times, runtime/thread_policy.py), and each fixed policy for comparison: workers
that always sleep (``IMAGINE_EDGE_LLM_SPIN=0``) and workers that always spin (``=1``), which answer
faster on idle cores and lose on busy ones. ``--busy N`` runs N busy-looping processes throughout,
to measure the engines on shared cores.

Ours and onnxruntime-genai run the same CPU graph folder from the model store; llama.cpp runs the
model's own GGUF file (``llama-cpp-python``, when installed): the one its store folder keeps
beside the float weights (Gemma), else the weights package's file (SmolLM2). The report also
splits our decode step into the ONNX Runtime call and the rest of the loop (sampling,
detokenization, Python), which says what limits it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imagine_edge.benchmarks._peer_engines import LLM_SAMPLING, llama_cpp_generator
from imagine_edge.models.catalog import get_entry, prepared
from imagine_edge.models.llm import SMOLLM2, ChatModel
from imagine_edge.models.store import Manifest
from imagine_edge.sdk.types import ChatMessage, CompletionRequest

SPINNING = "imagine-edge (always spin)"
SLEEPING = "imagine-edge (always sleep)"
PROMPT = "Write a story about a lighthouse keeper who finds a message in a bottle."
SAMPLING = LLM_SAMPLING  # the same as the peers of `imagine-edge bench --compare`
SLIDING_WINDOW_KV = 512  # onnxruntime-genai's smallest KV capacity here (Gemma 3's window)


@dataclass
class Run:
    ttft_s: float
    decode_tok_s: float
    new_tokens: int


Engine = Callable[[str, int], Run]


def _timed(first: float, last: float, start: float, n: int) -> Run:
    return Run(ttft_s=first - start, decode_tok_s=(n - 1) / (last - first), new_tokens=n)


def ours(model: ChatModel, *, cold: bool = True) -> Engine:
    def run(prompt: str, n: int) -> Run:
        if cold:  # without this a slot would serve the repeated prompt from its cache
            model.loop.decoder.pool.forget()
        request = CompletionRequest(
            prompt=prompt,
            model=model.manifest.name,
            stream=True,
            max_tokens=n,
            ignore_eos=True,
            **SAMPLING,
        )
        start = time.perf_counter()
        first = last = 0.0
        count = 0
        for chunk in model.generate_completion(request, threading.Event()):
            now = time.perf_counter()
            if chunk.text:
                first = first or now
                last = now
            if chunk.stats is not None:
                count = chunk.stats.completion_tokens
        return _timed(first, last, start, count)

    return run


def genai(manifest: Manifest, max_length: int) -> Engine:
    import onnxruntime_genai as og

    model = og.Model(str(manifest.variant("cpu").dir))
    tokenizer = og.Tokenizer(model)

    def run(prompt: str, n: int) -> Run:
        start = time.perf_counter()
        ids = tokenizer.encode(prompt)
        params = og.GeneratorParams(model)
        params.set_search_options(
            do_sample=True,
            top_k=SAMPLING["top_k"],
            top_p=SAMPLING["top_p"],
            temperature=SAMPLING["temperature"],
            repetition_penalty=SAMPLING["repetition_penalty"],
            # Gemma 3's sliding-window layers need a KV capacity of at least their window (512).
            max_length=min(max(len(ids) + n, SLIDING_WINDOW_KV), max_length),
            min_length=len(ids) + n,
        )
        generator = og.Generator(model, params)
        stream = tokenizer.create_stream()
        generator.append_tokens(ids)
        first = last = 0.0
        count = 0
        while not generator.is_done() and count < n:
            generator.generate_next_token()
            text = stream.decode(int(generator.get_next_tokens()[0]))
            count += 1
            now = time.perf_counter()
            if text:
                first = first or now
                last = now
        return _timed(first, last, start, count)

    return run


def llama_cpp(manifest: Manifest, threads: int) -> Engine | str:
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (PyPI ships it as source only)"
    generate = llama_cpp_generator(gguf_file(manifest), threads)

    def run(prompt: str, n: int) -> Run:
        start = time.perf_counter()
        first = last = 0.0
        count = 0
        for _ in generate(prompt, n):
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
        return _timed(first, last, start, count)

    return run


def gguf_file(manifest: Manifest) -> Path:
    """The GGUF file a model was prepared from: kept in the store beside the float weights
    (Gemma 3's assembled chunks), else the weights package's own file (SmolLM2)."""
    if manifest.float_weights is not None:
        kept = sorted(manifest.float_weights.parent.glob("*.gguf"))
        if kept:
            return kept[0]
    spec = importlib.util.find_spec(get_entry(manifest.name).source_module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {manifest.source.package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / manifest.source.file


def decode_split(model: ChatModel, prompt: str, n: int) -> dict[str, float]:
    """Our decode step split into the ONNX Runtime call and the rest of the loop, in ms."""
    decoder = model.loop.decoder
    forward = decoder.forward
    spent: list[float] = []

    def timed_forward(slot: Any, count: int) -> Any:
        t = time.perf_counter()
        out = forward(slot, count)
        if count == 1:
            spent.append(time.perf_counter() - t)
        return out

    decoder.forward = timed_forward  # type: ignore[method-assign]
    try:
        result = ours(model)(prompt, n)
    finally:
        del decoder.forward
    step = 1000.0 / result.decode_tok_s
    session = 1000.0 * statistics.median(spent)
    return {"step_ms": step, "onnxruntime_ms": session, "loop_ms": step - session}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=SMOLLM2, help="an LLM of the catalog")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--json", type=Path, help="also write the report here")
    ap.add_argument("--busy", type=int, default=0, help="busy-looping processes to run beside")
    args = ap.parse_args(argv)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        return _measure(args)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _measure(args: argparse.Namespace) -> int:

    # Per-session intra-op pools: the factory's global pool spins, which doubles the CPU time
    # and, on busy cores, the latency of a decode step (see models/llm.py CPU_SESSION_CONFIG).
    os.environ.setdefault("IMAGINE_EDGE_SHARED_THREAD_POOL", "0")
    load_before = os.getloadavg()
    manifest = prepared(args.model, ["cpu"])
    model = ChatModel(manifest, max_length=args.max_length)
    sleeping = ChatModel(manifest, max_length=args.max_length, threads="sleep")
    spinning = ChatModel(manifest, max_length=args.max_length, threads="spin")
    prompt = model.format.render([ChatMessage(role="user", content=PROMPT)])
    engines: dict[str, Engine] = {
        "imagine-edge": ours(model),
        SLEEPING: ours(sleeping),
        SPINNING: ours(spinning),
        "onnxruntime-genai": genai(manifest, args.max_length),
    }
    notes: dict[str, str] = {}
    threads = int(os.environ.get("IMAGINE_EDGE_THREADS", os.cpu_count() or 1))
    cpp = llama_cpp(manifest, threads)
    if isinstance(cpp, str):
        notes["llama.cpp"] = cpp
    else:
        engines["llama.cpp"] = cpp

    runs: dict[str, list[Run]] = {name: [] for name in engines}
    for engine in engines.values():
        engine(prompt, 16)  # warm-up: arenas, prepacked weights, caches
    for _ in range(args.runs):
        for name, engine in engines.items():
            runs[name].append(engine(prompt, args.new_tokens))

    warm = []
    for i in range(args.runs):
        # Another user turn after the same system prompt: its prefix comes from the KV cache.
        other = model.format.render([ChatMessage(role="user", content=f"{PROMPT} ({i})")])
        warm.append(ours(model, cold=False)(other, 8).ttft_s)

    report: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_average_1min": [load_before[0], os.getloadavg()[0]],
            "shared_thread_pool": os.environ["IMAGINE_EDGE_SHARED_THREAD_POOL"] != "0",
            "busy_processes": args.busy,
        },
        "model": f"{manifest.name} ({manifest.variant('cpu').quantization})",
        "execution_provider": model.execution_provider,
        "prompt_tokens": len(model.loop.encode(prompt)),
        "new_tokens": args.new_tokens,
        "sampling": SAMPLING,
        "runs": args.runs,
        "engines": {},
        "notes": notes,
        "our_decode_step": decode_split(model, prompt, args.new_tokens),
        "our_ttft_ms_system_prompt_cached": 1000 * statistics.median(warm),
        "our_thread_policy": model.thread_policy.stats() if model.thread_policy else None,
    }
    for name, items in runs.items():
        report["engines"][name] = {
            "decode_tok_s": statistics.median(r.decode_tok_s for r in items),
            "ttft_ms": 1000 * statistics.median(r.ttft_s for r in items),
            "all": [asdict(r) for r in items],
        }
    base = report["engines"]["onnxruntime-genai"]
    mine = report["engines"]["imagine-edge"]
    report["vs_onnxruntime_genai"] = {
        "decode_speedup": mine["decode_tok_s"] / base["decode_tok_s"],
        "ttft_ratio": mine["ttft_ms"] / base["ttft_ms"],
    }
    for name, key in ((SLEEPING, "sleeping"), (SPINNING, "spinning")):
        fixed = report["engines"][name]
        report["vs_onnxruntime_genai"][f"decode_speedup_{key}"] = (
            fixed["decode_tok_s"] / base["decode_tok_s"]
        )
    if "llama.cpp" in report["engines"]:
        cpp_tps = report["engines"]["llama.cpp"]["decode_tok_s"]
        report["vs_llama_cpp"] = {"decode_speedup": mine["decode_tok_s"] / cpp_tps}
    _print(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    for m in (model, sleeping, spinning):
        m.close()
    return 0


def _print(report: dict[str, Any]) -> None:
    print(f"model: {report['model']} on {report['execution_provider']}")
    print(
        f"prompt {report['prompt_tokens']} tokens, {report['new_tokens']} new tokens, "
        f"median of {report['runs']} interleaved runs, sampling {report['sampling']}"
    )
    print(f"{'engine':<28}{'decode tok/s':>14}{'TTFT ms':>10}")
    for name, e in report["engines"].items():
        print(f"{name:<28}{e['decode_tok_s']:>14.1f}{e['ttft_ms']:>10.1f}")
    for name, note in report["notes"].items():
        print(f"{name:<28}{note}")
    vs = report["vs_onnxruntime_genai"]
    print(
        f"vs onnxruntime-genai: decode x{vs['decode_speedup']:.2f}, TTFT x{vs['ttft_ratio']:.2f}"
        f" (always sleeping: decode x{vs['decode_speedup_sleeping']:.2f}; "
        f"always spinning: decode x{vs['decode_speedup_spinning']:.2f})"
    )
    print(f"our decode threads: {report['our_thread_policy']}")
    if "vs_llama_cpp" in report:
        print(f"vs llama.cpp: decode x{report['vs_llama_cpp']['decode_speedup']:.2f}")
    print(
        f"our TTFT with the system prompt cached (a new user turn): "
        f"{report['our_ttft_ms_system_prompt_cached']:.1f} ms"
    )
    m = report["machine"]
    print(
        f"load average {m['load_average_1min'][0]:.1f} -> {m['load_average_1min'][1]:.1f} "
        f"on {m['cores']} cores; shared thread pool: {m['shared_thread_pool']}"
    )
    split = report["our_decode_step"]
    print(
        f"our decode step {split['step_ms']:.2f} ms = onnxruntime {split['onnxruntime_ms']:.2f} "
        f"ms + loop {split['loop_ms']:.2f} ms"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
