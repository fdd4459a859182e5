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

from imagine_edge.models.prepare.qdq import quantize_qdq
from imagine_edge.models.store import GraphFile

__all__ = [
    "DecoderGraph",
    "EncoderGraph",
    "cache_names",
    "export_cpu",
    "export_decoder",
    "export_encoder",
    "export_qnn_encoder",
    "quantize_int8",
]

logger = logging.getLogger(__name__)

OPSET: Final = 17
N_FRAMES: Final = 3000  # 30 s of 10 ms mel frames: Whisper's fixed encoder input


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[S, D] -> [H, S, D/H]."""
    return x.reshape(x.shape[0], heads, -1).transpose(0, 1)


def _attend(
    q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Scaled dot-product attention over heads: q [H,T,d], k_t [H,d,S], v [H,S,d] -> [T, H*d].

    Keys are kept transposed (in the caches too) so every score is a plain batched MatMul:
    with [H,S,d] keys ORT transposed the 1500-row cross keys on every decoder step."""
    scores = torch.matmul(q, k_t)
    if mask is not None:
        scores = scores + mask
    out = torch.matmul(torch.softmax(scores, dim=-1), v)
    return out.transpose(0, 1).reshape(q.shape[1], -1)


class EncoderGraph(nn.Module):
    """mel [1, n_mels, 3000] -> per decoder layer i: cross_k_i [heads, head_dim, 1500]
    (transposed keys) and cross_v_i [heads, 1500, head_dim]."""

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

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x))
        x = x[0].transpose(0, 1) + self.positions
        for layer in self.layers:
            a = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = _heads(a.q_proj(h) * a.scaling, self.heads)
            k_t = _heads(a.k_proj(h), self.heads).transpose(1, 2)
            x = x + a.out_proj(_attend(q, k_t, _heads(a.v_proj(h), self.heads), None))
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        x = self.norm(x)
        out: list[torch.Tensor] = []
        for c in list[Any](self.cross):
            out.append(_heads(c.k_proj(x), self.dec_heads).transpose(1, 2))
            out.append(_heads(c.v_proj(x), self.dec_heads))
        return tuple(out)


