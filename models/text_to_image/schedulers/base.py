"""What every scheduler shares: the training noise schedule, the inference timestep spacings and
the :class:`Scheduler` interface (see ``schedulers/__init__.py`` for the invariants).

Schedule constants are computed as diffusers computes them: float32 betas, and cumulative
products accumulated in float64 as torch does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["F32", "Scheduler", "SchedulerKind", "StepOutput", "spaced_timesteps"]

SchedulerKind = Literal["euler", "euler_ancestral", "ddim", "lcm"]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class StepOutput:
    """The sample at the next timestep and the model's current estimate of the clean sample."""

    prev_sample: F32
    denoised: F32


def _betas_for_alpha_bar(n: int, max_beta: float = 0.999) -> npt.NDArray[np.float32]:
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
    return np.asarray(betas, dtype=np.float32)


def _rescale_zero_terminal_snr(betas: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    # Lin et al. 2023, Algorithm 1: shift and scale sqrt(alpha_bar) so the last one is zero.
    sqrt_ab = np.sqrt(np.cumprod(1.0 - betas.astype(np.float64)).astype(np.float32))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * (first / (first - last))
    alphas_bar = sqrt_ab**2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (1.0 - alphas).astype(np.float32)


def _betas(cfg: Mapping[str, Any]) -> npt.NDArray[np.float32]:
    n = int(cfg["num_train_timesteps"])
    schedule = cfg["beta_schedule"]
    if cfg.get("trained_betas") is not None:
        betas = np.asarray(cfg["trained_betas"], dtype=np.float32)
    elif schedule == "linear":
        betas = np.linspace(cfg["beta_start"], cfg["beta_end"], n, dtype=np.float32)
    elif schedule == "scaled_linear":
        # Latent diffusion's schedule: linear in sqrt(beta).
        betas = np.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n, dtype=np.float32)
        betas = betas**2
    elif schedule == "squaredcos_cap_v2":
        betas = _betas_for_alpha_bar(n)
    else:
        raise ValueError(
            f"beta_schedule must be 'linear', 'scaled_linear' or 'squaredcos_cap_v2', "
            f"got {schedule!r}"
        )
    if cfg.get("rescale_betas_zero_snr"):
        betas = _rescale_zero_terminal_snr(betas)
    return betas


def spaced_timesteps(cfg: Mapping[str, Any], n: int) -> npt.NDArray[np.float64]:
    """The ``timestep_spacing`` rule of Table 2 of arXiv:2305.08891, as diffusers applies it."""
    train = int(cfg["num_train_timesteps"])
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        return np.linspace(0, train - 1, n)[::-1].copy()
    if spacing == "leading":
        ratio = train // n
        return (np.arange(0, n) * ratio).round()[::-1].astype(np.float64) + int(cfg["steps_offset"])
    if spacing == "trailing":
        return np.arange(train, 0, -train / n).round() - 1
    raise ValueError(
        f"timestep_spacing must be 'linspace', 'leading' or 'trailing', got {spacing!r}"
    )


class Scheduler:
    """Common state: the training noise schedule and the inference timesteps.

    Use: :meth:`set_timesteps`, then for each index ``i`` of :attr:`timesteps` feed
    ``scale_model_input(x, i)`` and ``timesteps[i]`` to the UNet and call
    ``step(model_output, i, x, noise)``. The first ``x`` is standard-normal noise times
    :attr:`init_noise_sigma`.
    """

    kind: SchedulerKind

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config: dict[str, Any] = dict(config)
        if self.config.get("prediction_type") not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(
                "prediction_type must be 'epsilon', 'v_prediction' or 'sample', "
                f"got {self.config.get('prediction_type')!r}"
            )
        spacing = self.config.get("timestep_spacing")
        if spacing not in ("linspace", "leading", "trailing"):
            raise ValueError(
                f"timestep_spacing must be 'linspace', 'leading' or 'trailing', got {spacing!r}"
            )
        self.betas = _betas(self.config)
        # torch accumulates a float32 cumprod in float64; so do we, or late alphas drift by 1e-6.
        self.alphas_cumprod = np.cumprod(1.0 - self.betas.astype(np.float64)).astype(np.float32)
        self.timesteps: npt.NDArray[Any] = np.zeros(0, np.int64)
        self.num_inference_steps = 0

    @property
    def max_inference_steps(self) -> int:
        """The largest ``num_inference_steps`` this schedule accepts."""
        return int(self.config["num_train_timesteps"])

    @property
    def init_noise_sigma(self) -> float:
        return 1.0

    def set_timesteps(self, num_inference_steps: int) -> None:
        if not 1 <= num_inference_steps <= self.max_inference_steps:
            raise ValueError(
                f"num_inference_steps must be in [1, {self.max_inference_steps}], "
                f"got {num_inference_steps}"
            )
        self.num_inference_steps = num_inference_steps

    def scale_model_input(self, sample: F32, index: int) -> F32:
        return sample

    def needs_noise(self, index: int) -> bool:
        """Whether ``step(..., index, ...)`` uses a ``noise`` draw."""
        return False

    def step(
        self, model_output: F32, index: int, sample: F32, noise: F32 | None = None
    ) -> StepOutput:
        raise NotImplementedError

    def _x0_from_alpha(self, out: F32, sample: F32, alpha_prod: float) -> F32:
        """The predicted clean sample given the cumulative alpha of the current timestep."""
        beta_prod = 1.0 - alpha_prod
        pred = self.config["prediction_type"]
        if pred == "epsilon":
            x0 = (sample - beta_prod**0.5 * out) / alpha_prod**0.5
        elif pred == "sample":
            x0 = out
        else:  # v_prediction
            x0 = alpha_prod**0.5 * sample - beta_prod**0.5 * out
        return np.asarray(x0, dtype=np.float32)

    def _clip(self, x0: F32) -> F32:
        if self.config.get("thresholding"):
            raise ValueError("thresholding=True is not supported (unsuited to latent diffusion)")
        if self.config.get("clip_sample"):
            r = float(self.config["clip_sample_range"])
            return np.clip(x0, -r, r)
        return x0
