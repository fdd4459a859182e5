"""``LCMScheduler``: latent consistency model steps on the distillation schedule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from imagine_edge.models.text_to_image.schedulers.base import F32, Scheduler, StepOutput

__all__ = ["LCMScheduler"]


class LCMScheduler(Scheduler):
    """``LCMScheduler``: consistency-model steps on the distillation schedule."""

    kind = "lcm"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.final_alpha_cumprod = (
            1.0 if self.config["set_alpha_to_one"] else float(self.alphas_cumprod[0])
        )

    @property
    def max_inference_steps(self) -> int:
        return int(self.config["original_inference_steps"])

    def set_timesteps(self, num_inference_steps: int) -> None:
        super().set_timesteps(num_inference_steps)
        original = int(self.config["original_inference_steps"])
        k = int(self.config["num_train_timesteps"]) // original
        origin = (np.arange(1, original + 1) * k - 1)[::-1]
        # Evenly spaced indices into the distillation schedule.
        idx = np.floor(np.linspace(0, len(origin), num_inference_steps, endpoint=False))
        self.timesteps = origin[idx.astype(np.int64)].astype(np.int64)

    def needs_noise(self, index: int) -> bool:
        # No noise on the last step, hence none at all in one-step sampling.
        return index != self.num_inference_steps - 1

    def step(
        self, model_output: F32, index: int, sample: F32, noise: F32 | None = None
    ) -> StepOutput:
        t = int(self.timesteps[index])
        last = index + 1 >= len(self.timesteps)
        prev_t = t if last else int(self.timesteps[index + 1])
        a_prev = float(self.alphas_cumprod[prev_t]) if prev_t >= 0 else self.final_alpha_cumprod
        # Boundary-condition scalings with sigma_data = 0.5.
        scaled = t * float(self.config["timestep_scaling"])
        c_skip = 0.25 / (scaled**2 + 0.25)
        c_out = scaled / (scaled**2 + 0.25) ** 0.5
        x0 = self._clip(self._x0_from_alpha(model_output, sample, float(self.alphas_cumprod[t])))
        denoised = c_out * x0 + c_skip * sample
        if self.needs_noise(index):
            if noise is None:
                raise ValueError("LCM needs a noise draw on every step but the last")
            prev = a_prev**0.5 * denoised + (1 - a_prev) ** 0.5 * noise
        else:
            prev = denoised
        return StepOutput(prev.astype(np.float32), denoised.astype(np.float32))
