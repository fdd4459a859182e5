"""ModelType.EMBEDDING: texts -> L2-normalised float32 vectors, on the CPU EP or the QNN HTP.

Owns the text side of a sentence encoder: tokenization with the manifest's ``tokenizer.json``
(``tokenizers``, one ``encode_batch`` call per request, in Rust), truncation at the model's limit
(reported per text in ``Embeddings.truncated``), batching with length bucketing and attention
masks, and the L2 normalisation, which stays on the host for both targets (QNN.md). The graphs
(``models/prepare/minilm.py``) return the masked mean of the last hidden states.

Batching: texts are sorted by token count (stable) and cut into batches of at most
``max_batch`` texts and ``max_batch_tokens`` padded tokens, cut finer for small requests (see
``CpuEncoder.plan``); each batch is padded to its longest text, so unsorted input costs little
padding (requests of 32 texts of 10-40 words: 6% extra tokens, against 66% for batches in input
order). On the CPU, batches run side by side, one thread each (see
``_cpu_sessions``). The QNN graphs have static shapes: each text runs alone in the smallest
sequence bucket that fits it.

Sessions are shared: every embedder of the process on the same graph file (the bi-encoder
reranker's store folder hard-links the embedding model's files) holds a lease on one session
(``runtime/session_pool.py``), opened by the first and closed when the last releases it. The
first holder counts the session's memory in ``resident_bytes``; the others report 0 and say
whose sessions they share in ``execution_provider``, so health never counts a session twice.

Invariants:
- ``vectors[i]`` belongs to ``texts[i]``, whatever order the batches ran in.
- Padding never changes a vector: padded positions are masked in attention and pooling (and
  zeroed in the residual stream). On the int8 CPU graph a vector still depends slightly on the
  other texts of its batch through the per-batch dynamic quantization scales (cosine > 0.995 to
  the same text embedded alone, seen on 2-token texts; > 0.998 on sentences); identical requests
  give identical vectors.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from imagine_edge.models.base import Embeddings
from imagine_edge.models.store import Manifest, prepared
from imagine_edge.runtime.providers import QnnOptions
from imagine_edge.runtime.session import (
    LoadedSession,
    SessionFactory,
    session_summary,
    shared_factory,
)
from imagine_edge.runtime.session_pool import SESSIONS, SessionLease, SessionPool
from imagine_edge.sdk.errors import InvalidRequestError, ModelRunError

__all__ = [
    "EMBEDDING_MODEL",
    "QNN_OPTIONS",
    "Batch",
    "CpuEncoder",
    "QnnEncoder",
    "SentenceEmbedder",
    "TextEncoder",
    "load_all_minilm_l6_v2",
    "load_embedder",
    "open_embedder",
    "plan_batches",
    "variant_from_env",
]

log = logging.getLogger(__name__)

EMBEDDING_MODEL: Final = "all-minilm-l6-v2"
# The HTP runs the graph's input quantization and output dequantization too; by default the
# plugin leaves them to the CPU EP, which strict placement (every node on QNN) refuses.
QNN_OPTIONS: Final = QnnOptions(extra=(("offload_graph_io_quantization", "0"),))
DEFAULT_MAX_BATCH: Final = 16
MIN_BATCH: Final = 4
DEFAULT_MAX_BATCH_TOKENS: Final = 8192
# onnxruntime's CPU SkipLayerNormalization (its fusion of Add + LayerNormalization) took 347 us
# where the two ops take 53 us ([4, 45, 384], onnxruntime 1.32): without the fusion a batch of
# the int8 graph runs ~10% faster.
CPU_SESSION_CONFIG: Final = {"optimization.disable_specified_optimizers": "SkipLayerNormFusion"}
_EPS: Final = np.float32(1e-12)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Batch:
    """Texts ``indices`` (into the request) padded to ``length`` tokens."""

    indices: npt.NDArray[np.intp]
    length: int


def plan_batches(
    lengths: npt.NDArray[np.int64], max_batch: int, max_batch_tokens: int, *, sort: bool = True
) -> list[Batch]:
    """Batches of at most ``max_batch`` texts and ``max_batch_tokens`` padded tokens.

    With ``sort``, texts go by token count (stable), so a batch's texts have similar lengths and
    padding to the longest costs little; a text longer than the token cap runs alone.
    """
    order = np.argsort(lengths, kind="stable") if sort else np.arange(len(lengths))
    batches: list[Batch] = []
    start = 0
    while start < len(order):
        stop, longest = start, 0
        while stop < len(order) and stop - start < max_batch:
            grown = max(longest, int(lengths[order[stop]]))
            if stop > start and grown * (stop - start + 1) > max_batch_tokens:
                break
            longest, stop = grown, stop + 1
        batches.append(Batch(order[start:stop], longest))
        start = stop
    return batches


class TextEncoder(Protocol):
    """A graph set that turns padded token ids into pooled (not normalised) vectors."""

    @property
    def provider(self) -> str: ...

    @property
    def mask_dtype(self) -> type[np.generic]: ...

    @property
    def workers(self) -> int:
        """How many batches may run at once (each on one thread)."""
        ...

    def plan(self, lengths: npt.NDArray[np.int64]) -> list[Batch]:
        """Batches covering every index of ``lengths`` (token counts) exactly once."""
        ...

    def run(self, ids: I64, mask: npt.NDArray[np.generic]) -> F32:
        """``[b, length]`` ids and 0/1 mask -> ``[b, dim]`` masked means."""
        ...

    def leases(self) -> list[SessionLease]:
        """The encoder's holds on its (possibly shared) sessions; empty once closed."""
        ...

    def sessions(self) -> list[LoadedSession]: ...

    def close(self) -> None:
        """Release the leases (a session closes with its last lease)."""
        ...


