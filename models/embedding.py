"""ModelType.EMBEDDING: texts -> L2-normalised float32 vectors, on the CPU EP or the QNN HTP.

Owns the text side of a sentence encoder: tokenization with the manifest's ``tokenizer.json``
(``tokenizers``, one ``encode_batch`` call per request, in Rust), truncation at the model's limit
(reported per text in ``Embeddings.truncated``), batching with length bucketing and attention
masks, and the L2 normalisation, which stays on the host for both targets (docs/qnn.md). The graphs
(``models/prepare/minilm.py``) return the masked mean of the last hidden states.

Batching (in ``models/sentence_encoder.py``, with the graphs): texts are sorted by token count
(stable) and cut into batches of at most ``max_batch`` texts and ``max_batch_tokens`` padded
tokens, cut finer for small requests (see ``CpuEncoder.plan``); each batch is padded to its
longest text, so unsorted input costs little padding (requests of 32 texts of 10-40 words: 6%
extra tokens, against 66% for batches in input order).

Across requests (``sdk/engine/batch_queue.py``): the engine gathers concurrent requests'
texts with ``encode`` and runs them with ``embed_encoded``, one plan over all their texts, and
each request gets its own rows back. One request alone runs exactly as ``embed``.

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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from imagine_edge.models.base import Embeddings, Encoded
from imagine_edge.models.catalog import prepared
from imagine_edge.models.sentence_encoder import (
    DEFAULT_MAX_BATCH,
    Batch,
    TextEncoder,
    open_encoder,
)
from imagine_edge.models.store import Manifest
from imagine_edge.runtime.graph_session import session_summary
from imagine_edge.runtime.session_pool import SESSIONS, SessionPool
from imagine_edge.runtime.targets import Target, place, target_from_env
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import ModelType

__all__ = [
    "EMBEDDING_MODEL",
    "SentenceEmbedder",
    "load_all_minilm_l6_v2",
    "load_embedder",
    "open_embedder",
    "open_on_target",
    "precision_variant",
]

log = logging.getLogger(__name__)

EMBEDDING_MODEL: Final = "all-minilm-l6-v2"
_EPS: Final = np.float32(1e-12)

F32 = npt.NDArray[np.float32]


class SentenceEmbedder:
    """An :class:`~imagine_edge.models.base.Embedder`: a tokenizer and a :class:`TextEncoder`."""

    def __init__(self, tokenizer: Tokenizer, encoder: TextEncoder, *, max_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_tokens)
        self.max_tokens = max_tokens
        self.encoder = encoder
        # Why the model is not on QNN, when target "auto" fell back to the CPU graph.
        self.fallback: str | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def execution_provider(self) -> str:
        """The EP, and whose sessions are shared (memory counted by their first holder)."""
        provider = self.encoder.provider
        if self.fallback and provider != "closed":
            provider += f" (fallback: {self.fallback})"
        leases = self.encoder.leases()
        if not leases or not (others := leases[0].others()):
            return provider
        names = ", ".join(dict.fromkeys(others))
        if leases[0].counts_memory():
            return f"{provider} (sessions shared with {names})"
        return f"{provider} (sessions of {names}, memory counted there)"

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

    def encode(self, texts: Sequence[str]) -> Encoded:
        """The texts' token ids, to embed alone or beside other requests' (``embed_encoded``)."""
        encodings = self.tokenize(texts)
        return Encoded(
            ids=tuple(e.ids for e in encodings),
            truncated=tuple(bool(e.overflowing) for e in encodings),
        )

    def embed(self, texts: Sequence[str]) -> Embeddings:
        """Unit-length float32 vectors ``[len(texts), dim]`` in input order."""
        return self.embed_encoded([self.encode(texts)])[0]

    def embed_encoded(self, parts: Sequence[Encoded]) -> list[Embeddings]:
        """The embeddings of each part (one request's texts), all planned and run together."""
        rows = [ids for part in parts for ids in part.ids]
        vectors = self._pooled(rows)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors /= np.maximum(norms, _EPS)
        out, start = [], 0
        for part in parts:
            stop = start + part.rows
            out.append(
                Embeddings(
                    vectors=vectors[start:stop],
                    prompt_tokens=part.tokens,
                    truncated=part.truncated,
                )
            )
            start = stop
        return out

    def _pooled(self, rows: Sequence[Sequence[int]]) -> F32:
        lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))

        def run(batch: Batch) -> F32:
            ids = np.zeros((len(batch.indices), batch.length), np.int64)
            mask = np.zeros(ids.shape, self.encoder.mask_dtype)
            for row, i in enumerate(batch.indices):
                n = int(lengths[i])
                ids[row, :n] = rows[i]
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
        out = np.empty((len(rows), results[0].shape[1]), np.float32)
        for batch, pooled in zip(plan, results, strict=True):
            out[batch.indices] = pooled
        return out


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
    encoder = open_encoder(manifest.name, v, pool, max_batch=max_batch, bucketing=bucketing)
    tokenizer = Tokenizer.from_file(str(manifest.tokenizer))
    max_tokens = int(v.options.get("max_tokens", manifest.context_length))
    log.info("loaded %s/%s (%s)", manifest.name, variant, encoder.provider)
    return SentenceEmbedder(tokenizer, encoder, max_tokens=max_tokens)


