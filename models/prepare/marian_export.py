"""Export of a Hugging Face Marian (``MarianMTModel``, opus-mt) to two ONNX graphs.

The simplest correct form, without a KV cache: the decoder graph takes the whole decoder input
so far at every step, so decoding a sentence of n tokens costs O(n²) decoder work (the catalog's
Bergamot graphs keep SSRU states instead). Float32; torch is needed here only.

- ``encoder.onnx``: ``input_ids``, ``attention_mask`` int64 [batch, source] ->
  ``encoder_hidden_states`` float32 [batch, source, d_model].
- ``decoder.onnx``: ``decoder_input_ids`` int64 [batch, target], ``encoder_hidden_states``,
  ``encoder_attention_mask`` int64 [batch, source] -> ``logits`` float32 [batch, vocab] of the
  last target position (the LM head with ``final_logits_bias``, as ``MarianMTModel`` computes).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Final

from imagine_edge.models.prepare.minilm_graph import ONNX_OPSET

__all__ = ["DECODER_INPUTS", "ENCODER_INPUTS", "export_marian"]

ENCODER_INPUTS: Final = ("input_ids", "attention_mask")
DECODER_INPUTS: Final = ("decoder_input_ids", "encoder_hidden_states", "encoder_attention_mask")


def export_marian(hf_dir: Path, out: Path) -> tuple[Path, Path]:
    """Write ``out/encoder.onnx`` and ``out/decoder.onnx`` from the folder ``hf_dir``."""
    import torch
    from transformers import MarianMTModel

    loader: Any = MarianMTModel  # from_pretrained is untyped
    model = loader.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    out.mkdir(parents=True, exist_ok=True)

    class Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            hidden = self.inner.get_encoder()(input_ids=ids, attention_mask=mask)
            return hidden.last_hidden_state  # type: ignore[no-any-return]

    class Decoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self, ids: torch.Tensor, hidden: torch.Tensor, mask: torch.Tensor
        ) -> torch.Tensor:
            result = self.inner(
                attention_mask=mask,
                encoder_outputs=(hidden,),
                decoder_input_ids=ids,
                use_cache=False,
            )
            return result.logits[:, -1, :]  # type: ignore[no-any-return]

    source = torch.full((2, 7), 3, dtype=torch.int64)
    target = torch.full((2, 5), 3, dtype=torch.int64)
    hidden = torch.zeros((2, 7, int(model.config.d_model)), dtype=torch.float32)
    encoder, decoder = out / "encoder.onnx", out / "decoder.onnx"
    src = {0: "batch", 1: "source"}
    # The legacy exporter's deprecation and tracer warnings say nothing about these graphs.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Encoder(model),
            (source, torch.ones_like(source)),
            str(encoder),
            input_names=list(ENCODER_INPUTS),
            output_names=["encoder_hidden_states"],
            dynamic_axes={
                "input_ids": src,
                "attention_mask": src,
                "encoder_hidden_states": src,
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        torch.onnx.export(
            Decoder(model),
            (target, hidden, torch.ones_like(source)),
            str(decoder),
            input_names=list(DECODER_INPUTS),
            output_names=["logits"],
            dynamic_axes={
                "decoder_input_ids": {0: "batch", 1: "target"},
                "encoder_hidden_states": src,
                "encoder_attention_mask": src,
                "logits": {0: "batch"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return encoder, decoder
