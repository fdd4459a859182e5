"""ModelType.RERANKER: one relevance score per document for a query, in input order.

Two kinds of reranker satisfy the :class:`~imagine_edge.models.base.Reranker` protocol:

- :class:`BiEncoderReranker` (the default that ships, ``minilm-bi-encoder-reranker``): the query
  and the documents are embedded separately by a sentence embedder and a document's score is
  the cosine of the two unit vectors, in [-1, 1]. Not a cross-encoder: the model never reads the
  query and a document together. Its graphs are the embedding model's (hard links in the
  store), so with both loaded the process holds one set of sessions: see
  :class:`~imagine_edge.runtime.session_pool.SessionPool`.
- :class:`CrossEncoderReranker`: a BERT-style sequence classifier over (query, document) pairs,
  one logit per pair (sigmoid by default, so scores are in (0, 1) as cross-encoder rerank APIs
  report them). No cross-encoder weights ship in a package here; any exported with
  :func:`imagine_edge.models.prepare.minilm.export_cross_encoder` loads with
  :func:`load_cross_encoder`.

Sorting, ``top_n`` and ``return_documents`` are the engine's (``sdk/engine/engine.py``): it gets
``Rankings.scores`` in input order. Scores are deterministic: the same request gives the same
scores bit for bit (fixed batch plan, no randomness), and the bi-encoder embeds the query alone
so its vector never depends on the documents it is ranked against.

Across requests (``sdk/engine/batch_queue.py``): ``encode_rank`` tokenizes a request and
``rank_encoded`` scores several requests in one graph run. Batched beside others, an int8
graph's scores move within its dynamic-quantization tolerance (docs/server.md, Batching); one
request alone scores exactly as ``rank``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from imagine_edge.models.base import Encoded, Rankings
from imagine_edge.models.catalog import prepared
from imagine_edge.models.embedding import (
    SentenceEmbedder,
    open_embedder,
    open_on_target,
    precision_variant,
)
from imagine_edge.models.sentence_encoder import DEFAULT_MAX_BATCH_TOKENS, plan_batches
from imagine_edge.models.store import Manifest
from imagine_edge.runtime.graph_session import LoadedSession
from imagine_edge.runtime.session import shared_factory
from imagine_edge.runtime.targets import Target, target_from_env
from imagine_edge.sdk.errors import InvalidRequestError, ModelRunError
from imagine_edge.sdk.types import ModelType

__all__ = [
    "BI_ENCODER_RERANKER",
    "BiEncoderReranker",
    "CrossEncoderReranker",
    "load_bi_encoder_reranker",
    "load_cross_encoder",
    "load_cross_encoder_reranker",
    "load_minilm_bi_encoder_reranker",
]

log = logging.getLogger(__name__)

BI_ENCODER_RERANKER: Final = "minilm-bi-encoder-reranker"
CROSS_ENCODER_MAX_BATCH: Final = 16

Activation = Literal["sigmoid", "identity"]


def _check_request(query: str, documents: Sequence[str]) -> None:
    if not isinstance(query, str):
        raise InvalidRequestError(f"query must be a string, got {type(query).__name__}")
    for i, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise InvalidRequestError(f"documents[{i}] must be a string, got {type(doc).__name__}")


class BiEncoderReranker:
    """Scores documents by the cosine of their embeddings with the query's (a bi-encoder)."""

    def __init__(self, embedder: SentenceEmbedder) -> None:
        self.embedder = embedder

    @property
    def execution_provider(self) -> str:
        return self.embedder.execution_provider

    def resident_bytes(self) -> int:
        return self.embedder.resident_bytes()

    def close(self) -> None:
        self.embedder.close()

    def rank(self, query: str, documents: Sequence[str]) -> Rankings:
        return self.rank_encoded([self.encode_rank(query, documents)])[0]

    def encode_rank(self, query: str, documents: Sequence[str]) -> Encoded:
        """The query's token ids (row 0), then each document's."""
        _check_request(query, documents)
        return self.embedder.encode([query, *documents])

    def rank_encoded(self, parts: Sequence[Encoded]) -> list[Rankings]:
        """Each part's scores; one request alone embeds its query apart from its documents (so
        the query's vector never depends on them), several run in one plan."""
        halves = [half for part in parts for half in _query_and_documents(part)]
        if len(parts) == 1:
            embedded = [self.embedder.embed_encoded([h])[0] for h in halves if h.rows]
        else:
            embedded = self.embedder.embed_encoded([h for h in halves if h.rows])
        out, at = [], iter(embedded)
        for documents in halves[1::2]:
            q = next(at)
            if not documents.rows:
                out.append(Rankings(scores=np.zeros(0, np.float32), prompt_tokens=q.prompt_tokens))
                continue
            d = next(at)
            scores = (d.vectors @ q.vectors[0]).astype(np.float32)
            out.append(Rankings(scores=scores, prompt_tokens=q.prompt_tokens + d.prompt_tokens))
        return out


