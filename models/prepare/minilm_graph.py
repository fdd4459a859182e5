"""MiniLM graph export: our BertModel forward in torch, exported to ONNX, and the checks that
compare two exported graphs on real sentences.

The forward is ours rather than transformers', so the graphs hold plain ops: an additive -30
attention mask (no Range/IsNaN/Where mask building), token type 0 folded into the position table,
query/key/value as one matmul. Two shapes:

- dynamic (CPU): ``input_ids``/``attention_mask`` int64 ``[batch, sequence]`` -> ``embedding
  [batch, 384]``, the mean over unmasked tokens; padded rows of the residual stream are zeroed.
  Optional outlier bypasses (:mod:`.minilm_int8`) route chosen input channels of a matmul
  through a small separate one.
- static (QNN): batch 1 with 2-D activations ``[S, hidden]`` (every linear is a Gemm) and a
  float mask ``[1, S]``.

Pooled vectors are not normalised: the host does that. torch and transformers are imported inside
the functions (preparation-time dependencies only).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from imagine_edge.models.store import GraphFile, Manifest

if TYPE_CHECKING:
    import torch

__all__ = [
    "MASK_VALUE",
    "MAX_TOKENS",
    "MIN_COSINE",
    "ONNX_OPSET",
    "encoder_class",
    "export",
    "feeds",
    "load_bert",
    "load_tokenizer",
    "min_cosine",
]

# sentence-transformers' max_seq_length for this model (sentence_bert_config.json): it was trained
# on at most 256 word pieces, although its position table has 512 rows.
MAX_TOKENS: Final = 256
# Additive attention mask: exp(-30) is 1e-13, as good as -inf in float, and small enough not to
# set the 16-bit quantization range of the attention scores on the HTP (docs/qnn.md).
MASK_VALUE: Final = -30.0
# The least cosine a quantized graph may have to the float one on any held-out text.
MIN_COSINE: Final = 0.99
ONNX_OPSET: Final = 17


def encoder_class() -> type[Any]:
    """The export module, defined on first use (torch is a preparation-time import)."""
    import torch

    class Encoder(torch.nn.Module):
        """Our BertModel forward with mean pooling.

        ``static``: batch 1 with 2-D activations ``[S, hidden]`` and a float mask. Per matmul
        input (layer, "qkv_in" | "ffn_in" | "ffn_out_in"), for the int8 graph:

        - ``outliers``: the input channels that bypass the main matmul through a small one
          (the main one sees them as zeros);
        - ``smoothing``: a scale per input channel, ``s``: the main matmul gets ``x / s`` and
          weights ``W * s`` (the same product in float; outlier channels scaled down).
        """

        pos_type: torch.Tensor

        def __init__(
            self,
            bert: Any,
            *,
            static: bool,
            outliers: Mapping[tuple[int, str], torch.Tensor],
            smoothing: Mapping[tuple[int, str], torch.Tensor] | None = None,
        ) -> None:
            super().__init__()
            self.bert, self.static = bert, static
            self.heads = int(bert.config.num_attention_heads)
            self.head_dim = int(bert.config.hidden_size) // self.heads
            emb = bert.embeddings
            # Single sentences: token type 0 everywhere, folded into the position table.
            table = emb.position_embeddings.weight + emb.token_type_embeddings.weight[0]
            self.register_buffer("pos_type", table.detach().clone())
            # Query, key and value as one matmul: one quantization of x and one GEMM, not three.
            self.qkv = torch.nn.ModuleList()
            for layer in bert.encoder.layer:
                att = layer.attention.self
                fused = torch.nn.Linear(att.query.in_features, 3 * att.query.out_features)
                with torch.no_grad():
                    fused.weight.copy_(
                        torch.cat([att.query.weight, att.key.weight, att.value.weight])
                    )
                    fused.bias.copy_(torch.cat([att.query.bias, att.key.bias, att.value.bias]))
                self.qkv.append(fused)
            # Buffer names per (layer, kind): (keep, idx) for outliers, (1/s, W*s) for smoothing.
            self.outliers: dict[tuple[int, str], tuple[str, str]] = {}
            self.smoothed: dict[tuple[int, str], tuple[str, str]] = {}
            for (layer, kind), idx in outliers.items():
                keep = torch.ones(self.site(layer, kind).in_features)
                keep[idx] = 0.0
                names = (f"keep_{layer}_{kind}", f"idx_{layer}_{kind}")
                self.register_buffer(names[0], keep)
                self.register_buffer(names[1], idx)
                self.outliers[(layer, kind)] = names
            for (layer, kind), scale in (smoothing or {}).items():
                weight = self.site(layer, kind).weight.detach()
                names = (f"unscale_{layer}_{kind}", f"scaled_{layer}_{kind}")
                self.register_buffer(names[0], 1.0 / scale)
                self.register_buffer(names[1], weight * scale)
                self.smoothed[(layer, kind)] = names
            # A new Module is in training mode, and so would be the BertModel it wraps once
            # the exporter restores this module's mode: dropout would then be on whenever the
            # weights run in torch after an export (the outlier calibration did, picking
            # different channels each time).
            self.eval()

        def site(self, layer: int, kind: str) -> Any:
            """The linear layer reading matmul input ``kind`` of ``layer``."""
            block = self.bert.encoder.layer[layer]
            sites = {
                "qkv_in": self.qkv[layer],
                "ffn_in": block.intermediate.dense,
                "ffn_out_in": block.output.dense,
            }
            return sites[kind]

        def linear(self, layer: int, kind: str, x: torch.Tensor) -> torch.Tensor:
            """``site(layer, kind)(x)``, through the outlier bypass or smoothing if any."""
            lin = self.site(layer, kind)
            if (layer, kind) in self.smoothed:
                unscale, scaled = (getattr(self, n) for n in self.smoothed[(layer, kind)])
                return torch.nn.functional.linear(x * unscale, scaled, lin.bias)
            if (layer, kind) not in self.outliers:
                return lin(x)  # type: ignore[no-any-return]
            keep, idx = (getattr(self, n) for n in self.outliers[(layer, kind)])
            main, side = x * keep, x.index_select(-1, idx)
            return lin(main) + torch.matmul(side, lin.weight[:, idx].t())  # type: ignore[no-any-return]

        def split_heads(self, t: torch.Tensor) -> torch.Tensor:
            if self.static:  # [S, hidden] -> [heads, S, head_dim]
                return t.reshape(t.shape[0], self.heads, self.head_dim).transpose(0, 1)
            return t.reshape(t.shape[0], t.shape[1], self.heads, self.head_dim).transpose(1, 2)

        def merge_heads(self, t: torch.Tensor) -> torch.Tensor:
            if self.static:
                return t.transpose(0, 1).reshape(t.shape[1], -1)
            t = t.transpose(1, 2)
            return t.reshape(t.shape[0], t.shape[1], -1)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            seq = input_ids.shape[1]
            emb = self.bert.embeddings
            ids = input_ids[0] if self.static else input_ids
            x: torch.Tensor = emb.LayerNorm(emb.word_embeddings(ids) + self.pos_type[:seq])
            mask = attention_mask.to(x.dtype)
            bias = ((1.0 - mask) * MASK_VALUE).unsqueeze(-2)  # [B, 1, S] or [1, 1, S]
            if not self.static:
                bias = bias.unsqueeze(1)  # [B, 1, 1, S]
            scale = 1.0 / math.sqrt(self.head_dim)
            # Zero the padded rows of the residual stream (dynamic graph): real rows never read
            # them (masked keys), and garbage there would widen the int8 activation ranges.
            keep_rows = None if self.static else mask.unsqueeze(-1)
            if keep_rows is not None:
                x = x * keep_rows
            for i, layer in enumerate(self.bert.encoder.layer):
                qkv = self.linear(i, "qkv_in", x)
                width = qkv.shape[-1] // 3
                q, k, v = (self.split_heads(t) for t in torch.split(qkv, width, dim=-1))
                probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale + bias, -1)
                out = layer.attention.output
                x = out.LayerNorm(out.dense(self.merge_heads(torch.matmul(probs, v))) + x)
                if keep_rows is not None:
                    x = x * keep_rows
                h = layer.intermediate.intermediate_act_fn(self.linear(i, "ffn_in", x))
                f = self.linear(i, "ffn_out_in", h)
                x = layer.output.LayerNorm(f + x)
                if keep_rows is not None:
                    x = x * keep_rows
            if self.static:  # a [1, S] x [S, hidden] product: a plain MatMul on the HTP
                return torch.matmul(mask / mask.sum(-1, keepdim=True), x)
            return x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)  # padded rows are zero

    return Encoder


def load_bert(hf: Path) -> Any:
    import torch
    from transformers import BertModel

    loader: Any = BertModel  # transformers' from_pretrained is untyped
    return loader.from_pretrained(str(hf), dtype=torch.float32).eval()


def load_tokenizer(manifest: Manifest, max_tokens: int = MAX_TOKENS) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(manifest.tokenizer))
    tok.no_padding()
    tok.enable_truncation(max_tokens)
    return tok


def export(module: Any, path: Path, *, static_seq: int | None) -> GraphFile:
    import torch

    seq = static_seq or 16
    ids = torch.full((1 if static_seq else 2, seq), 1000, dtype=torch.int64)
    mask = torch.ones(ids.shape, dtype=torch.float32 if static_seq else torch.int64)
    axes = None
    if static_seq is None:
        dims = {0: "batch", 1: "sequence"}
        axes = {"input_ids": dims, "attention_mask": dims, "embedding": {0: "batch"}}
    # The legacy exporter's deprecation and tracer warnings say nothing about these graphs.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return GraphFile(path, ("input_ids", "attention_mask"), ("embedding",))


# --------------------------------------------------------------------------- checks


def feeds(
    tok: Any, texts: Sequence[str], static_seq: int | None, batch: int = 1
) -> list[dict[str, npt.NDArray[Any]]]:
    """Feeds as the pipeline builds them: ``static_seq`` pads each text to the bucket (float
    mask, batch 1); otherwise texts go by length in batches padded to their longest (int64)."""
    encodings = tok.encode_batch(list(texts))
    order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
    step = 1 if static_seq else batch
    out = []
    for start in range(0, len(order), step):
        group = [encodings[i] for i in order[start : start + step]]
        seq = static_seq or max(len(e.ids) for e in group)
        ids = np.zeros((len(group), seq), np.int64)
        mask = np.zeros(ids.shape, np.float32 if static_seq else np.int64)
        for row, enc in enumerate(group):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def min_cosine(reference: Path, candidate: Path, inputs: Sequence[dict[str, Any]]) -> float:
    """The smallest cosine between the two graphs' output rows over ``inputs`` (CPU EP)."""
    import onnxruntime as ort  # preparation-time check; serving sessions come from runtime/

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    a = ort.InferenceSession(str(reference), so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(candidate), so, providers=["CPUExecutionProvider"])
    worst = 1.0
    for feed in inputs:
        x, y = a.run(None, feed)[0], b.run(None, feed)[0]
        cos = np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
        worst = min(worst, float(cos.min()))
    return worst
