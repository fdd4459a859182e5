"""The Gemma 3 forward of the static QNN graphs: the graph signature, the host protocol
(``HostCache``) and the shared pieces (RoPE tables, attention over the host cache, the untied
head) are ``llm_qnn_graph.py``'s, exactly as the Llama forward uses them.

What the Gemma 3 layer adds to the Llama one, and how each stays on the HTP:

- RMSNorm scales by ``1 + w``: the scale is precomputed, so each norm is still one
  RMSNormalization (decomposed, the squares' range would crush 16-bit activations);
- four norms per layer (before and after attention, before and after the MLP) and QK-norm (an
  RMSNorm over each head of q and k, before RoPE);
- the embedding is scaled by sqrt(hidden) (part of transformers' embedding module: a Mul);
- the query scale is ``query_pre_attn_scalar ** -0.5``;
- two RoPE tables: one base on sliding-window layers, another on full-attention ones;
- GeGLU with the tanh GELU, written out (``gelu_tanh``): ONNX's ``Gelu(approximate="tanh")`` is
  placed on the HTP but computes the erf GELU there (docs/qnn.md, "Graphs the HTP accepts");
- the sliding window (512 for the 270M): a query at position p sees keys after p - window, so a
  context of at most the window needs no window mask; a longer context is refused;
- the 262,144-row head, tied to the embedding: its own copy, as for Llama (``untied_head``).

Soft-capping (Gemma 2) and scaled RoPE (larger Gemma 3) are refused rather than left out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from imagine_edge.models.prepare.llm_qnn_graph import (
    QnnGraphSpec,
    attend,
    gather_rows,
    rope_tables,
    rotate,
    untied_head,
)

if TYPE_CHECKING:
    import torch

__all__ = ["gelu_tanh", "gemma3_module"]

SLIDING: Final = "sliding_attention"
FULL: Final = "full_attention"
# The four norms of a layer, by their transformers names, and the two of QK-norm.
LAYER_NORMS: Final = (
    "input_layernorm",
    "post_attention_layernorm",
    "pre_feedforward_layernorm",
    "post_feedforward_layernorm",
)
QK_NORMS: Final = ("q_norm", "k_norm")


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as plain
    Mul/Add/Tanh (HTP ops that compute what the CPU does)."""
    import torch

    inner = x * (math.sqrt(2.0 / math.pi) + (math.sqrt(2.0 / math.pi) * 0.044715) * (x * x))
    return 0.5 * x * (1.0 + torch.tanh(inner))


def _check(cfg: Any, spec: QnnGraphSpec) -> None:
    """Refuse what this forward does not implement rather than export a different model."""
    if cfg.attn_logit_softcapping is not None or cfg.final_logit_softcapping is not None:
        raise ValueError("Gemma QNN graphs: logit soft-capping is not implemented")
    kinds = set(cfg.layer_types[: spec.num_layers])
    for kind in kinds:
        rope_type = cfg.rope_parameters[kind].get("rope_type", "default")
        if rope_type != "default":
            raise ValueError(f"Gemma QNN graphs: {kind} RoPE {rope_type!r} is not implemented")
    if SLIDING in kinds and spec.context_length > cfg.sliding_window:
        raise ValueError(
            f"Gemma QNN graphs: a context of {spec.context_length} exceeds the sliding window "
            f"({cfg.sliding_window}), which these graphs do not mask"
        )


def gemma3_module(hf_model: Any, spec: QnnGraphSpec) -> torch.nn.Module:
    """A torch forward with the graph's exact signature over a Gemma 3 ``hf_model``'s weights."""
    import torch
    from torch import nn

    cfg = hf_model.config
    _check(cfg, spec)
    eps = float(cfg.rms_norm_eps)
    heads, kv_heads, hd = cfg.num_attention_heads, spec.num_kv_heads, spec.head_dim
    kinds = tuple(cfg.layer_types[: spec.num_layers])
    query_scale = float(cfg.query_pre_attn_scalar) ** -0.5
    tables = {
        kind: rope_tables(float(cfg.rope_parameters[kind]["rope_theta"]), hd, spec.context_length)
        for kind in (SLIDING, FULL)
    }

    class Norm(nn.Module):
        """Gemma's RMSNorm as one RMSNormalization, its scale ``1 + w`` precomputed."""

        scale: torch.Tensor

        def __init__(self, source: Any) -> None:
            super().__init__()
            self.register_buffer("scale", 1.0 + source.weight.detach().float(), persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.rms_norm(x, (x.shape[-1],), self.scale, eps)

    class QnnGemma3(nn.Module):
        head_weight: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            inner = hf_model.model
            # transformers' modules are untyped: hold them as Any.
            self.embed: Any = inner.embed_tokens  # scales by sqrt(hidden)
            self.layers: Any = nn.ModuleList(inner.layers[: spec.num_layers])
            # One ModuleDict of Norms per layer, by transformers' names.
            self.norms: Any = nn.ModuleList(
                nn.ModuleDict(
                    {n: Norm(getattr(layer, n)) for n in LAYER_NORMS}
                    | {n: Norm(getattr(layer.self_attn, n)) for n in QK_NORMS}
                )
                for layer in self.layers
            )
            self.final_norm = Norm(inner.norm)
            self.register_buffer("head_weight", untied_head(hf_model), persistent=False)
            for kind, (cos, sin) in tables.items():
                self.register_buffer(f"{kind}_cos", cos, persistent=False)
                self.register_buffer(f"{kind}_sin", sin, persistent=False)

        def forward(
            self,
            input_ids: torch.Tensor,
            position_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            *past: torch.Tensor,
        ) -> tuple[torch.Tensor, ...]:
            s = input_ids.shape[1]
            x = self.embed(input_ids)
            rope = {
                kind: (
                    gather_rows(getattr(self, f"{kind}_cos"), position_ids),
                    gather_rows(getattr(self, f"{kind}_sin"), position_ids),
                )
                for kind in set(kinds)
            }
            outputs: list[torch.Tensor] = []
            for i, layer in enumerate(self.layers):
                att, norm, (cos, sin) = layer.self_attn, self.norms[i], rope[kinds[i]]
                h = norm["input_layernorm"](x)
                q = att.q_proj(h).view(1, s, heads, hd).transpose(1, 2)
                k = att.k_proj(h).view(1, s, kv_heads, hd).transpose(1, 2)
                v = att.v_proj(h).view(1, s, kv_heads, hd).transpose(1, 2)
                q = rotate(norm["q_norm"](q), cos, sin) * query_scale
                k = rotate(norm["k_norm"](k), cos, sin)
                outputs += [k, v]
                ctx = attend(q, k, v, (past[2 * i], past[2 * i + 1]), attention_mask)
                x = x + norm["post_attention_layernorm"](att.o_proj(ctx))
                h = norm["pre_feedforward_layernorm"](x)
                mlp = layer.mlp
                h = mlp.down_proj(gelu_tanh(mlp.gate_proj(h)) * mlp.up_proj(h))
                x = x + norm["post_feedforward_layernorm"](h)
            logits = torch.nn.functional.linear(self.final_norm(x), self.head_weight)
            return (logits, *outputs)

    return QnnGemma3().eval()
