"""What ``tiny-sd-random`` is: its name, seed, sizes and the architecture configs of its parts.

Toy sizes of the real Stable Diffusion 1.x classes (diffusers ``UNet2DConditionModel`` and
``AutoencoderKL``, transformers ``CLIPTextModel``), small enough that the client's default request
(512x512, 20 steps) takes seconds on a CPU and the 64x64 QNN graphs stay affordable on the HTP
simulator.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "HF_DIR",
    "MAX_LENGTH",
    "NAME",
    "QNN_SIZE",
    "SCHEDULER_CONFIG",
    "SEED",
    "TEXT_CONFIG",
    "UNET_CONFIG",
    "VAE_CONFIG",
]

NAME: Final = "tiny-sd-random"
SEED: Final = 0
# Image side of the static QNN graphs: latents of 8x8 keep the HTP simulator affordable.
QNN_SIZE: Final = 64
HF_DIR: Final = "hf"
MAX_LENGTH: Final = 77

UNET_CONFIG: Final[dict[str, Any]] = {
    "sample_size": QNN_SIZE // 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    # Attention only at the lowest resolution (1/32 of the image side) and 16 channels: cheap
    # enough that the client's default request (512x512, 20 steps) takes seconds.
    "block_out_channels": (16, 16, 16),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}
# Four blocks, so the latent is 1/8 of the image side, as in every SD 1.x/2.x VAE.
VAE_CONFIG: Final[dict[str, Any]] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (8, 16, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": QNN_SIZE,
}
TEXT_CONFIG: Final[dict[str, Any]] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": MAX_LENGTH,
    "projection_dim": 32,
}
# SD 1.x's schedule; Euler ancestral is the pipeline's default sampler here.
SCHEDULER_CONFIG: Final[dict[str, Any]] = {
    "_class_name": "EulerAncestralDiscreteScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}