class DecoderGraph(nn.Module):
    """One decoder call over T new tokens with the self-attention cache of P past tokens.

    Inputs: input_ids [1, T] int64, positions [T] int64, mask [T, P+T] float (additive), then
    per layer i: past_k_i [H, d, P] (transposed keys), past_v_i [H, P, d], cross_k_i [H, d, S],
    cross_v_i [H, S, d]. Outputs: logits [1, vocab] of the last position, then per layer
    present_k_i [H, d, P+T] and present_v_i [H, P+T, d]. One tensor per layer (not a stacked
    cache) because slicing a stacked input copies it on every step.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        dec = model.model.decoder
        self.embed, self.layers, self.norm = dec.embed_tokens, dec.layers, dec.layer_norm
        self.positions = dec.embed_positions
        self.heads = int(model.config.decoder_attention_heads)
        self.register_buffer("no_bias", torch.zeros(int(model.config.vocab_size)))

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        *caches: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        x = self.embed(input_ids[0]) + F.embedding(positions, self.positions.weight)
        presents: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            past_k, past_v, cross_k, cross_v = caches[4 * i : 4 * i + 4]
            a = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            k_t = torch.cat([past_k, _heads(a.k_proj(h), self.heads).transpose(1, 2)], dim=2)
            v = torch.cat([past_v, _heads(a.v_proj(h), self.heads)], dim=1)
            presents += [k_t, v]
            q = _heads(a.q_proj(h) * a.scaling, self.heads)
            x = x + a.out_proj(_attend(q, k_t, v, mask))
            c = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = _heads(c.q_proj(h) * c.scaling, self.heads)
            x = x + c.out_proj(_attend(q, cross_k, cross_v, None))
            x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
        last = self.norm(x[-1:])
        # With a (zero) bias F.linear exports as Gemm(transB=1), which reads the tied embedding
        # in place; without one it becomes MatMul of a folded, transposed 80 MB copy.
        logits = F.linear(last, self.embed.weight, self.get_buffer("no_bias"))
        return (logits, *presents)


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


def cache_names(layers: int) -> tuple[list[str], list[str], list[str]]:
    """Names of the decoder's per-layer inputs (past and cross, interleaved as the graph takes
    them), of the encoder's outputs, and of the decoder's present outputs."""
    inputs, cross, presents = [], [], []
    for i in range(layers):
        inputs += [f"past_k_{i}", f"past_v_{i}", f"cross_k_{i}", f"cross_v_{i}"]
        cross += [f"cross_k_{i}", f"cross_v_{i}"]
        presents += [f"present_k_{i}", f"present_v_{i}"]
    return inputs, cross, presents


def export_decoder(model: Any, path: Path) -> GraphFile:
    """The KV-cache decoder graph, dynamic in T (new tokens) and P (cached tokens)."""
    cfg = model.config
    layers, heads = cfg.decoder_layers, cfg.decoder_attention_heads
    dh, src = cfg.d_model // heads, cfg.max_source_positions
    past, new = 3, 2
    caches, _, presents = cache_names(layers)
    example = [
        torch.zeros(1, new, dtype=torch.int64),
        torch.arange(past, past + new, dtype=torch.int64),
        torch.zeros(new, past + new),
    ]
    dynamic: dict[str, dict[int, str]] = {
        "input_ids": {1: "new"},
        "positions": {0: "new"},
        "mask": {0: "new", 1: "total"},
    }
    for i in range(layers):
        example += [
            torch.zeros(heads, dh, past),
            torch.zeros(heads, past, dh),
            torch.zeros(heads, dh, src),
            torch.zeros(heads, src, dh),
        ]
        dynamic.update(
            {
                f"past_k_{i}": {2: "past"},
                f"past_v_{i}": {1: "past"},
                f"present_k_{i}": {2: "total"},
                f"present_v_{i}": {1: "total"},
            }
        )
    names = ["input_ids", "positions", "mask", *caches]
    outputs = ["logits", *presents]
    _export(
        DecoderGraph(model).eval(),
        tuple(example),
        path,
        input_names=names,
        output_names=outputs,
        dynamic_axes=dynamic,
    )
    return GraphFile(path, tuple(names), tuple(outputs))


def export_encoder(model: Any, path: Path) -> GraphFile:
    """The encoder graph with static shapes (Whisper always sees 3000 frames)."""
    mel = torch.zeros(1, int(model.config.num_mel_bins), N_FRAMES)
    _, cross, _ = cache_names(int(model.config.decoder_layers))
    _export(EncoderGraph(model).eval(), (mel,), path, input_names=["mel"], output_names=cross)
    return GraphFile(path, ("mel",), tuple(cross))


def quantize_int8(float_graph: GraphFile, path: Path) -> GraphFile:
    """Dynamic int8 quantization for the CPU EP: int8 per-channel weights, activations
    quantized per call (MatMulInteger / DynamicQuantizeLinear; VNNI where the CPU has it)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(float_graph.path, path, weight_type=QuantType.QInt8, per_channel=True)
    return GraphFile(path, float_graph.inputs, float_graph.outputs)


def export_cpu(model: Any, out: Path) -> dict[str, GraphFile]:
    """float32 graphs (roles ``encoder_float``, ``decoder_float``: the reference) and their
    int8 versions (roles ``encoder``, ``decoder``: the default, ~2x faster on 2 cores and the
    same words on the test recordings) into ``out``."""
    graphs = {
        "encoder_float": export_encoder(model, out / "encoder_float.onnx"),
        "decoder_float": export_decoder(model, out / "decoder_float.onnx"),
    }
    for role in ("encoder", "decoder"):
        graphs[role] = quantize_int8(graphs[f"{role}_float"], out / f"{role}.onnx")
    return graphs


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
