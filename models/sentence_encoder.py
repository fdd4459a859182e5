"""The encoder graphs of a sentence embedding model: batching, and running them on a target.

Owns :class:`TextEncoder` (padded token ids in, pooled vectors out) and its two forms: the
dynamic-shape CPU graph (:class:`CpuEncoder`, length-bucketed batches, see
:func:`plan_batches`) and the static QNN bucket graphs (:class:`QnnEncoder`, one text per run in
the smallest bucket that fits it), and :func:`open_encoder`, which opens a prepared variant's
graphs through the process's session pool (``runtime/session_pool.py``).

On the CPU, batches run side by side, one thread each (see ``_cpu_sessions``). The QNN graphs
have static shapes: each text runs alone in the smallest sequence bucket that fits it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from imagine_edge.models.store import Variant
from imagine_edge.runtime.graph_session import LoadedSession
from imagine_edge.runtime.ort_names import SessionConfig
from imagine_edge.runtime.providers import QnnOptions
from imagine_edge.runtime.session import SessionFactory, shared_factory
from imagine_edge.runtime.session_pool import SessionLease, SessionPool
from imagine_edge.sdk.errors import InvalidRequestError, ModelRunError

__all__ = [
    "CPU_SESSION_CONFIG",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BATCH_TOKENS",
    "POOLINGS",
    "QNN_OPTIONS",
    "Batch",
    "CpuEncoder",
    "QnnEncoder",
    "TextEncoder",
    "open_encoder",
    "plan_batches",
]

# The HTP runs the graph's input quantization and output dequantization too; by default the
# plugin leaves them to the CPU EP, which strict placement (every node on QNN) refuses.
QNN_OPTIONS: Final = QnnOptions(extra=(("offload_graph_io_quantization", "0"),))
DEFAULT_MAX_BATCH: Final = 16
MIN_BATCH: Final = 4
DEFAULT_MAX_BATCH_TOKENS: Final = 8192
# How token vectors become one vector, for graphs that return token vectors (see CpuEncoder).
POOLINGS: Final = ("mean", "cls")
# onnxruntime's CPU SkipLayerNormalization (its fusion of Add + LayerNormalization) took 347 us
# where the two ops take 53 us ([4, 45, 384], onnxruntime 1.32): without the fusion a batch of
# the int8 graph runs ~10% faster.
CPU_SESSION_CONFIG: Final[dict[str, str]] = {
    SessionConfig.DISABLE_OPTIMIZERS: "SkipLayerNormFusion"
}

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
    """The dynamic-shape CPU graph: length-bucketed batches padded to their longest text.

    The recipe's graphs pool inside (``[b, dim]`` out). A graph used as exported (an ONNX
    export of a BERT-style encoder) may return the token vectors ``[b, length, dim]`` instead:
    they are pooled here by ``pooling`` ("mean" over the mask, or "cls", the first token); its
    ``token_type_ids`` input, if any, is fed zeros (one segment); ``output`` names the graph
    output that is used (default: the first).
    """

    mask_dtype: type[np.generic] = np.int64

    def __init__(
        self,
        lease: SessionLease,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        bucketing: bool = True,
        workers: int = 1,
        pooling: str = "mean",
        output: str | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.output = [output] if output else None
        self.token_types = "token_type_ids" in lease.loaded.input_names
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
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self.token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        out = np.asarray(lease.loaded.run(feeds, self.output)[0], dtype=np.float32)
        if out.ndim == 2:
            return out
        if self.pooling == "cls":
            return np.ascontiguousarray(out[:, 0])
        weights = np.asarray(mask, np.float32)[..., None]
        pooled: F32 = (out * weights).sum(1) / np.maximum(weights.sum(1), 1.0)
        return pooled

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
            out = lease.loaded.run({"input_ids": ids, "attention_mask": mask})[0]
        return np.asarray(out, dtype=np.float32).reshape(1, -1)

    def leases(self) -> list[SessionLease]:
        return list(self.graphs.values())

    def sessions(self) -> list[LoadedSession]:
        return [lease.loaded for lease in self.leases()]

    def close(self) -> None:
        for lease in self.graphs.values():
            lease.release()
        self.graphs = {}


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


def open_encoder(
    holder: str,
    variant: Variant,
    pool: SessionPool,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    bucketing: bool = True,
) -> TextEncoder:
    """The encoder of a prepared ``variant``, its sessions leased from ``pool`` for ``holder``.

    A variant on the ``qnn`` EP opens every bucket graph on the QNN HTP with CPU fallback
    disabled (ModelRunError if any node would not run there); any other runs on the CPU EP.
    """
    if variant.ep == "qnn":
        graphs: dict[int, SessionLease] = {}
        try:
            for role, g in variant.graphs.items():
                if role.startswith("encoder_s"):
                    graphs[int(role.rsplit("_s", 1)[1])] = pool.open(
                        holder, shared_factory(), g.path, "qnn", qnn_options=QNN_OPTIONS
                    )
        except BaseException:
            for lease in graphs.values():
                lease.release()
            raise
        return QnnEncoder(graphs)
    workers, factory = _cpu_sessions()
    lease = pool.open(
        holder, factory, variant.graphs["encoder"].path, "cpu", session_config=CPU_SESSION_CONFIG
    )
    output = variant.options.get("output")
    return CpuEncoder(
        lease,
        max_batch=max_batch,
        bucketing=bucketing,
        workers=workers,
        pooling=str(variant.options.get("pooling", "mean")),
        output=output if isinstance(output, str) else None,
    )