class CpuEncoder:
    """The dynamic-shape CPU graph: length-bucketed batches padded to their longest text."""

    mask_dtype: type[np.generic] = np.int64

    def __init__(
        self,
        lease: SessionLease,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        bucketing: bool = True,
        workers: int = 1,
    ) -> None:
        if max_batch < 1 or max_batch_tokens < 1 or workers < 1:
            raise ValueError(
                "max_batch, max_batch_tokens and workers must be >= 1, got "
                f"{max_batch}, {max_batch_tokens}, {workers}"
            )
        self.lease: SessionLease | None = lease
        self.max_batch, self.max_batch_tokens = max_batch, max_batch_tokens
        # Off only to measure what sorting saves: batches then keep the input order.
        self.bucketing = bucketing
        self.workers = workers

    @property
    def provider(self) -> str:
        return "closed" if self.lease is None else self.lease.loaded.describe()

    def plan(self, lengths: npt.NDArray[np.int64]) -> list[Batch]:
        # The int8 graph costs the same per sentence from 4 to 16 texts a batch (measured), so
        # a request is cut finer rather than coarser: sorted batches of 4 pad 6% where batches
        # of 16 pad 29% (32 texts of 10-40 words); each worker gets several, and any work at all.
        n = len(lengths)
        size = min(self.max_batch, max(MIN_BATCH, -(-n // (4 * self.workers))))
        size = max(1, min(size, -(-n // self.workers)))
        return plan_batches(lengths, size, self.max_batch_tokens, sort=self.bucketing)

    def run(self, ids: I64, mask: npt.NDArray[np.generic]) -> F32:
        lease = self.lease
        if lease is None:
            raise ModelRunError("the embedding model is closed")
        out = lease.loaded.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return np.asarray(out, dtype=np.float32)

    def leases(self) -> list[SessionLease]:
        return [] if self.lease is None else [self.lease]

    def sessions(self) -> list[LoadedSession]:
        return [lease.loaded for lease in self.leases()]

    def close(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None


class QnnEncoder:
    """Static graphs on the QNN HTP, batch 1, one per sequence bucket (all opened at load)."""

    mask_dtype: type[np.generic] = np.float32
    workers = 1  # the HTP runs one graph at a time

    def __init__(self, graphs: dict[int, SessionLease]) -> None:
        if not graphs:
            raise ValueError("QnnEncoder needs at least one bucket graph")
        self.graphs: dict[int, SessionLease] = dict(sorted(graphs.items()))

    @property
    def provider(self) -> str:
        return next(iter(self.graphs.values())).loaded.describe() if self.graphs else "closed"

    def bucket(self, length: int) -> int:
        """The smallest bucket holding ``length`` tokens."""
        for size in self.graphs:
            if length <= size:
                return size
        raise InvalidRequestError(
            f"{length} tokens exceed the largest QNN bucket ({max(self.graphs)})"
        )

    def plan(self, lengths: npt.NDArray[np.int64]) -> list[Batch]:
        return [Batch(np.array([i]), self.bucket(int(n))) for i, n in enumerate(lengths)]

    def run(self, ids: I64, mask: npt.NDArray[np.generic]) -> F32:
        if not self.graphs:
            raise ModelRunError("the embedding model is closed")
        lease = self.graphs[ids.shape[1]]
        with lease.lock:  # another model may share this session
            out = lease.loaded.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return np.asarray(out, dtype=np.float32).reshape(1, -1)

    def leases(self) -> list[SessionLease]:
        return list(self.graphs.values())

    def sessions(self) -> list[LoadedSession]:
        return [lease.loaded for lease in self.leases()]

    def close(self) -> None:
        for lease in self.graphs.values():
            lease.release()
        self.graphs = {}


class SentenceEmbedder:
    """An :class:`~imagine_edge.models.base.Embedder`: a tokenizer and a :class:`TextEncoder`."""

    def __init__(self, tokenizer: Tokenizer, encoder: TextEncoder, *, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.max_tokens = max_tokens
        self.encoder = encoder
        self._pool: ThreadPoolExecutor | None = None

    @property
    def execution_provider(self) -> str:
        """The EP, and whose sessions are shared (memory counted by their first holder)."""
        leases = self.encoder.leases()
        if not leases or not (others := leases[0].others()):
            return self.encoder.provider
        names = ", ".join(dict.fromkeys(others))
        if leases[0].counts_memory():
            return f"{self.encoder.provider} (sessions shared with {names})"
        return f"{self.encoder.provider} (sessions of {names}, memory counted there)"

    def resident_bytes(self) -> int:
        """The graph files' size for the sessions this embedder counts (see the module doc):
        weights dominate a session's memory (measured RSS is ~1.4x the int8 file: packed
        weights and activation buffers come on top)."""
        return sum(
            lease.loaded.path.stat().st_size
            for lease in self.encoder.leases()
            if lease.counts_memory() and lease.loaded.path.is_file()
        )

    def close(self) -> None:
        self.encoder.close()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def describe_sessions(self) -> list[dict[str, object]]:
        """Where each graph runs (provider, node assignment, EPContext cache), for reports."""
        return [session_summary(s) for s in self.encoder.sessions()]

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        """Token ids with special tokens, truncated at ``max_tokens`` (overflow kept aside)."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidRequestError(f"input[{i}] must be a string, got {type(text).__name__}")
        return list(self.tokenizer.encode_batch(list(texts)))

    def embed(self, texts: Sequence[str]) -> Embeddings:
        """Unit-length float32 vectors ``[len(texts), dim]`` in input order."""
        encodings = self.tokenize(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), np.int64, len(encodings))
        truncated = tuple(bool(e.overflowing) for e in encodings)
        vectors = self._pooled(encodings, lengths)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.maximum(norms, _EPS)
        return Embeddings(vectors=vectors, prompt_tokens=int(lengths.sum()), truncated=truncated)

    def _pooled(self, encodings: Sequence[Encoding], lengths: npt.NDArray[np.int64]) -> F32:
        def run(batch: Batch) -> F32:
            ids = np.zeros((len(batch.indices), batch.length), np.int64)
            mask = np.zeros(ids.shape, self.encoder.mask_dtype)
            for row, i in enumerate(batch.indices):
                n = int(lengths[i])
                ids[row, :n] = encodings[i].ids
                mask[row, :n] = 1
            return self.encoder.run(ids, mask)

        plan = self.encoder.plan(lengths)
        if len(plan) > 1 and self.encoder.workers > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.encoder.workers, "embedding")
            results = list(self._pool.map(run, plan))  # onnxruntime releases the GIL
        else:
            results = [run(b) for b in plan]
        if not results:
            return np.zeros((0, 0), np.float32)
        out = np.empty((len(encodings), results[0].shape[1]), np.float32)
        for batch, pooled in zip(plan, results, strict=True):
            out[batch.indices] = pooled
        return out


_serial: SessionFactory | None = None
_serial_lock = threading.Lock()


def _cpu_sessions() -> tuple[int, SessionFactory]:
    """How many batches run at once, and the factory of the CPU session.

    Batches run side by side, each on one thread of its own, rather than one after another on
    the shared factory's intra-op pool: each of the graph's ~400 ops then needs no hand-off
    between threads (on 2 cores, one thread per batch cost 15% less CPU per sentence than two
    threads per op). The sessions come from a factory with one intra-op thread and as many
    workers as the shared factory's threads. With a process-wide pool (which forbids
    per-session threads) batches run one at a time on the shared factory.
    """
    global _serial
    shared = shared_factory()
    if shared.shared_pool or shared.intra_op_threads == 1:
        return 1, shared
    with _serial_lock:
        if _serial is None:
            _serial = SessionFactory(1, shared_pool=False)
    return shared.intra_op_threads, _serial


def open_embedder(
    manifest: Manifest,
    variant: str = "cpu",
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    bucketing: bool = True,
    sessions: SessionPool | None = None,
) -> SentenceEmbedder:
    """A :class:`SentenceEmbedder` on ``manifest``'s prepared ``variant``.

    ``cpu`` (int8) and ``cpu-fp32`` run on the CPU EP; ``qnn`` opens every bucket graph on the
    QNN HTP with CPU fallback disabled (ModelRunError if any node would not run there). Sessions
    come from ``sessions`` (default ``SESSIONS``): a graph another model of the process has open
    is not opened again.
    """
    v = manifest.variant(variant)
    pool = SESSIONS if sessions is None else sessions
    encoder: TextEncoder
    if v.ep == "qnn":
        graphs: dict[int, SessionLease] = {}
        try:
            for role, g in v.graphs.items():
                if role.startswith("encoder_s"):
                    graphs[int(role.rsplit("_s", 1)[1])] = pool.open(
                        manifest.name, shared_factory(), g.path, "qnn", qnn_options=QNN_OPTIONS
                    )
        except BaseException:
            for lease in graphs.values():
                lease.release()
            raise
        encoder = QnnEncoder(graphs)
    else:
        workers, factory = _cpu_sessions()
        lease = pool.open(
            manifest.name,
            factory,
            v.graphs["encoder"].path,
            "cpu",
            session_config=CPU_SESSION_CONFIG,
        )
        encoder = CpuEncoder(lease, max_batch=max_batch, bucketing=bucketing, workers=workers)
    tokenizer = Tokenizer.from_file(str(manifest.tokenizer))
    max_tokens = int(v.options.get("max_tokens", manifest.context_length))
    log.info("loaded %s/%s (%s)", manifest.name, variant, encoder.provider)
    return SentenceEmbedder(tokenizer, encoder, max_tokens=max_tokens)


def variant_from_env(prefix: str) -> str:
    """The variant named by ``<prefix>_TARGET`` (cpu | qnn) and ``<prefix>_PRECISION``."""
    target = os.environ.get(f"{prefix}_TARGET", "cpu")
    precision = os.environ.get(f"{prefix}_PRECISION", "int8")
    if target not in ("cpu", "qnn"):
        raise ValueError(f"{prefix}_TARGET must be cpu or qnn, got {target!r}")
    if precision not in ("int8", "float32"):
        raise ValueError(f"{prefix}_PRECISION must be int8 or float32, got {precision!r}")
    if target == "qnn":
        return "qnn"
    return "cpu" if precision == "int8" else "cpu-fp32"


def load_embedder(manifest: Manifest) -> SentenceEmbedder:
    """The catalog loader of embedding models, configured from the environment.

    ``IMAGINE_EDGE_EMBEDDING_TARGET`` = cpu (default) | qnn (the HTP; on x86-64 a simulator,
    about a second per text: opt-in). ``IMAGINE_EDGE_EMBEDDING_PRECISION`` = int8 (default) |
    float32 picks the CPU graph. A variant the manifest lacks is prepared first.
    """
    variant = variant_from_env("IMAGINE_EDGE_EMBEDDING")
    if variant not in manifest.variants:
        manifest = prepared(manifest.name, [variant])
    return open_embedder(manifest, variant)


def load_all_minilm_l6_v2(variant: str = "cpu") -> SentenceEmbedder:
    """all-MiniLM-L6-v2 from the model store (prepared on first use)."""
    return open_embedder(prepared(EMBEDDING_MODEL, [variant]), variant)
