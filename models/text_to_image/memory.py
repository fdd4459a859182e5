"""The working memory of one text-to-image request, estimated before any graph runs, and the
budget that bounds it (#19: one 1024x1024 image grew the process by 2-4 GB).

What grows with the image is attention: self-attention over ``T`` positions holds a ``T x T``
score matrix and its softmax per head and batch row, so it grows with the *square* of the pixel
count. Two places matter:

- the VAE decoder's mid-block attention: one head over every latent position,
  ``T = (width / vae_scale) * (height / vae_scale)`` (16,384 at 1024x1024: 1 GiB per matrix);
- the UNet's first attention level (``CrossAttnDownBlock2D`` at down-block ``i``): ``heads``
  heads over ``T / 4**i`` positions, for each row of the UNet's batch (2 with classifier-free
  guidance: negative and prompt, 1 without).

Besides those, the VAE decoder's full-resolution blocks hold about four tensors of
``block_out_channels[0]`` channels per pixel, and the runtime a fixed ~64 MiB of arenas. Measured
on ``tiny-sd-random`` (peak RSS growth of one image, guided, against this estimate): 256x256 75
vs 80 MiB, 512x512 227 vs 228, 512x1024 555 vs 656, 768x768 708 vs 804, 1024x1024 2155 vs 2304:
the estimate is within 20% and above the measurement. Images of one request run one after
another, so ``n`` does not multiply it.

The budget: ``IMAGINE_EDGE_IMAGE_MEMORY_BUDGET`` (bytes, or with a K/M/G/T suffix, binary;
default :data:`DEFAULT_BUDGET`). A request whose estimate exceeds it is refused before any work
with an ``InvalidRequestError`` (422) naming the estimate, the budget and the largest square
size that fits.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["BUDGET_ENV", "DEFAULT_BUDGET", "WorkingMemory", "budget_from_env"]

BUDGET_ENV: Final = "IMAGINE_EDGE_IMAGE_MEMORY_BUDGET"
DEFAULT_BUDGET: Final = 4 * 2**30
_FLOAT: Final = 4  # bytes
_FIXED: Final = 64 * 2**20
_FULL_RES_TENSORS: Final = 4
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS: Final = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def budget_from_env() -> int:
    """The budget in bytes from ``IMAGINE_EDGE_IMAGE_MEMORY_BUDGET``; ValueError names a bad
    value."""
    raw = os.environ.get(BUDGET_ENV, "").strip()
    if not raw:
        return DEFAULT_BUDGET
    match = _SIZE.match(raw)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(
            f"{BUDGET_ENV} must be a positive size in bytes, optionally with K, M, G or T "
            f"(binary), e.g. 4G; got {raw!r}"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


@dataclass(frozen=True, slots=True)
class WorkingMemory:
    """The shapes the estimate needs, read from a pipeline's UNet and VAE decoder configs."""

    vae_scale: int
    vae_full_channels: int
    unet_attention_level: int | None  # the first down block with attention; None: none
    unet_heads: int

    @classmethod
    def from_configs(cls, unet: Mapping[str, Any], vae: Mapping[str, Any]) -> WorkingMemory:
        vae_blocks = list(vae.get("block_out_channels") or (128, 256, 512, 512))
        kinds = list(unet.get("down_block_types") or ())
        level = next((i for i, kind in enumerate(kinds) if "Attn" in kind), None)
        # diffusers' UNet configs name the head count attention_head_dim (num_attention_heads
        # when set); either may be a list, one per block.
        heads: Any = unet.get("num_attention_heads") or unet.get("attention_head_dim") or 8
        if isinstance(heads, list):
            heads = heads[level or 0] if heads else 8
        return cls(
            vae_scale=int(2 ** (len(vae_blocks) - 1)),
            vae_full_channels=int(vae_blocks[0]),
            unet_attention_level=level,
            unet_heads=int(heads),
        )

    def bytes_for(self, width: int, height: int, *, unet_batch: int) -> int:
        """The estimated peak working memory of one image of ``width`` x ``height``."""
        positions = (width // self.vae_scale) * (height // self.vae_scale)
        vae_attention = 2 * positions**2 * _FLOAT
        unet_attention = 0
        if self.unet_attention_level is not None:
            level_positions = positions // 4**self.unet_attention_level
            unet_attention = 2 * unet_batch * self.unet_heads * level_positions**2 * _FLOAT
        full_res = _FULL_RES_TENSORS * width * height * self.vae_full_channels * _FLOAT
        return vae_attention + unet_attention + full_res + _FIXED

    def largest_square(self, budget: int, *, unet_batch: int, multiple: int) -> int | None:
        """The largest square side (a multiple of ``multiple``) whose estimate fits ``budget``."""
        side, best = multiple, None
        while self.bytes_for(side, side, unet_batch=unet_batch) <= budget and side <= 16384:
            best, side = side, side + multiple
        return best
