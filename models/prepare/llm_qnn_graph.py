"""The QNN HTP graphs of an LLM: static shapes, host-owned KV cache (quantized to QDQ 16/8-bit
by ``llm_qnn.py``). This module holds the graph signature, the host protocol, the pieces every
forward shares (RoPE tables, attention over the host cache, the untied head) and the Llama
forward; the Gemma 3 forward is ``llm_qnn_gemma.py``.

Two graphs per model, exported from a hand-written torch forward over the float weights (so the
graph holds exactly the ops the HTP backend takes: no Range, Trilu, If or dynamic shapes):

- ``prefill``: S = ``prefill_length`` tokens (a chunk of the prompt, right-padded);
- ``decode``: S = 1 token.

Inputs (both graphs; C = ``context_length``, the fixed KV-cache size)::

    input_ids                  int64 [1, S]        padding: any valid id (the pad token)
    position_ids               int64 [1, S]        absolute positions, 0 <= p < C
    attention_mask             float [1, 1, S, C+S] additive: 0 = attend, MASK_VALUE = masked
    past_key_values.{i}.key    float [1, kv_heads, C, head_dim]   slot p holds position p
    past_key_values.{i}.value  float [1, kv_heads, C, head_dim]

Outputs::

    logits                     float [1, S, vocab]
    present.{i}.key / .value   float [1, kv_heads, S, head_dim]   K (after RoPE) and V of the S
                                                                  new tokens only

The host protocol (``HostCache`` below is the reference implementation): a call with n valid
tokens at positions p0..p0+n-1 masks cache slots >= p0 and, among the S new tokens, lets token i
see tokens 0..i. After the call the host writes present rows 0..n-1 into slots p0..p0+n-1; the
next token's logits are row n-1. Columns of masked slots are never read, so stale slots are
harmless. The mask value (``MASK_VALUE``, recorded in the variant's options) is -100, neither
-inf nor -1e4: the mask shares the 16-bit quantization range of the attention scores, and a huge
value would crush their resolution (docs/qnn.md); why not docs/qnn.md's -30 is said at the constant.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

__all__ = [
    "MASK_VALUE",
    "OPSET",
    "Feed",
    "HostCache",
    "QnnGraphSpec",
    "attend",
    "export_graph",
    "gather_rows",
    "llama_module",
    "rope_tables",
    "rotate",
    "run_torch",
    "untied_head",
]

# Additive mask of masked cache slots. docs/qnn.md suggests about -30 so that the mask does not
# widen the quantization range of the attention scores, but SmolLM2's real scores span about [-53,
# 28] and in some heads (layer 10) every real score of a row is below -21: against -30, 500 masked
# slots then take ~10% of the attention and the output drifts (max logit error 34 over 30 layers).
# -100 keeps masked slots (even stale ones, q.k up to ~30) below every real row maximum by far more
# than ln(C), and widens the 16-bit range only from ~81 to ~130 (steps of 0.002).
MASK_VALUE: Final = -100.0
OPSET: Final = 23  # RMSNormalization

Feed = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True, slots=True)
class QnnGraphSpec:
    """The fixed shapes of one QNN graph set."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    prefill_length: int
    mask_value: float = MASK_VALUE

    def input_names(self) -> list[str]:
        past = [
            f"past_key_values.{i}.{kv}" for i in range(self.num_layers) for kv in ("key", "value")
        ]
        return ["input_ids", "position_ids", "attention_mask", *past]

    def output_names(self) -> list[str]:
        new = [f"present.{i}.{kv}" for i in range(self.num_layers) for kv in ("key", "value")]
        return ["logits", *new]


