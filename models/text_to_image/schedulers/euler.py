"""The Euler family, on sigmas (noise-to-signal ratios): ``EulerDiscreteScheduler`` and
``EulerAncestralDiscreteScheduler``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from imagine_edge.models.text_to_image.schedulers.base import (
    F32,
    Scheduler,
    StepOutput,
    spaced_timesteps,
)

__all__ = ["EulerAncestralScheduler", "EulerScheduler"]


class _SigmaScheduler(Scheduler):
    """Euler-family state: sigmas (noise-to-signal ratios) per inference step, plus a final 0."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        if self.config.get("rescale_betas_zero_snr"):
            # Close to 0 without being 0, so the first sigma is finite (as diffusers does).
            self.alphas_cumprod[-1] = 2.0**-24
        train_sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5
        self.train_sigmas = train_sigmas.astype(np.float32)
        self.sigmas = np.concatenate([train_sigmas[::-1], [0.0]]).astype(np.float32)

    @property
    def init_noise_sigma(self) -> float:
        top = float(self.sigmas.max())
        if self.config["timestep_spacing"] in ("linspace", "trailing"):
            return top
        return float((top**2 + 1) ** 0.5)

    def scale_model_input(self, sample: F32, index: int) -> F32:
        sigma = float(self.sigmas[index])
        return np.asarray(sample / ((sigma**2 + 1) ** 0.5), np.float32)

    def _x0_from_sigma(self, out: F32, sample: F32, sigma: float) -> F32:
        pred = self.config["prediction_type"]
        if pred == "epsilon":
            x0 = sample - sigma * out
        elif pred == "v_prediction":
            x0 = out * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        else:
            x0 = out
        return np.asarray(x0, dtype=np.float32)


class EulerScheduler(_SigmaScheduler):
    """``EulerDiscreteScheduler`` with ``s_churn=0`` (deterministic), the pipelines' default."""

    kind = "euler"

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        cfg = self.config
        for flag in ("use_exponential_sigmas", "use_beta_sigmas"):
            if cfg.get(flag):
                raise ValueError(f"EulerDiscreteScheduler with {flag}=True is not supported")
        if cfg.get("timestep_type") == "continuous" and cfg["prediction_type"] == "v_prediction":
            raise ValueError("continuous-time v_prediction (EDM) Euler is not supported")
        if cfg.get("interpolation_type") != "linear":
            raise ValueError(
                f"interpolation_type must be 'linear', got {cfg.get('interpolation_type')!r}"
            )

    def set_timesteps(self, num_inference_steps: int) -> None:
        super().set_timesteps(num_inference_steps)
        timesteps = spaced_timesteps(self.config, num_inference_steps).astype(np.float32)
        train = self.train_sigmas.astype(np.float64)
        sigmas = np.interp(timesteps, np.arange(0, len(train)), train)
        if self.config.get("use_karras_sigmas"):
            sigmas = self._karras(sigmas, num_inference_steps)
            timesteps = np.array([self._sigma_to_t(s, np.log(train)) for s in sigmas])
        if self.config.get("final_sigmas_type", "zero") == "sigma_min":
            last = float(((1 - self.alphas_cumprod[0]) / self.alphas_cumprod[0]) ** 0.5)
        else:
            last = 0.0
        self.sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
        self.timesteps = timesteps.astype(np.float32)

    def _karras(self, sigmas: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.float64]:
        # Karras et al. 2022, eq. 5 with rho = 7.
        cfg_lo, cfg_hi = self.config.get("sigma_min"), self.config.get("sigma_max")
        lo = float(sigmas[-1]) if cfg_lo is None else float(cfg_lo)
        hi = float(sigmas[0]) if cfg_hi is None else float(cfg_hi)
        ramp = np.linspace(0, 1, n)
        rho = 7.0
        out: npt.NDArray[np.float64] = (
            hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))
        ) ** rho
        return out

    @staticmethod
    def _sigma_to_t(sigma: float, log_sigmas: npt.NDArray[np.float64]) -> float:
        log_sigma = np.log(max(sigma, 1e-10))
        dists = log_sigma - log_sigmas
        low = min(int(np.cumsum(dists >= 0).argmax()), len(log_sigmas) - 2)
        lo, hi = log_sigmas[low], log_sigmas[low + 1]
        w = float(np.clip((lo - log_sigma) / (lo - hi), 0, 1))
        return (1 - w) * low + w * (low + 1)

    def step(
        self, model_output: F32, index: int, sample: F32, noise: F32 | None = None
    ) -> StepOutput:
        sigma = float(self.sigmas[index])
        x0 = self._x0_from_sigma(model_output, sample, sigma)
        derivative = (sample - x0) / sigma
        prev = sample + derivative * (float(self.sigmas[index + 1]) - sigma)
        return StepOutput(prev.astype(np.float32), x0.astype(np.float32))


class EulerAncestralScheduler(_SigmaScheduler):
    """``EulerAncestralDiscreteScheduler``: an Euler step to ``sigma_down`` plus fresh noise."""

    kind = "euler_ancestral"

    def set_timesteps(self, num_inference_steps: int) -> None:
        super().set_timesteps(num_inference_steps)
        timesteps = spaced_timesteps(self.config, num_inference_steps).astype(np.float32)
        train = self.train_sigmas.astype(np.float64)
        sigmas = np.interp(timesteps, np.arange(0, len(train)), train)
        self.sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
        self.timesteps = timesteps

    def needs_noise(self, index: int) -> bool:
        # diffusers draws on every step, the last included (where sigma_up is 0).
        return True

    def step(
        self, model_output: F32, index: int, sample: F32, noise: F32 | None = None
    ) -> StepOutput:
        if noise is None:
            raise ValueError("Euler ancestral needs a noise draw on every step")
        sigma_from, sigma_to = float(self.sigmas[index]), float(self.sigmas[index + 1])
        if self.config["prediction_type"] == "sample":
            raise ValueError("Euler ancestral does not support prediction_type='sample'")
        x0 = self._x0_from_sigma(model_output, sample, sigma_from)
        sigma_up = (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        derivative = (sample - x0) / sigma_from
        prev = sample + derivative * (sigma_down - sigma_from) + noise * sigma_up
        return StepOutput(prev.astype(np.float32), x0.astype(np.float32))
