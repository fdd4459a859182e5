"""ONNX export of Whisper (preparation time only: imports torch).

Owns the two graph shapes that ``models/transcribe.py`` runs (see ``models/prepare/whisper.py``
for their inputs and outputs) and the QDQ quantization of the encoder for the QNN HTP.

The forward functions below are written out over the weights of a transformers
``WhisperForConditionalGeneration`` rather than calling its forward: the graph I/O (an explicit
additive mask, positions from the host, a stacked KV cache, cross K/V from the encoder) is ours,
and only plain ops (MatMul, Softmax, LayerNormalization, Gelu, Conv) appear, which the HTP runs.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

from imagine_edge.models.store import GraphFile

__all__ = [
    "DecoderGraph",
    "EncoderGraph",
    "export_cpu",
    "export_decoder",
    "export_encoder",
    "export_qnn_encoder",
    "quantize_qdq",
]

logger = logging.getLogger(__name__)

OPSET: Final = 17
N_FRAMES: Final = 3000  # 30 s of 10 ms mel frames: Whisper's fixed encoder input


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[S, D] -> [H, S, D/H]."""
    return x.reshape(x.shape[0], heads, -1).transpose(0, 1)


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Scaled dot-product attention over heads: q [H,T,d], k/v [H,S,d] -> [T, H*d]."""
    scores = torch.matmul(q, k.transpose(1, 2))
    if mask is not None:
        scores = scores + mask
    out = torch.matmul(torch.softmax(scores, dim=-1), v)
    return out.transpose(0, 1).reshape(q.shape[1], -1)


class EncoderGraph(nn.Module):
    """mel [1, n_mels, 3000] -> cross_k, cross_v [layers, heads, 1500, head_dim]."""

    positions: torch.Tensor

    def __init__(self, model: Any) -> None:
        super().__init__()
        enc, dec = model.model.encoder, model.model.decoder
        self.conv1, self.conv2, self.layers, self.norm = (
            enc.conv1,
            enc.conv2,
            enc.layers,
            enc.layer_norm,
        )
        self.register_buffer("positions", enc.embed_positions.weight.detach().clone())
        self.cross = nn.ModuleList(layer.encoder_attn for layer in dec.layers)
        self.heads = int(model.config.encoder_attention_heads)
        self.dec_heads = int(model.config.decoder_attention_heads)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x))
        x = x[0].transpose(0, 1) + self.positions
        for layer in self.layers:
            a = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = _heads(a.q_proj(h) * a.scaling, self.heads)
            x = x + a.out_proj(
                _attend(q, _heads(a.k_proj(h), self.heads), _heads(a.v_proj(h), self.heads), None)
            )
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        x = self.norm(x)
        cross: list[Any] = list(self.cross)
        ks = [_heads(c.k_proj(x), self.dec_heads) for c in cross]
        vs = [_heads(c.v_proj(x), self.dec_heads) for c in cross]
        return torch.stack(ks), torch.stack(vs)


class DecoderGraph(nn.Module):
    """One decoder call over T new tokens with the self-attention cache of P past tokens.

    Inputs: input_ids [1, T] int64, positions [T] int64, mask [T, P+T] float (additive),
    past_k/past_v [L, H, P, d], cross_k/cross_v [L, H, S, d].
    Outputs: logits [1, vocab] of the last position, present_k/present_v [L, H, P+T, d].
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        dec = model.model.decoder
        self.embed, self.layers, self.norm = dec.embed_tokens, dec.layers, dec.layer_norm
        self.positions = dec.embed_positions
        self.heads = int(model.config.decoder_attention_heads)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        past_k: torch.Tensor,
        past_v: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.embed(input_ids[0]) + F.embedding(positions, self.positions.weight)
        present_k, present_v = [], []
        for i, layer in enumerate(self.layers):
            a = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            k = torch.cat([past_k[i], _heads(a.k_proj(h), self.heads)], dim=1)
            v = torch.cat([past_v[i], _heads(a.v_proj(h), self.heads)], dim=1)
            present_k.append(k)
            present_v.append(v)
            q = _heads(a.q_proj(h) * a.scaling, self.heads)
            x = x + a.out_proj(_attend(q, k, v, mask))
            c = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = _heads(c.q_proj(h) * c.scaling, self.heads)
            x = x + c.out_proj(_attend(q, cross_k[i], cross_v[i], None))
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        last = self.norm(x[-1:])
        # F.linear keeps the tied embedding one initializer (a folded transpose would copy it).
        logits = F.linear(last, self.embed.weight)
        return logits, torch.stack(present_k), torch.stack(present_v)


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, **kw: Any) -> None:
    # The tracer warns that shape-derived values become constants: intended for these graphs.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        torch.onnx.export(
            module,
            args,
            str(path),
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
            **kw,
        )


