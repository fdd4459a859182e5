"""Diffusion schedulers in numpy, following diffusers' math step for step.

Owns the noise schedules of the text-to-image pipeline (``models/text_to_image.py``): Euler
(``EulerDiscreteScheduler``), Euler ancestral (``EulerAncestralDiscreteScheduler``), DDIM
(``DDIMScheduler``) and LCM (``LCMScheduler``), configured from a diffusers
``scheduler_config.json``. The one-step turbo case is Euler with ``timestep_spacing="trailing"``
and one step (SD-Turbo's own configuration); the pipeline selects it.

Invariants:
- Same formulas, spacings, ``init_noise_sigma`` and ``scale_model_input`` as diffusers 0.42, so a
  model behaves as under its own pipeline; ``tests/models/test_schedulers.py`` checks timesteps,
  sigmas and step outputs against diffusers.
- Randomness is an input (STYLE P3): a stochastic step takes its standard-normal ``noise`` from the
  caller, which owns the seeded generator; :meth:`Scheduler.needs_noise` says when to draw it.
- Steps are addressed by index into ``timesteps``. diffusers locates the index from the timestep
  value, which is the same thing for a full schedule run from its start (the only use here).
- Arrays stay float32 like the latents; schedule constants are computed as diffusers does
  (float32 betas and cumulative products).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "KINDS",
    "Scheduler",
    "SchedulerKind",
    "StepOutput",
    "kind_of_class",
    "make_scheduler",
]

logger = logging.getLogger(__name__)

SchedulerKind = Literal["euler", "euler_ancestral", "ddim", "lcm"]
KINDS: Final[tuple[SchedulerKind, ...]] = ("euler", "euler_ancestral", "ddim", "lcm")

_CLASS_KIND: Final[dict[str, SchedulerKind]] = {
    "EulerDiscreteScheduler": "euler",
    "EulerAncestralDiscreteScheduler": "euler_ancestral",
    "DDIMScheduler": "ddim",
    "LCMScheduler": "lcm",
}

# Constructor defaults per class (diffusers 0.42), for keys a config leaves out.
_COMMON: Final[dict[str, Any]] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "steps_offset": 0,
    "rescale_betas_zero_snr": False,
}
_DEFAULTS: Final[dict[SchedulerKind, dict[str, Any]]] = {
    "euler": {
        **_COMMON,
        "timestep_spacing": "linspace",
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "use_exponential_sigmas": False,
        "use_beta_sigmas": False,
        "sigma_min": None,
        "sigma_max": None,
        "timestep_type": "discrete",
        "final_sigmas_type": "zero",
    },
    "euler_ancestral": {**_COMMON, "timestep_spacing": "linspace"},
    "ddim": {
        **_COMMON,
        "timestep_spacing": "leading",
        "clip_sample": True,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "thresholding": False,
    },
    "lcm": {
        **_COMMON,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "timestep_spacing": "leading",
        "original_inference_steps": 50,
        "clip_sample": False,
        "clip_sample_range": 1.0,
        "set_alpha_to_one": True,
        "thresholding": False,
        "timestep_scaling": 10.0,
    },
}

F32 = npt.NDArray[np.float32]


def kind_of_class(class_name: str) -> SchedulerKind | None:
    """The scheduler kind implementing diffusers class ``class_name``, or None."""
    return _CLASS_KIND.get(class_name)


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


def _spaced_timesteps(cfg: Mapping[str, Any], n: int) -> npt.NDArray[np.float64]:
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
        timesteps = _spaced_timesteps(self.config, num_inference_steps).astype(np.float32)
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
        timesteps = _spaced_timesteps(self.config, num_inference_steps).astype(np.float32)
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
            ts = _spaced_timesteps(self.config, num_inference_steps)
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


_CLASSES: Final[dict[SchedulerKind, type[Scheduler]]] = {
    "euler": EulerScheduler,
    "euler_ancestral": EulerAncestralScheduler,
    "ddim": DDIMScheduler,
    "lcm": LCMScheduler,
}


def make_scheduler(
    config: Mapping[str, Any],
    kind: SchedulerKind | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Scheduler:
    """A scheduler from a diffusers ``scheduler_config.json`` dict.

    ``kind`` defaults to the config's ``_class_name``. Like diffusers' ``from_config``, the keys
    the target class knows carry over from ``config`` (so an SD 1.5 ``PNDMScheduler`` config
    configures DDIM or Euler) and the others take the class defaults; ``overrides`` win over
    both. A class this module does not implement, with no ``kind`` given, raises ValueError.
    """
    class_name = str(config.get("_class_name", ""))
    chosen = kind or kind_of_class(class_name)
    if chosen is None:
        raise ValueError(
            f"scheduler class {class_name!r} is not implemented; supported: "
            f"{sorted(_CLASS_KIND)} (or pass kind= one of {list(KINDS)})"
        )
    if chosen not in _CLASSES:
        raise ValueError(f"scheduler kind must be one of {list(KINDS)}, got {chosen!r}")
    defaults = _DEFAULTS[chosen]
    merged = {k: config.get(k, v) for k, v in defaults.items()}
    merged.update(overrides or {})
    return _CLASSES[chosen](merged)
