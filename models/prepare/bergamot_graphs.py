"""ONNX export of the Bergamot tiny transformer with an SSRU decoder (preparation only: torch).

The modules below are Marian's ``transformer`` with ``transformer-postprocess: dan`` (post-norm:
``LayerNorm(x + sublayer(x))``, eps 1e-9), no embedding norm, embeddings scaled by sqrt(dim)
plus Marian's sinusoidal positions (sines in the first half, cosines in the second), and the
SSRU decoder cell (Kim et al., 2019)::

    f_t = sigmoid(x_t Wf + bf);  c_t = f_t * c_{t-1} + (1 - f_t) * (x_t W);  h_t = relu(c_t)

The first decoder step embeds a zero vector (Marian's start state): the host passes the id
``vocab_size`` for it, which the graph masks to zero.

Graphs (batch B, source length S, L decoder layers, H heads of d):
- ``encoder``: ``input_ids [B, S]``, ``src_mask [B, S]`` (additive: 0 or a large negative for
  padding) -> ``cross_k``/``cross_v [B, L, H, S, d]``.
- ``decoder``: ``prev_ids [B]``, ``position [1]``, ``states [L, B, D]``, the cross K/V,
  ``src_mask`` and ``shortlist [K]`` (the candidate target ids, Marian's lexical shortlist) ->
  ``logits [B, K]`` over those candidates, ``next_states [L, B, D]``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from imagine_edge.models.prepare.bergamot import BergamotConfig
from imagine_edge.models.store import GraphFile

__all__ = ["BergamotDecoder", "BergamotEncoder", "export_cpu", "export_qnn_encoder"]

OPSET: Final = 17
LN_EPS: Final = 1e-9  # Marian's layerNorm epsilon
Weights = dict[str, npt.NDArray[np.float32]]


class _Params(nn.Module):
    """Marian-named parameters as buffers (dots are not allowed in buffer names)."""

    def __init__(self, weights: Weights, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        for name, value in weights.items():
            if name.startswith(prefixes):
                self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value)))

    def get(self, name: str) -> torch.Tensor:
        value = getattr(self, name)
        assert isinstance(value, torch.Tensor)
        return value


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Marian's position embeddings ``[..., dim]`` for integer ``positions``."""
    half = dim // 2
    inv = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    angles = positions.to(torch.float32).unsqueeze(-1) * inv
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class _Blocks(nn.Module):
    """The sublayers shared by encoder and decoder."""

    def __init__(self, weights: Weights, config: BergamotConfig, prefixes: tuple[str, ...]):
        super().__init__()
        self.p = _Params(weights, prefixes)
        self.heads = config.heads
        self.dim = config.dim

    def norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        g, b = self.p.get(f"{name}_ln_scale"), self.p.get(f"{name}_ln_bias")
        return nn.functional.layer_norm(x, (self.dim,), g, b, eps=LN_EPS)

    def affine(self, x: torch.Tensor, w: str, b: str) -> torch.Tensor:
        return torch.matmul(x, self.p.get(w)) + self.p.get(b)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, H, T, d]."""
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, -1).transpose(1, 2)

    def attend(
        self, name: str, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Multi-head attention of queries from ``x`` over split keys/values; Wo applied."""
        q = self.split(self.affine(x, f"{name}_Wq", f"{name}_bq"))
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(q.shape[-1])
        scores = scores + mask[:, None, None, :]
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.dim)
        return self.affine(out, f"{name}_Wo", f"{name}_bo")

    def ffn(self, x: torch.Tensor, name: str) -> torch.Tensor:
        h = torch.relu(self.affine(x, f"{name}_W1", f"{name}_b1"))
        return self.affine(h, f"{name}_W2", f"{name}_b2")

    def kv(self, x: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.split(self.affine(x, f"{name}_Wk", f"{name}_bk"))
        v = self.split(self.affine(x, f"{name}_Wv", f"{name}_bv"))
        return k, v


class BergamotEncoder(_Blocks):
    """input_ids [B, S], src_mask [B, S] -> cross_k, cross_v [B, L, H, S, d]."""

    def __init__(self, weights: Weights, config: BergamotConfig) -> None:
        super().__init__(weights, config, ("encoder_", "decoder_l"))
        self.register_buffer("emb", torch.from_numpy(weights["Wemb"]))
        self.layers = config.encoder_layers
        self.dec_layers = config.decoder_layers

    def forward(
        self, input_ids: torch.Tensor, src_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.get_buffer("emb")
        positions = torch.arange(input_ids.shape[1], dtype=torch.int64)
        x = emb[input_ids] * math.sqrt(self.dim) + sinusoid(positions, self.dim)
        for i in range(1, self.layers + 1):
            name = f"encoder_l{i}_self"
            k, v = self.kv(x, name)
            x = self.norm(x + self.attend(name, x, k, v, src_mask), f"{name}_Wo")
            x = self.norm(x + self.ffn(x, f"encoder_l{i}_ffn"), f"encoder_l{i}_ffn_ffn")
        pairs = [self.kv(x, f"decoder_l{i}_context") for i in range(1, self.dec_layers + 1)]
        return torch.stack([k for k, _ in pairs], 1), torch.stack([v for _, v in pairs], 1)


class BergamotDecoder(_Blocks):
    """One greedy step for a batch: see the module docstring for the I/O."""

    def __init__(self, weights: Weights, config: BergamotConfig) -> None:
        super().__init__(weights, config, ("decoder_",))
        self.register_buffer("emb", torch.from_numpy(weights["Wemb"]))
        self.layers = config.decoder_layers
        self.vocab = config.vocab_size

    def forward(
        self,
        prev_ids: torch.Tensor,
        position: torch.Tensor,
        states: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        src_mask: torch.Tensor,
        shortlist: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.get_buffer("emb")
        # Id ``vocab`` is the start: Marian embeds a zero vector there. Masking the lookup keeps
        # one embedding table, shared with the output layer.
        word = (prev_ids < self.vocab).to(torch.float32).unsqueeze(1)
        looked_up = emb[torch.clamp(prev_ids, max=self.vocab - 1)]
        x = looked_up * (word * math.sqrt(self.dim)) + sinusoid(position, self.dim)
        x = x.unsqueeze(1)  # [B, 1, D]
        next_states = []
        for i in range(1, self.layers + 1):
            name = f"decoder_l{i}"
            gate = torch.sigmoid(self.affine(x[:, 0], f"{name}_rnn_Wf", f"{name}_rnn_bf"))
            cell = gate * states[i - 1] + (1 - gate) * torch.matmul(
                x[:, 0], self.p.get(f"{name}_rnn_W")
            )
            next_states.append(cell)
            x = self.norm(x + torch.relu(cell).unsqueeze(1), f"{name}_rnn_ffn")
            ctx = f"{name}_context"
            attended = self.attend(ctx, x, cross_k[:, i - 1], cross_v[:, i - 1], src_mask)
            x = self.norm(x + attended, f"{ctx}_Wo")
            x = self.norm(x + self.ffn(x, f"{name}_ffn"), f"{name}_ffn_ffn")
        # Tied output layer over the shortlisted rows only: reading the whole 32 MB table every
        # step made it memory-bound (6 ms of an 8 ms step), the shortlist is a few hundred rows.
        bias = self.p.get("decoder_ff_logit_out_b")
        logits = nn.functional.linear(x[:, 0], emb[shortlist]) + bias[shortlist]
        return logits, torch.stack(next_states)


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict[str, dict[int, str]],
) -> GraphFile:
    # The tracer warns that shape-derived values become constants: intended for these graphs.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
        )
    return GraphFile(path, tuple(inputs), tuple(outputs))


def export_cpu(weights: Weights, config: BergamotConfig, out: Path) -> dict[str, GraphFile]:
    """float32 encoder and decoder-step graphs, dynamic in batch and source length."""
    b, s = 2, 5
    heads, d = config.heads, config.dim // config.heads
    encoder = _export(
        BergamotEncoder(weights, config),
        (torch.zeros(b, s, dtype=torch.int64), torch.zeros(b, s)),
        out / "encoder.onnx",
        ["input_ids", "src_mask"],
        ["cross_k", "cross_v"],
        {
            "input_ids": {0: "batch", 1: "source"},
            "src_mask": {0: "batch", 1: "source"},
            "cross_k": {0: "batch", 3: "source"},
            "cross_v": {0: "batch", 3: "source"},
        },
    )
    cross = torch.zeros(b, config.decoder_layers, heads, s, d)
    decoder = _export(
        BergamotDecoder(weights, config),
        (
            torch.zeros(b, dtype=torch.int64),
            torch.zeros(1, dtype=torch.int64),
            torch.zeros(config.decoder_layers, b, config.dim),
            cross,
            cross,
            torch.zeros(b, s),
            torch.arange(7, dtype=torch.int64),
        ),
        out / "decoder.onnx",
        ["prev_ids", "position", "states", "cross_k", "cross_v", "src_mask", "shortlist"],
        ["logits", "next_states"],
        {
            "prev_ids": {0: "batch"},
            "states": {1: "batch"},
            "cross_k": {0: "batch", 3: "source"},
            "cross_v": {0: "batch", 3: "source"},
            "src_mask": {0: "batch", 1: "source"},
            "shortlist": {0: "candidates"},
            "logits": {0: "batch", 1: "candidates"},
            "next_states": {1: "batch"},
        },
    )
    return {"encoder": encoder, "decoder": decoder}


def export_qnn_encoder(
    weights: Weights,
    config: BergamotConfig,
    out: Path,
    feeds: list[dict[str, npt.NDArray[Any]]],
    length: int,
) -> dict[str, GraphFile]:
    """The encoder with static shapes ``[1, length]`` as a QDQ graph for the HTP.

    Sources shorter than ``length`` are padded by the host and masked with ``QNN_MASK`` (in
    ``bergamot.py``; the mask shares the 16-bit range of the attention scores, so -1e9 would
    swamp it, docs/qnn.md).
    """
    from imagine_edge.models.prepare.qdq import quantize_qdq

    scratch = out / ".float"
    scratch.mkdir()
    float_graph = _export(
        BergamotEncoder(weights, config),
        (torch.zeros(1, length, dtype=torch.int64), torch.zeros(1, length)),
        scratch / "encoder.onnx",
        ["input_ids", "src_mask"],
        ["cross_k", "cross_v"],
        {},
    )
    target = out / "encoder.onnx"
    quantize_qdq(float_graph.path, target, feeds)
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()
    return {"encoder": GraphFile(target, float_graph.inputs, float_graph.outputs)}
