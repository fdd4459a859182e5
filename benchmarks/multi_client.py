"""The multi-client LLM scenario over HTTP: N clients streaming at once, against one server.

For each client count N (``llm_concurrency``, default 1, 2, 4, 8) N threads each stream
completions back to back (a closed loop) over HTTP until the point's deadline, every request
with a fresh prompt of ``llm_multi_prompt_tokens`` tokens, ``llm_max_tokens`` sampled tokens
(end of sequence ignored) and the same sampling as every LLM peer. At the deadline the streams
still running are closed (the server cancels them): a point never outlasts its share of
``--duration``. Measured by the client, per request:

- TTFT: request sent to the first text chunk;
- TPOT: (last chunk - first chunk) / (tokens - 1), for the requests that finished;

and per point the aggregate tokens/s: every token received inside the window (finished and cut
streams alike) over the window's length.

The same code drives our server (the Imagine route ``/api/v2/completions``) and llama.cpp's
llama-server (its ``/completion``, started with ``-np N``: N slots, one per client; see
``benchmarks/llama_server.py``); only the request body and the chunk reader differ, in a
:class:`Dialect`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from imagine_edge.benchmarks._peer_engines import LLM_SAMPLING
from imagine_edge.benchmarks.scenario_base import (
    BenchConfig,
    Point,
    Progress,
    prompt_of,
    sample_metrics,
)

__all__ = [
    "IMAGINE",
    "LLAMA_SERVER",
    "Dialect",
    "client_point",
    "multi_client_points",
    "warm_up",
]


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one server family is asked for a stream and how its chunks read."""

    name: str
    path: str
    body: Callable[[str, str, int], dict[str, Any]]  # (model, prompt, max_tokens) -> JSON
    # One decoded event -> (text, token count the server reports at its end, or None).
    read: Callable[[dict[str, Any]], tuple[str, int | None]]


def _imagine_body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "prompt": prompt,
        "stream": True,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        **LLM_SAMPLING,
    }


def _imagine_read(event: dict[str, Any]) -> tuple[str, int | None]:
    choices = event.get("choices") or [{}]
    text = ((choices[0] or {}).get("delta") or {}).get("content") or ""
    usage = event.get("usage") or {}
    return text, usage.get("completion_tokens")


def _llama_body(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "stream": True,
        "n_predict": max_tokens,
        "ignore_eos": True,
        "cache_prompt": False,  # every prompt is new anyway; say so
        "temperature": LLM_SAMPLING["temperature"],
        "top_k": LLM_SAMPLING["top_k"],
        "top_p": LLM_SAMPLING["top_p"],
        "repeat_penalty": LLM_SAMPLING["repetition_penalty"],
    }


def _llama_read(event: dict[str, Any]) -> tuple[str, int | None]:
    done = event.get("stop") is True
    return str(event.get("content") or ""), event.get("tokens_predicted") if done else None


IMAGINE = Dialect("imagine-edge", "/api/v2/completions", _imagine_body, _imagine_read)
LLAMA_SERVER = Dialect("llama-server", "/completion", _llama_body, _llama_read)


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def _hang_up(response: Any) -> None:
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _one(
    http: Any, root: str, dialect: Dialect, model: str, prompt: str, config: BenchConfig, end: float
) -> dict[str, float]:
    """One streamed request, closed at ``end`` if it is still running."""
    start = time.perf_counter()
    arrivals: list[float] = []
    reported: int | None = None
    body = dialect.body(model, prompt, config.llm_max_tokens)
    # Waiting for the headers is bounded by the point's end too (a queued request's headers
    # may come late).
    timeout = httpx.Timeout(60.0, connect=5.0, read=max(0.05, end - start))
    try:
        with http.stream("POST", root + dialect.path, json=body, timeout=timeout) as response:
            if response.status_code != 200:
                raise RuntimeError(f"{dialect.name} answered {response.status_code}")
            # A server that sends nothing (a long prefill, a stall) must not hold the point
            # past its end: at ``end`` the socket is shut down, which wakes the blocked read.
            timer = threading.Timer(max(0.0, end - time.perf_counter()), _hang_up, (response,))
            timer.start()
            try:
                for event in _events(response.iter_lines()):
                    text, count = dialect.read(event)
                    now = time.perf_counter()
                    if text:
                        arrivals.append(now)
                    if count is not None:
                        reported = count
                    if now >= end:
                        break
            finally:
                timer.cancel()
    except httpx.HTTPError:
        if time.perf_counter() < end:
            raise  # a real failure, not the point's end
    finished = reported is not None
    tokens = reported if finished and reported else len(arrivals)
    sample = {"tokens": float(tokens), "finished": float(finished)}
    if arrivals:
        sample["ttft_s"] = arrivals[0] - start
        if finished and tokens > 1 and arrivals[-1] > arrivals[0]:
            sample["tpot_s"] = (arrivals[-1] - arrivals[0]) / (tokens - 1)
            sample["e2e_s"] = arrivals[-1] - start
    return sample


