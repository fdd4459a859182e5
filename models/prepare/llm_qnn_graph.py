"""The QNN HTP graphs of a Llama-family model: static shapes, host-owned KV cache (quantized to
QDQ 16/8-bit by ``llm_qnn.py``).

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
    "export_graph",
    "llama_module",
    "run_torch",
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


def llama_module(hf_model: Any, spec: QnnGraphSpec) -> torch.nn.Module:
    """A torch forward with the graph's exact signature over ``hf_model``'s weights."""
    import torch
    from torch import nn

    cfg = hf_model.config
    theta = float(cfg.rope_parameters["rope_theta"])
    half = spec.head_dim // 2
    inv_freq = 1.0 / theta ** (torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(spec.context_length, dtype=torch.float64)[:, None] * inv_freq[None]
    eps = float(cfg.rms_norm_eps)
    heads, kv_heads, hd = cfg.num_attention_heads, spec.num_kv_heads, spec.head_dim
    group = heads // kv_heads

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, eps)

    def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., :half], x[..., half:]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    class QnnLlama(nn.Module):
        cos_table: torch.Tensor
        sin_table: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            inner = hf_model.model
            # transformers' modules are untyped: hold them as Any.
            self.embed: Any = inner.embed_tokens
            self.layers: Any = nn.ModuleList(inner.layers[: spec.num_layers])
            self.norm: Any = inner.norm
            self.head: Any = hf_model.lm_head
            both = torch.cat([angles.cos(), angles.cos()], -1), torch.cat([angles.sin()] * 2, -1)
            self.register_buffer("cos_table", both[0].float(), persistent=False)
            self.register_buffer("sin_table", both[1].float(), persistent=False)

        def forward(
            self,
            input_ids: torch.Tensor,
            position_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            *past: torch.Tensor,
        ) -> tuple[torch.Tensor, ...]:
            s = input_ids.shape[1]
            x = self.embed(input_ids)
            # F.embedding exports as a plain Gather (indexing would give GatherND).
            cos = torch.nn.functional.embedding(position_ids, self.cos_table)[:, None]
            sin = torch.nn.functional.embedding(position_ids, self.sin_table)[:, None]
            outputs: list[torch.Tensor] = []
            for i, layer in enumerate(self.layers):
                att = layer.self_attn
                h = rms(x, layer.input_layernorm.weight)
                q = att.q_proj(h).view(1, s, heads, hd).transpose(1, 2)
                k = att.k_proj(h).view(1, s, kv_heads, hd).transpose(1, 2)
                v = att.v_proj(h).view(1, s, kv_heads, hd).transpose(1, 2)
                q = rope(q, cos, sin) * (1.0 / math.sqrt(hd))
                k = rope(k, cos, sin)
                outputs += [k, v]
                keys = torch.cat([past[2 * i], k], dim=2)  # [1, kv, C+S, hd]
                values = torch.cat([past[2 * i + 1], v], dim=2)
                # Query heads 3j..3j+2 share KV head j: fold the group into rows, keep 4-D.
                qg = q.reshape(kv_heads, group * s, hd)
                scores = torch.matmul(qg, keys[0].transpose(1, 2))  # [kv, group*S, C+S]
                scores = scores.reshape(heads, s, -1) + attention_mask[0]
                probs = torch.softmax(scores, dim=-1).reshape(kv_heads, group * s, -1)
                ctx = torch.matmul(probs, values[0]).reshape(1, heads, s, hd)
                ctx = ctx.transpose(1, 2).reshape(1, s, heads * hd)
                x = x + att.o_proj(ctx)
                h = rms(x, layer.post_attention_layernorm.weight)
                gate = layer.mlp.gate_proj(h)
                x = x + layer.mlp.down_proj(gate * torch.sigmoid(gate) * layer.mlp.up_proj(h))
            logits = self.head(rms(x, self.norm.weight))
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