class HostCache:
    """The host side of the protocol: a float KV cache and the feeds of each call (numpy)."""

    def __init__(self, spec: QnnGraphSpec) -> None:
        self.spec = spec
        shape = (1, spec.num_kv_heads, spec.context_length, spec.head_dim)
        self.keys = [np.zeros(shape, np.float32) for _ in range(spec.num_layers)]
        self.values = [np.zeros(shape, np.float32) for _ in range(spec.num_layers)]
        self.length = 0  # positions 0..length-1 are filled

    def feed(self, tokens: Sequence[int], seq_len: int, pad_id: int) -> Feed:
        """Inputs for ``tokens`` (1..seq_len of them) at the next positions."""
        n, c, p0 = len(tokens), self.spec.context_length, self.length
        if not 1 <= n <= seq_len:
            raise ValueError(f"a call takes 1..{seq_len} tokens, got {n}")
        if p0 + n > c:
            raise ValueError(f"{p0 + n} positions exceed the context of {c}")
        ids = np.full((1, seq_len), pad_id, np.int64)
        ids[0, :n] = tokens
        positions = np.minimum(np.arange(p0, p0 + seq_len, dtype=np.int64), c - 1)[None]
        mask = np.full((1, 1, seq_len, c + seq_len), self.spec.mask_value, np.float32)
        mask[0, 0, :, :p0] = 0.0
        causal = np.tril(np.ones((seq_len, seq_len), dtype=bool))
        mask[0, 0, :, c:][causal] = 0.0
        feed: Feed = {"input_ids": ids, "position_ids": positions, "attention_mask": mask}
        for i in range(self.spec.num_layers):
            feed[f"past_key_values.{i}.key"] = self.keys[i]
            feed[f"past_key_values.{i}.value"] = self.values[i]
        return feed

    def commit(self, outputs: Sequence[npt.NDArray[np.float32]], n: int) -> None:
        """Write the first ``n`` new K/V rows of a call's ``outputs`` (graph order) into slots."""
        p0 = self.length
        for i in range(self.spec.num_layers):
            self.keys[i][:, :, p0 : p0 + n] = outputs[1 + 2 * i][:, :, :n]
            self.values[i][:, :, p0 : p0 + n] = outputs[2 + 2 * i][:, :, :n]
        self.length = p0 + n


def rope_tables(
    theta: float, head_dim: int, context_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's RoPE angles (float32 [C, head_dim], both halves alike)."""
    import torch

    half = head_dim // 2
    inv_freq = 1.0 / theta ** (torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(context_length, dtype=torch.float64)[:, None] * inv_freq[None]
    return torch.cat([angles.cos()] * 2, -1).float(), torch.cat([angles.sin()] * 2, -1).float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on [1, heads, S, head_dim] with the rows of ``rope_tables`` at the positions."""
    import torch

    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    past: tuple[torch.Tensor, torch.Tensor],
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Attention of the scaled, rotated q [1, heads, S, hd] over the cache slots and the S new
    k, v [1, kv_heads, S, hd]; returns the context [1, S, heads * hd]."""
    import torch

    _, heads, s, hd = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    keys = torch.cat([past[0], k], dim=2)  # [1, kv, C+S, hd]
    values = torch.cat([past[1], v], dim=2)
    # Query heads g*j..g*j+g-1 share KV head j: fold the group into rows, keep 4-D.
    qg = q.reshape(kv_heads, group * s, hd)
    scores = torch.matmul(qg, keys[0].transpose(1, 2))  # [kv, group*S, C+S]
    scores = scores.reshape(heads, s, -1) + attention_mask[0]
    probs = torch.softmax(scores, dim=-1).reshape(kv_heads, group * s, -1)
    ctx = torch.matmul(probs, values[0]).reshape(1, heads, s, hd)
    return ctx.transpose(1, 2).reshape(1, s, heads * hd)


def gather_rows(table: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Rows of a [C, hd] table at [1, S] positions, as [1, 1, S, hd] (a plain Gather: indexing
    would export as GatherND)."""
    import torch

    return torch.nn.functional.embedding(position_ids, table)[:, None]


def untied_head(hf_model: Any) -> torch.Tensor:
    """The LM head's weight as a tensor of its own, even where it is tied to the embedding.

    Shared with the embedding's Gather, the table is one uint16 initializer that the graph
    transposes on every call, and the head's MatMul then has a computed second input, which the
    EP reduces to uint8 on the HTP (``llm_qnn.quantize_graph``). Its own copy is folded into a
    transposed weight: an 8-bit FullyConnected on the HTP, at the cost of a second table.
    """
    weight: torch.Tensor = hf_model.lm_head.weight
    return weight.detach().clone()


def llama_module(hf_model: Any, spec: QnnGraphSpec) -> torch.nn.Module:
    """A torch forward with the graph's exact signature over ``hf_model``'s weights."""
    import torch
    from torch import nn

    cfg = hf_model.config
    cos_sin = rope_tables(float(cfg.rope_parameters["rope_theta"]), spec.head_dim,
                          spec.context_length)  # fmt: skip
    eps = float(cfg.rms_norm_eps)
    heads, kv_heads, hd = cfg.num_attention_heads, spec.num_kv_heads, spec.head_dim

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, eps)

    class QnnLlama(nn.Module):
        cos_table: torch.Tensor
        sin_table: torch.Tensor
        head_weight: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            inner = hf_model.model
            # transformers' modules are untyped: hold them as Any.
            self.embed: Any = inner.embed_tokens
            self.layers: Any = nn.ModuleList(inner.layers[: spec.num_layers])
            self.norm: Any = inner.norm
            self.register_buffer("head_weight", untied_head(hf_model), persistent=False)
            self.register_buffer("cos_table", cos_sin[0], persistent=False)
            self.register_buffer("sin_table", cos_sin[1], persistent=False)

        def forward(
            self,
            input_ids: torch.Tensor,
            position_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            *past: torch.Tensor,
        ) -> tuple[torch.Tensor, ...]:
            s = input_ids.shape[1]
            x = self.embed(input_ids)
            cos = gather_rows(self.cos_table, position_ids)
            sin = gather_rows(self.sin_table, position_ids)
            outputs: list[torch.Tensor] = []
            for i, layer in enumerate(self.layers):
                att = layer.self_attn
                h = rms(x, layer.input_layernorm.weight)
                q = att.q_proj(h).view(1, s, heads, hd).transpose(1, 2)
                k = att.k_proj(h).view(1, s, kv_heads, hd).transpose(1, 2)
                v = att.v_proj(h).view(1, s, kv_heads, hd).transpose(1, 2)
                q = rotate(q, cos, sin) * (1.0 / math.sqrt(hd))
                k = rotate(k, cos, sin)
                outputs += [k, v]
                ctx = attend(q, k, v, (past[2 * i], past[2 * i + 1]), attention_mask)
                x = x + att.o_proj(ctx)
                h = rms(x, layer.post_attention_layernorm.weight)
                gate = layer.mlp.gate_proj(h)
                x = x + layer.mlp.down_proj(gate * torch.sigmoid(gate) * layer.mlp.up_proj(h))
            logits = torch.nn.functional.linear(rms(x, self.norm.weight), self.head_weight)
            return (logits, *outputs)

    return QnnLlama().eval()


def run_torch(module: torch.nn.Module, feed: Feed, spec: QnnGraphSpec) -> list[Any]:
    import torch

    with torch.inference_mode():
        args = [torch.from_numpy(feed[name]) for name in spec.input_names()]
        return [t.numpy() for t in module(*args)]


def export_graph(module: torch.nn.Module, spec: QnnGraphSpec, seq_len: int, path: Path) -> None:
    """Export ``module`` with static shapes for ``seq_len`` new tokens (weights in ``.data``).

    The dynamo exporter at opset 23 emits RMSNormalization as one op: decomposed, the RMS norm's
    x*x spans [0, ~5e5] on SmolLM2's outlier channels and 16-bit quantization of that tensor
    zeroes every ordinary token's squares (the QDQ model then scores perplexity in the 1e5s).
    """
    import torch

    cache = HostCache(spec)
    feed = cache.feed([0] * seq_len, seq_len, 0)
    args = tuple(torch.from_numpy(feed[name]) for name in spec.input_names())
    with torch.inference_mode(), warnings.catch_warnings():
        # The exporter's own deprecation chatter (pytree LeafSpec) says nothing about our graph.
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=spec.input_names(),
            output_names=spec.output_names(),
            opset_version=OPSET,
            dynamo=True,
            external_data=True,
            verbose=False,
        )