def client_point(
    root: str,
    dialect: Dialect,
    model: str,
    clients: int,
    seconds: float,
    config: BenchConfig,
    progress: Progress,
) -> Point:
    prompts = itertools.count(1000 * clients)  # fresh prompts: no prefix for a cache to reuse
    samples: list[dict[str, float]] = []
    errors = 0
    lock = threading.Lock()
    start = time.perf_counter()
    end = start + seconds

    def client() -> None:
        nonlocal errors
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0)) as http:
            while time.perf_counter() < end:
                prompt = prompt_of(config.llm_multi_prompt_tokens, next(prompts))
                try:
                    sample = _one(http, root, dialect, model, prompt, config, end)
                except Exception:  # a refused (429) or broken stream is counted, not fatal
                    with lock:
                        errors += 1
                    time.sleep(0.05)
                    continue
                with lock:
                    samples.append(sample)
                    progress.update()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    point = Point(
        label=f"{clients} clients",
        params={
            "concurrency": clients,
            "prompt_tokens": config.llm_multi_prompt_tokens,
            "max_tokens": config.llm_max_tokens,
        },
        metrics=sample_metrics([{k: v for k, v in s.items() if k.endswith("_s")} for s in samples]),
        errors=errors,
    )
    tokens = sum(s["tokens"] for s in samples)
    point.throughput = {
        "aggregate_tokens_per_s": tokens / wall if wall else 0.0,
        "finished_requests": float(sum(s["finished"] for s in samples)),
    }
    return point


def _short_request(root: str, dialect: Dialect, model: str, tokens: int) -> dict[str, float]:
    """One request of ``tokens`` on a 16-token prompt, outside every point's window."""
    with httpx.Client(timeout=120.0) as http:
        short = BenchConfig(llm_max_tokens=tokens)
        return _one(http, root, dialect, model, prompt_of(16), short, time.perf_counter() + 120.0)


def warm_up(root: str, dialect: Dialect, model: str, config: BenchConfig) -> None:
    """One short request (loads the model): outside every point's window."""
    _short_request(root, dialect, model, 4)


def seconds_per_token(root: str, dialect: Dialect, model: str, tokens: int = 32) -> float:
    """One client's decode time per token on a short prompt (a probe, outside every point)."""
    return _short_request(root, dialect, model, tokens).get("tpot_s", float("inf"))


def multi_client_points(
    root: str,
    dialect: Dialect,
    model: str,
    config: BenchConfig,
    progress: Progress,
    point_seconds: float,
    before_point: Callable[[int], str] | None = None,
) -> list[Point]:
    """One point per client count; ``before_point(N)`` may (re)start the server, returning its
    root (llama-server needs ``-np N``)."""
    points = []
    for clients in config.llm_concurrency:
        if before_point is not None:
            root = before_point(clients)
            warm_up(root, dialect, model, config)
        points.append(client_point(root, dialect, model, clients, point_seconds, config, progress))
    return points
