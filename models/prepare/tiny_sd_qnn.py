"""The ``qnn`` variant of ``tiny-sd-random``: static QDQ UNet and VAE decoder for the HTP.

UNet and VAE decoder with static shapes (batch 1, ``QNN_SIZE`` square), GroupNorm exported without
Reshapes (see :func:`_group_norm_without_reshape`), QDQ-quantized (uint16 activations, uint8
weights) on inputs recorded from the float pipeline (:mod:`.tiny_sd_calibration`); the text
encoder stays float and runs on the CPU EP.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from imagine_edge.models.prepare.qdq import quantize_qdq
from imagine_edge.models.prepare.tiny_sd_calibration import calibration_feeds
from imagine_edge.models.prepare.tiny_sd_config import QNN_SIZE
from imagine_edge.models.prepare.tiny_sd_export import (
    OPSET,
    export_text_encoder,
    export_unet,
    export_vae_decoder,
    float_hf,
    write_layout,
)
from imagine_edge.models.prepare.tiny_sd_modules import load_pipeline, quiet
from imagine_edge.models.store import GraphFile, Manifest, Variant

if TYPE_CHECKING:
    import torch

__all__ = ["prepare_qnn"]


def _group_norm_without_reshape(
    input: torch.Tensor,  # torch's parameter name, so the function can stand in for it
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """GroupNorm from 4-D ops only: global average pools and a 1x1 convolution that averages
    the channels of each group (equal to torch's to ~5e-7).

    torch exports GroupNorm as Reshape -> InstanceNormalization -> Reshape; on the HTP backend
    (onnxruntime-qnn 2.7) that pattern followed by SiLU and a Conv computes wrong values
    (correlation ~0.4 with the CPU EP on the same QDQ graph), whether the normalisation is an
    InstanceNormalization or a LayerNormalization. Without the Reshapes the UNet agrees with the
    CPU EP to a correlation of 0.999998.
    """
    import torch
    import torch.nn.functional as F

    x = input
    if x.dim() == 3:  # attention blocks normalise [batch, channels, tokens]
        return _group_norm_without_reshape(x[..., None], num_groups, weight, bias, eps)[..., 0]
    k = x.shape[1] // num_groups
    group_mean = np.kron(np.eye(num_groups), np.full((k, k), 1.0 / k)).astype(np.float32)
    avg = torch.from_numpy(group_mean)[:, :, None, None]
    mean = F.conv2d(F.adaptive_avg_pool2d(x, 1), avg)
    centred = x - mean
    var = F.conv2d(F.adaptive_avg_pool2d(centred * centred, 1), avg)
    y = centred / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight[:, None, None]
    if bias is not None:
        y = y + bias[:, None, None]
    return y


@contextmanager
def _htp_group_norm() -> Iterator[None]:
    """Export GroupNorm as :func:`_group_norm_without_reshape` inside the block."""
    import torch.nn.functional as F

    original = F.group_norm
    F.group_norm = _group_norm_without_reshape  # nn.GroupNorm.forward looks it up per call
    try:
        yield
    finally:
        F.group_norm = original


def prepare_qnn(manifest: Manifest, out: Path) -> Variant:
    """Static-shape QDQ UNet and VAE decoder at ``QNN_SIZE``, float text encoder for the CPU."""
    hf = float_hf(manifest)
    pipe = load_pipeline(hf)
    scratch = out / ".float"
    with _htp_group_norm():
        unet_float = export_unet(pipe, scratch / "unet", QNN_SIZE)
        vae_float = export_vae_decoder(pipe, scratch / "vae_decoder", QNN_SIZE)
    unet_feeds, vae_feeds = calibration_feeds(pipe, QNN_SIZE)
    graphs = {"text_encoder": export_text_encoder(pipe, out / "text_encoder")}
    for role, float_graph, feeds in (
        ("unet", unet_float, unet_feeds),
        ("vae_decoder", vae_float, vae_feeds),
    ):
        (out / role).mkdir()
        target = out / role / "model.onnx"
        with quiet():
            quantize_qdq(float_graph.path, target, feeds)
        shutil.copyfile(float_graph.path.parent / "config.json", out / role / "config.json")
        graphs[role] = GraphFile(target, float_graph.inputs, float_graph.outputs)
    shutil.rmtree(scratch)
    write_layout(pipe, hf, out)
    return Variant(
        ep="qnn",
        dir=out,
        quantization="QDQ uint16 activations / uint8 per-channel weights (unet, vae_decoder)",
        graphs=graphs,
        options={"image_size": f"{QNN_SIZE}x{QNN_SIZE}", "batch": 1, "opset": OPSET},
        notes=(
            f"UNet and VAE decoder with static shapes (batch 1, {QNN_SIZE}x{QNN_SIZE} images) "
            "for the QNN HTP backend; guidance runs them twice per step. The text encoder is "
            "float32 for the CPU EP."
        ),
    )