def _decoder_example(model: Any, past: int, new: int) -> tuple[torch.Tensor, ...]:
    cfg = model.config
    layers, heads = cfg.decoder_layers, cfg.decoder_attention_heads
    dh = cfg.d_model // heads
    src = cfg.max_source_positions
    return (
        torch.zeros(1, new, dtype=torch.int64),
        torch.arange(past, past + new, dtype=torch.int64),
        torch.zeros(new, past + new),
        torch.zeros(layers, heads, past, dh),
        torch.zeros(layers, heads, past, dh),
        torch.zeros(layers, heads, src, dh),
        torch.zeros(layers, heads, src, dh),
    )


def export_decoder(model: Any, path: Path) -> GraphFile:
    """The KV-cache decoder graph, dynamic in T (new tokens) and P (cached tokens)."""
    names = ["input_ids", "positions", "mask", "past_k", "past_v", "cross_k", "cross_v"]
    outputs = ["logits", "present_k", "present_v"]
    _export(
        DecoderGraph(model).eval(),
        _decoder_example(model, past=3, new=2),
        path,
        input_names=names,
        output_names=outputs,
        dynamic_axes={
            "input_ids": {1: "new"},
            "positions": {0: "new"},
            "mask": {0: "new", 1: "total"},
            "past_k": {2: "past"},
            "past_v": {2: "past"},
            "present_k": {2: "total"},
            "present_v": {2: "total"},
        },
    )
    return GraphFile(path, tuple(names), tuple(outputs))


def export_encoder(model: Any, path: Path) -> GraphFile:
    """The encoder graph with static shapes (Whisper always sees 3000 frames)."""
    mel = torch.zeros(1, int(model.config.num_mel_bins), N_FRAMES)
    _export(
        EncoderGraph(model).eval(),
        (mel,),
        path,
        input_names=["mel"],
        output_names=["cross_k", "cross_v"],
    )
    return GraphFile(path, ("mel",), ("cross_k", "cross_v"))


def export_cpu(model: Any, out: Path) -> dict[str, GraphFile]:
    """float32 encoder and decoder graphs into ``out``."""
    return {
        "encoder": export_encoder(model, out / "encoder.onnx"),
        "decoder": export_decoder(model, out / "decoder.onnx"),
    }


class _Feeds:
    """A CalibrationDataReader over recorded input feeds."""

    def __init__(self, feeds: list[dict[str, npt.NDArray[Any]]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
        return next(self._feeds, None)


def quantize_qdq(
    float_path: Path, out_path: Path, feeds: list[dict[str, npt.NDArray[Any]]]
) -> None:
    """QDQ-quantize a static graph for the HTP (QNN.md's recipe): fuse what the HTP cannot run
    as exported (Erf-GELU, decomposed LayerNorm), then uint16 activations and uint8 per-channel
    weights, calibrated on ``feeds``."""
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import (
        get_qnn_qdq_config,
        qnn_preprocess_model,
    )

    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    source = pre if qnn_preprocess_model(float_path, pre, fuse_layernorm=True) else float_path
    config = get_qnn_qdq_config(
        source,
        _Feeds(feeds),
        activation_type=QuantType.QUInt16,
        weight_type=QuantType.QUInt8,
        per_channel=True,
    )
    quantize(source, out_path, config)
    pre.unlink(missing_ok=True)


def export_qnn_encoder(
    model: Any, out: Path, mels: list[npt.NDArray[np.float32]]
) -> dict[str, GraphFile]:
    """The encoder as a static QDQ graph for the HTP, calibrated on real log-mel windows."""
    scratch = out / ".float"
    scratch.mkdir()
    float_graph = export_encoder(model, scratch / "encoder.onnx")
    target = out / "encoder.onnx"
    quantize_qdq(float_graph.path, target, [{"mel": m[None]} for m in mels])
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()
    return {"encoder": GraphFile(target, float_graph.inputs, float_graph.outputs)}
