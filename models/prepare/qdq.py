"""docs/qnn.md's QDQ recipe for a static float graph, shared by the encoder-style recipes.

``qnn_preprocess_model`` fuses what the HTP cannot run as exported (the Erf sequence of GELU,
decomposed LayerNorm); then uint16 activations and uint8 per-channel weights, calibrated on
recorded input feeds. (MiniLM and the LLM need their own overrides and readers.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy.typing as npt

__all__ = ["FeedReader", "quantize_qdq"]

Feed = Mapping[str, npt.NDArray[Any]]


class FeedReader:
    """An onnxruntime CalibrationDataReader over recorded feeds."""

    def __init__(self, feeds: Iterable[Feed]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
        feed = next(self._feeds, None)
        return None if feed is None else dict(feed)


def quantize_qdq(float_path: Path, out_path: Path, feeds: Iterable[Feed]) -> None:
    """QDQ-quantize ``float_path`` into ``out_path`` for the HTP, calibrated on ``feeds``."""
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import (
        get_qnn_qdq_config,
        qnn_preprocess_model,
    )

    pre = out_path.with_name(out_path.stem + ".pre.onnx")
    source = pre if qnn_preprocess_model(float_path, pre, fuse_layernorm=True) else float_path
    config = get_qnn_qdq_config(
        source,
        FeedReader(feeds),
        activation_type=QuantType.QUInt16,
        weight_type=QuantType.QUInt8,
        per_channel=True,
    )
    quantize(source, out_path, config)
    pre.unlink(missing_ok=True)