def _query_and_documents(part: Encoded) -> tuple[Encoded, Encoded]:
    """A bi-encoder request's rows cut into its query (row 0) and its documents."""
    return (
        Encoded(ids=part.ids[:1], truncated=part.truncated[:1]),
        Encoded(ids=part.ids[1:], truncated=part.truncated[1:]),
    )


class CrossEncoderReranker:
    """A sequence classifier scoring each (query, document) pair with one logit."""

    def __init__(
        self,
        loaded: LoadedSession,
        tokenizer: Tokenizer,
        *,
        max_tokens: int,
        activation: Activation = "sigmoid",
        max_batch: int = CROSS_ENCODER_MAX_BATCH,
    ) -> None:
        if activation not in ("sigmoid", "identity"):
            raise ValueError(f"activation must be 'sigmoid' or 'identity', got {activation!r}")
        outputs = loaded.outputs
        labels = outputs[0].shape[-1] if outputs else None
        if labels != 1:
            raise ModelRunError(
                f"{loaded.path.name}: a cross-encoder needs one logit per pair, its output is "
                f"{outputs[0].shape if outputs else 'missing'}",
                phase="load",
            )
        self.loaded: LoadedSession | None = loaded
        self.inputs = frozenset(loaded.input_names)
        self.tokenizer = tokenizer
        tokenizer.no_padding()
        # Longest-first truncation of the pair, as transformers' tokenizers do by default.
        tokenizer.enable_truncation(max_tokens, strategy="longest_first")
        self.activation = activation
        self.max_batch = max_batch

    @property
    def execution_provider(self) -> str:
        return "closed" if self.loaded is None else self.loaded.describe()

    def resident_bytes(self) -> int:
        return 0 if self.loaded is None else self.loaded.path.stat().st_size

    def close(self) -> None:
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None

    def logits(self, query: str, documents: Sequence[str]) -> tuple[npt.NDArray[np.float32], int]:
        """The raw logit of each (query, document) pair in input order, and the token count."""
        part = self.encode_rank(query, documents)
        return self._logits(part.ids, part.type_ids), part.tokens

    def encode_rank(self, query: str, documents: Sequence[str]) -> Encoded:
        """The token ids of each (query, document) pair, with their segment ids."""
        _check_request(query, documents)
        encodings = self.tokenizer.encode_batch([(query, d) for d in documents])
        return Encoded(
            ids=tuple(e.ids for e in encodings),
            truncated=tuple(bool(e.overflowing) for e in encodings),
            type_ids=tuple(e.type_ids for e in encodings),
        )

    def _logits(
        self, rows: Sequence[Sequence[int]], type_rows: Sequence[Sequence[int]]
    ) -> npt.NDArray[np.float32]:
        if self.loaded is None:
            raise ModelRunError("the reranker is closed")
        lengths = np.fromiter((len(r) for r in rows), np.int64, len(rows))
        out = np.empty(len(rows), np.float32)
        for batch in plan_batches(lengths, self.max_batch, DEFAULT_MAX_BATCH_TOKENS):
            shape = (len(batch.indices), batch.length)
            ids, mask, types = (np.zeros(shape, np.int64) for _ in range(3))
            for row, i in enumerate(batch.indices):
                n = int(lengths[i])
                ids[row, :n] = rows[i]
                types[row, :n] = type_rows[i]
                mask[row, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            run = {k: v for k, v in feeds.items() if k in self.inputs}
            out[batch.indices] = np.asarray(self.loaded.run(run)[0])[:, 0]
        return out

    def rank(self, query: str, documents: Sequence[str]) -> Rankings:
        return self.rank_encoded([self.encode_rank(query, documents)])[0]

    def rank_encoded(self, parts: Sequence[Encoded]) -> list[Rankings]:
        """Each part's scores, all pairs planned and run together."""
        rows = [ids for part in parts for ids in part.ids]
        logits = self._logits(rows, [t for part in parts for t in part.type_ids])
        if self.activation == "sigmoid":
            logits = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
        out, start = [], 0
        for part in parts:
            scores = logits[start : start + part.rows]
            out.append(Rankings(scores=scores, prompt_tokens=part.tokens))
            start += part.rows
        return out


def load_cross_encoder(
    folder: str | Path,
    *,
    target: Target = "cpu",
    activation: Activation = "sigmoid",
    max_batch: int = CROSS_ENCODER_MAX_BATCH,
) -> CrossEncoderReranker:
    """A cross-encoder from ``folder``: ``model.onnx``, ``tokenizer.json``, ``cross_encoder.json``.

    The folder is what :func:`imagine_edge.models.prepare.minilm.export_cross_encoder` writes
    (``cross_encoder.json`` holds ``max_tokens``).
    """
    root = Path(folder)
    missing = [n for n in ("model.onnx", "tokenizer.json") if not (root / n).is_file()]
    if missing:
        raise ModelRunError(f"cross-encoder folder {root} lacks {', '.join(missing)}", "load")
    facts_file = root / "cross_encoder.json"
    facts = json.loads(facts_file.read_text(encoding="utf-8")) if facts_file.is_file() else {}
    loaded = shared_factory().create(root / "model.onnx", target=target)
    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    return CrossEncoderReranker(
        loaded,
        tokenizer,
        max_tokens=int(facts.get("max_tokens", 512)),
        activation=activation,
        max_batch=max_batch,
    )


def load_cross_encoder_reranker(manifest: Manifest) -> CrossEncoderReranker:
    """The loader of prepared cross-encoders (a user's folder, ``models/formats/
    cross_encoder.py``): the ``cpu`` variant's graph on the CPU EP (no QNN variant exists)."""
    variant = manifest.variant("cpu")
    activation = variant.options.get("activation", "sigmoid")
    if activation not in ("sigmoid", "identity"):
        raise ModelRunError(f"{manifest.name}: unknown activation {activation!r}", "load")
    loaded = shared_factory().create(variant.graphs["cross_encoder"].path, target="cpu")
    try:
        return CrossEncoderReranker(
            loaded,
            Tokenizer.from_file(str(manifest.tokenizer)),
            max_tokens=int(variant.options.get("max_tokens", manifest.context_length)),
            activation="sigmoid" if activation == "sigmoid" else "identity",
        )
    except BaseException:
        loaded.close()
        raise


def load_bi_encoder_reranker(manifest: Manifest) -> BiEncoderReranker:
    """The catalog loader of bi-encoder rerankers, configured from the environment.

    ``IMAGINE_EDGE_RERANKER_TARGET`` = cpu (default) | qnn | auto and
    ``IMAGINE_EDGE_RERANKER_PRECISION`` = int8 (default) | float32, as for embeddings. A variant
    the manifest lacks is prepared first (not the QNN one under auto).
    """
    target = target_from_env(ModelType.RERANKER)
    return BiEncoderReranker(
        open_on_target(manifest, target, precision_variant(ModelType.RERANKER))
    )


def load_minilm_bi_encoder_reranker(variant: str = "cpu") -> BiEncoderReranker:
    """The MiniLM bi-encoder reranker from the model store (prepared on first use)."""
    return BiEncoderReranker(open_embedder(prepared(BI_ENCODER_RERANKER, [variant]), variant))
