"""``DDIMScheduler``: denoising diffusion implicit models on the cumulative alphas."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from imagine_edge.models.text_to_image.schedulers.base import (
    F32,
    Scheduler,
    StepOutput,
    spaced_timesteps,
)

__all__ = ["DDIMScheduler"]


class DDIMScheduler(Scheduler):
    """``DDIMScheduler``; ``eta=0`` (the default) is deterministic."""

    kind = "ddim"

    def __init__(self, config: Mapping[str, Any], eta: float = 0.0) -> None:
        super().__init__(config)
        self.eta = eta
        # The "previous" alpha of the last step: 1, or the first training alpha.
        self.final_alpha_cumprod = (
            1.0 if self.config["set_alpha_to_one"] else float(self.alphas_cumprod[0])
        )

    def set_timesteps(self, num_inference_steps: int) -> None:
        super().set_timesteps(num_inference_steps)
        train = int(self.config["num_train_timesteps"])
        if self.config["timestep_spacing"] == "linspace":
            ts = np.linspace(0, train - 1, num_inference_steps).round()[::-1]
        else:
            ts = spaced_timesteps(self.config, num_inference_steps)
        self.timesteps = ts.astype(np.int64)

    def needs_noise(self, index: int) -> bool:
        return self.eta > 0

    def _alpha(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha_cumprod

    def step(
        self, model_output: F32, index: int, sample: F32, noise: F32 | None = None
    ) -> StepOutput:
        t = int(self.timesteps[index])
        # DDIM's previous timestep is a fixed stride back, whatever the spacing (as diffusers).
        prev_t = t - int(self.config["num_train_timesteps"]) // self.num_inference_steps
        a_t, a_prev = self._alpha(t), self._alpha(prev_t)
        b_t = 1.0 - a_t
        pred = self.config["prediction_type"]
        x0 = self._x0_from_alpha(model_output, sample, a_t)
        if pred == "epsilon":
            eps = model_output
        elif pred == "sample":
            eps = (sample - a_t**0.5 * x0) / b_t**0.5
        else:
            eps = a_t**0.5 * model_output + b_t**0.5 * sample
        x0 = self._clip(x0)
        variance = ((1 - a_prev) / b_t) * (1 - a_t / a_prev)
        std = self.eta * variance**0.5
        prev = a_prev**0.5 * x0 + (1 - a_prev - std**2) ** 0.5 * eps
        if self.eta > 0:
            if noise is None:
                raise ValueError("DDIM with eta > 0 needs a noise draw")
            prev = prev + std * noise
        return StepOutput(prev.astype(np.float32), x0.astype(np.float32))
