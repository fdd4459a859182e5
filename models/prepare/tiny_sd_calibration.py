"""Calibration inputs of the QNN variant of ``tiny-sd-random``, recorded from the float pipeline.

The UNet and VAE decoder are quantized on the inputs they really see: a few prompts and seeds run
through the torch modules with the runtime's own scheduler and classifier-free guidance, so the
ranges cover both guidance branches and every noise level the sampler visits.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from imagine_edge.models.prepare.tiny_sd_config import MAX_LENGTH

__all__ = ["Feed", "calibration_feeds"]

Feed = dict[str, npt.NDArray[np.float32]]  # one graph run's inputs, by name

_CALIBRATION_PROMPTS: Final = (
    "a red square",
    "a photo of a cat in the snow",
    "an astronaut riding a horse, detailed painting",
    "blurry",
)


def calibration_feeds(pipe: Any, size: int, steps: int = 4) -> tuple[list[Feed], list[Feed]]:
    """UNet and VAE-decoder inputs recorded from the float pipeline at ``size``.

    Runs the torch modules with the runtime's own scheduler (Euler ancestral, the model's
    default) and guidance 6.5 over a few prompts and seeds, so the ranges cover the
    unconditional and conditional branches and every noise level the sampler visits.
    """
    import torch

    tok = pipe.tokenizer
    with torch.inference_mode():
        ids = tok(list(_CALIBRATION_PROMPTS), padding="max_length", max_length=MAX_LENGTH,
                  truncation=True, return_tensors="pt").input_ids  # fmt: skip
        embeds = pipe.text_encoder(ids)[0].numpy()
        uncond = pipe.text_encoder(tok([""], padding="max_length", max_length=MAX_LENGTH,
                                       return_tensors="pt").input_ids)[0].numpy()  # fmt: skip
    unet_feeds: list[Feed] = []
    vae_feeds: list[Feed] = []
    for seed in range(2):
        for p in range(len(_CALIBRATION_PROMPTS)):
            cond = np.concatenate([uncond, embeds[p : p + 1]])
            _trajectory(pipe, cond, size, steps, np.random.default_rng(seed), unet_feeds, vae_feeds)
    return unet_feeds, vae_feeds


def _trajectory(
    pipe: Any,
    cond: npt.NDArray[np.float32],
    size: int,
    steps: int,
    rng: np.random.Generator,
    unet_feeds: list[Feed],
    vae_feeds: list[Feed],
) -> None:
    """One guided sampling run; appends each UNet input row and each decoded latent."""
    import torch

    from imagine_edge.models.text_to_image.schedulers import make_scheduler

    scaling = np.float32(pipe.vae.config.scaling_factor)
    sched = make_scheduler(pipe.scheduler.config)
    sched.set_timesteps(steps)
    x = rng.standard_normal((1, 4, size // 8, size // 8), dtype=np.float32)
    x *= np.float32(sched.init_noise_sigma)
    for i, t in enumerate(sched.timesteps):
        scaled = sched.scale_model_input(x, i)
        unet_feeds.extend(
            {"sample": scaled, "timestep": np.array([t], np.float32), "encoder_hidden_states": c}
            for c in (cond[:1], cond[1:])
        )
        with torch.inference_mode():
            batch = torch.from_numpy(np.concatenate([scaled, scaled]))
            out = pipe.unet(batch, float(t), torch.from_numpy(cond))[0].numpy()
        guided = out[:1] + np.float32(6.5) * (out[1:] - out[:1])
        step = sched.step(guided, i, x, rng.standard_normal(x.shape, dtype=np.float32))
        vae_feeds.append({"latent_sample": step.denoised / scaling})
        x = step.prev_sample
    vae_feeds.append({"latent_sample": x / scaling})