def precision_variant(model_type: ModelType) -> str:
    """The CPU variant named by ``IMAGINE_EDGE_<MODEL TYPE>_PRECISION``: int8 (default, the
    ``cpu`` variant) or float32 (``cpu-fp32``)."""
    name = f"IMAGINE_EDGE_{model_type.value.upper()}_PRECISION"
    precision = os.environ.get(name, "int8")
    if precision not in ("int8", "float32"):
        raise ValueError(f"{name} must be int8 or float32, got {precision!r}")
    return "cpu" if precision == "int8" else "cpu-fp32"


def open_on_target(
    manifest: Manifest, target: Target, cpu_variant: str = "cpu"
) -> SentenceEmbedder:
    """A :class:`SentenceEmbedder` of ``manifest`` on ``target`` (runtime/targets.py): the
    ``qnn`` variant (prepared first for "qnn" when the manifest lacks it) or ``cpu_variant``
    (prepared first when missing)."""
    if target == "qnn" and "qnn" not in manifest.variants:
        manifest = prepared(manifest.name, ["qnn"])

    def qnn() -> SentenceEmbedder:
        return open_embedder(manifest, "qnn")

    def cpu() -> SentenceEmbedder:
        found = manifest
        if cpu_variant not in found.variants:
            found = prepared(manifest.name, [cpu_variant])
        return open_embedder(found, cpu_variant)

    has_qnn = target != "cpu" and "qnn" in manifest.variants
    placed = place(target, manifest.name, qnn=qnn if has_qnn else None, cpu=cpu)
    placed.value.fallback = placed.fallback
    return placed.value


def load_embedder(manifest: Manifest) -> SentenceEmbedder:
    """The catalog loader of embedding models, configured from the environment.

    ``IMAGINE_EDGE_EMBEDDING_TARGET`` = cpu (default) | qnn | auto (the HTP; on x86-64 a
    simulator, about a second per text: opt-in). ``IMAGINE_EDGE_EMBEDDING_PRECISION`` = int8
    (default) | float32 picks the CPU graph. A variant the manifest lacks is prepared first
    (not the QNN one under auto).
    """
    target = target_from_env(ModelType.EMBEDDING)
    return open_on_target(manifest, target, precision_variant(ModelType.EMBEDDING))


def load_all_minilm_l6_v2(variant: str = "cpu") -> SentenceEmbedder:
    """all-MiniLM-L6-v2 from the model store (prepared on first use)."""
    return open_embedder(prepared(EMBEDDING_MODEL, [variant]), variant)
