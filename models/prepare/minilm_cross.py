"""Export of BERT-style cross-encoders (sequence classifiers over (query, document) pairs).

No cross-encoder weights ship in a package here; this writes the folder that
:func:`imagine_edge.models.reranker.load_cross_encoder` reads from any transformers
``*ForSequenceClassification`` with one label.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any, Final

from imagine_edge.models.prepare.minilm_graph import ONNX_OPSET

__all__ = ["export_cross_encoder"]

TOKENIZER: Final = "tokenizer.json"


def export_cross_encoder(hf_dir: Path, out: Path, *, max_tokens: int | None = None) -> Path:
    """Export a transformers sequence classifier over (query, document) pairs to ``out``.

    ``hf_dir`` holds a BERT-style ``*ForSequenceClassification`` (config.json, weights) and a
    ``tokenizer.json``. Writes ``out/model.onnx`` (inputs ``input_ids``, ``attention_mask``,
    ``token_type_ids`` int64 [batch, sequence] -> ``logits`` [batch, num_labels]),
    ``out/tokenizer.json`` and ``out/cross_encoder.json`` (max_tokens, num_labels) -- the folder
    :func:`imagine_edge.models.reranker.load_cross_encoder` reads.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(hf_dir), dtype=torch.float32)
    model.eval()
    labels = int(model.config.num_labels)
    if labels != 1:
        raise ValueError(f"a cross-encoder must have num_labels == 1 (one score), got {labels}")
    out.mkdir(parents=True, exist_ok=True)
    ids = torch.full((2, 8), 100, dtype=torch.int64)
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    dims = {0: "batch", 1: "sequence"}

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, a: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = self.inner(input_ids=a, attention_mask=m, token_type_ids=t)
            return out.logits  # type: ignore[no-any-return]

    # The legacy exporter's deprecation and tracer warnings say nothing about these graphs.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Logits(model),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(out / "model.onnx"),
            input_names=list(inputs),
            output_names=["logits"],
            dynamic_axes={**dict.fromkeys(inputs, dims), "logits": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    shutil.copyfile(hf_dir / TOKENIZER, out / TOKENIZER)
    limit = max_tokens or int(model.config.max_position_embeddings)
    facts = {"max_tokens": limit, "num_labels": labels}
    (out / "cross_encoder.json").write_text(json.dumps(facts), encoding="utf-8")
    return out
