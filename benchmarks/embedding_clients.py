"""Concurrent single-sentence embedding clients against one or more running servers, alternating.

Run: ``python -m imagine_edge.benchmarks.embedding_clients URL [URL ...] [--clients 16]
[--rounds 5] [--seconds 8] [--model all-minilm-l6-v2]``

Each URL is a server's root (``http://127.0.0.1:8000``). Every round measures each server in
turn (the order alternates between rounds, so drift in the machine's load falls on all alike):
``--clients`` threads each POST one sentence to ``/api/v2/embeddings`` back to back, on their
own keep-alive connection, for ``--seconds``. It prints each round's requests/s, then per server
the median over rounds, the median latency and the load average before and after, as JSON;
with ``--pids``, also each server's CPU milliseconds per request (from ``/proc/PID/stat``: less
sensitive than throughput to other work on the machine). docs/bench.md compares the server
before and after cross-request batching this way (one server per checkout); the bench's
embedding scenario has the same point (``N clients x 1 sentence``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from imagine_edge.benchmarks.scenario_base import sentences

__all__ = ["main", "measure"]


def _load() -> str:
    return Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "?"


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 without one)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    root: str, model: str, clients: int, seconds: float, pid: int | None = None
) -> dict[str, float]:
    """Requests/s and median latency of ``clients`` closed-loop clients for ``seconds``, and
    the server's CPU milliseconds per request when its process id is given."""
    pool = sentences(256)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(offset: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=root, timeout=60) as http:
            i = offset
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                body = {"model": model, "input": pool[i % len(pool)]}
                ok = http.post("/api/v2/embeddings", json=body).status_code == 200
                with lock:
                    if ok:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors += 1
                i += clients

    start, cpu = time.perf_counter(), _cpu_seconds(pid)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu = _cpu_seconds(pid) - cpu
    return {
        "requests_per_s": len(latencies) / wall,
        "server_cpu_ms_per_request": cpu * 1e3 / len(latencies) if pid and latencies else 0.0,
        "p50_latency_s": statistics.median(latencies) if latencies else float("nan"),
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("urls", nargs="+")
    p.add_argument("--model", default="all-minilm-l6-v2")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--pids", help="the servers' process ids, comma-separated, in URL order")
    args = p.parse_args(argv)
    pids = [int(x) for x in args.pids.split(",")] if args.pids else [None] * len(args.urls)
    pid_of = dict(zip(args.urls, pids, strict=True))
    for url in args.urls:  # warm-up: the model loads, the arenas grow
        measure(url, args.model, args.clients, 1.0)
    runs: dict[str, list[dict[str, float]]] = {url: [] for url in args.urls}
    load_before = _load()
    for r in range(args.rounds):
        order = args.urls if r % 2 == 0 else args.urls[::-1]
        for url in order:
            runs[url].append(measure(url, args.model, args.clients, args.seconds, pid_of[url]))
            print(f"round {r + 1} {url}: {runs[url][-1]['requests_per_s']:.1f} requests/s")
    out: dict[str, Any] = {
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "loadavg_before": load_before,
        "loadavg_after": _load(),
        "servers": {
            url: {
                "median_requests_per_s": statistics.median(m["requests_per_s"] for m in ms),
                "rounds_requests_per_s": [round(m["requests_per_s"], 1) for m in ms],
                "median_p50_latency_s": statistics.median(m["p50_latency_s"] for m in ms),
                "median_server_cpu_ms_per_request": statistics.median(
                    m["server_cpu_ms_per_request"] for m in ms
                ),
                "errors": sum(m["errors"] for m in ms),
            }
            for url, ms in runs.items()
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
