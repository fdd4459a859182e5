"""The torch parts of ``tiny-sd-random``: seeded random modules, and the saved pipeline loaded back.

diffusers and transformers are imported inside the functions, untyped (they ship no usable stubs):
they are preparation-time dependencies only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imagine_edge.models.prepare.tiny_sd_config import (
    SEED,
    TEXT_CONFIG,
    UNET_CONFIG,
    VAE_CONFIG,
)

__all__ = ["build_modules", "lib", "load_pipeline", "quiet"]


def lib(name: str) -> Any:
    """A preparation-time library, untyped (diffusers and transformers ship no usable stubs)."""
    import importlib

    return importlib.import_module(name)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' and libraries' warnings (tracer notes, deprecations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def build_modules(vocab_size: int, seed: int = SEED) -> tuple[Any, Any, Any]:
    """(text_encoder, unet, vae) with seeded random weights, in eval mode.

    Each module gets its own seed, so a change to one leaves the others' weights unchanged.
    """
    import torch

    diffusers, transformers = lib("diffusers"), lib("transformers")
    text_config = transformers.CLIPTextConfig(
        vocab_size=vocab_size,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        **TEXT_CONFIG,
    )
    with quiet():
        torch.manual_seed(seed)
        text_encoder = transformers.CLIPTextModel(text_config).eval()
        torch.manual_seed(seed + 1)
        unet = diffusers.UNet2DConditionModel(**UNET_CONFIG).eval()
        torch.manual_seed(seed + 2)
        vae = diffusers.AutoencoderKL(**VAE_CONFIG).eval()
    return text_encoder, unet, vae


def load_pipeline(hf: Path) -> Any:
    """The torch pipeline saved under ``hf`` (diffusers layout), progress bars off."""
    diffusers, transformers = lib("diffusers"), lib("transformers")
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    with quiet():
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(hf), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe
