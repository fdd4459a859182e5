"""Diffusion schedulers in numpy, following diffusers' math step for step.

Owns the noise schedules of the text-to-image pipeline (``text_to_image/pipeline.py``): Euler
(``EulerDiscreteScheduler``), Euler ancestral (``EulerAncestralDiscreteScheduler``), DDIM
(``DDIMScheduler``) and LCM (``LCMScheduler``), configured from a diffusers
``scheduler_config.json``. The one-step turbo case is Euler with ``timestep_spacing="trailing"``
and one step (SD-Turbo's own configuration); the pipeline selects it.

Invariants:
- Same formulas, spacings, ``init_noise_sigma`` and ``scale_model_input`` as diffusers 0.42, so a
  model behaves as under its own pipeline; ``tests/models/text_to_image/test_schedulers.py``
  checks timesteps, sigmas and step outputs against diffusers.
- Randomness is an input (STYLE P3): a stochastic step takes its standard-normal ``noise`` from the
  caller, which owns the seeded generator; :meth:`Scheduler.needs_noise` says when to draw it.
- Steps are addressed by index into ``timesteps``. diffusers locates the index from the timestep
  value, which is the same thing for a full schedule run from its start (the only use here).
- Arrays stay float32 like the latents; schedule constants are computed as diffusers does
  (float32 betas and cumulative products).

Layout: the shared schedule math and interface in ``base.py``, one module per family
(``euler.py``, ``ddim.py``, ``lcm.py``), and here the mapping from diffusers class names and
configs to them (:func:`make_scheduler`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final

from imagine_edge.models.text_to_image.schedulers.base import Scheduler, SchedulerKind, StepOutput
from imagine_edge.models.text_to_image.schedulers.ddim import DDIMScheduler
from imagine_edge.models.text_to_image.schedulers.euler import (
    EulerAncestralScheduler,
    EulerScheduler,
)
from imagine_edge.models.text_to_image.schedulers.lcm import LCMScheduler

__all__ = [
    "KINDS",
    "DDIMScheduler",
    "EulerAncestralScheduler",
    "EulerScheduler",
    "LCMScheduler",
    "Scheduler",
    "SchedulerKind",
    "StepOutput",
    "kind_of_class",
    "make_scheduler",
]

logger = logging.getLogger(__name__)

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


def kind_of_class(class_name: str) -> SchedulerKind | None:
    """The scheduler kind implementing diffusers class ``class_name``, or None."""
    return _CLASS_KIND.get(class_name)


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
