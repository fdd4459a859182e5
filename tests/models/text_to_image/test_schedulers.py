"""The numpy schedulers against diffusers' own, step by step: timesteps, sigmas, initial noise
scale, model-input scaling and every step's output, for several configurations.

Stochastic steps (Euler ancestral, LCM) get the same noise on both sides: diffusers draws it with
``torch.randn`` from the generator we pass, so we draw it from an identically seeded generator.
Tolerances: both sides compute in float32 from the same float32 schedule constants; the only
differences are the order of float32 operations, so outputs agree to ~1e-6 relative.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from imagine_edge.models.text_to_image.schedulers import KINDS, kind_of_class, make_scheduler

# diffusers' own numpy-2 deprecation (np.array on a torch tensor), not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

DIFFUSERS_CLASS = {
    "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "lcm": "LCMScheduler",
}

SD15: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "clip_sample": False,
    "set_alpha_to_one": False,
}
CONFIGS: dict[str, dict[str, Any]] = {
    "sd15-leading": SD15,
    "linspace": {**SD15, "timestep_spacing": "linspace"},
    "trailing": {**SD15, "timestep_spacing": "trailing"},
    "linear-v": {"beta_schedule": "linear", "prediction_type": "v_prediction"},
    "cosine": {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "trailing"},
    # Zero terminal SNR is meant for v-prediction (epsilon is undefined at alpha_bar = 0).
    "zero-snr": {
        **SD15,
        "rescale_betas_zero_snr": True,
        "timestep_spacing": "trailing",
        "prediction_type": "v_prediction",
    },
}
SHAPE = (1, 4, 4, 4)
RTOL, ATOL = 2e-5, 2e-5


def _pair(kind: str, config: dict[str, Any]) -> tuple[Any, Any]:
    ref = getattr(diffusers, DIFFUSERS_CLASS[kind]).from_config(config)
    ours = make_scheduler({"_class_name": DIFFUSERS_CLASS[kind], **config})
    assert ours.kind == kind
    return ours, ref


def _run_both(kind: str, config: dict[str, Any], steps: int) -> None:
    ours, ref = _pair(kind, config)
    ours.set_timesteps(steps)
    ref.set_timesteps(steps)
    # Karras timesteps are interpolated in float64 by both, then rounded to float32.
    np.testing.assert_allclose(ours.timesteps, ref.timesteps.numpy(), rtol=1e-5)
    assert ours.timesteps.dtype.kind == ref.timesteps.numpy().dtype.kind  # int stays int
    if hasattr(ref, "sigmas"):
        np.testing.assert_allclose(ours.sigmas, ref.sigmas.numpy(), rtol=1e-5)
    assert ours.init_noise_sigma == pytest.approx(float(ref.init_noise_sigma), rel=1e-5)

    # float32 rounding of samples as large as the first sigma (4096 for zero terminal SNR).
    atol = max(ATOL, 1e-6 * ours.init_noise_sigma)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(np.float32) * ours.init_noise_sigma
    x_ref = torch.from_numpy(x.copy())
    for i, t in enumerate(ref.timesteps):
        scaled = ours.scale_model_input(x, i)
        scaled_ref = ref.scale_model_input(x_ref, t)
        np.testing.assert_allclose(scaled, scaled_ref.numpy(), rtol=RTOL, atol=atol)
        out = rng.standard_normal(SHAPE).astype(np.float32)
        seed = 1000 + i
        noise = None
        if ours.needs_noise(i):
            noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)).numpy()
        step = ours.step(out, i, x, noise)
        step_ref = ref.step(
            torch.from_numpy(out), t, x_ref, generator=torch.Generator().manual_seed(seed)
        )
        want = step_ref.prev_sample.numpy()
        np.testing.assert_allclose(step.prev_sample, want, rtol=RTOL, atol=atol)
        x, x_ref = step.prev_sample, step_ref.prev_sample


@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("steps", [1, 4, 25])
def test_matches_diffusers(kind: str, config: str, steps: int) -> None:
    _run_both(kind, CONFIGS[config], steps)


def test_euler_karras_sigmas() -> None:
    _run_both("euler", {**SD15, "use_karras_sigmas": True}, 10)


def test_euler_final_sigma_min() -> None:
    _run_both("euler", {**SD15, "final_sigmas_type": "sigma_min"}, 6)


def test_ddim_eta_noise_is_an_input() -> None:
    ours = make_scheduler({"_class_name": "DDIMScheduler", **SD15})
    ours.eta = 1.0  # type: ignore[attr-defined]
    ref = diffusers.DDIMScheduler.from_config(SD15)
    ours.set_timesteps(5)
    ref.set_timesteps(5)
    x = np.ones(SHAPE, np.float32)
    out = np.full(SHAPE, 0.1, np.float32)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3)).numpy()
    assert ours.needs_noise(0)
    got = ours.step(out, 0, x, noise).prev_sample
    want = ref.step(
        torch.from_numpy(out),
        ref.timesteps[0],
        torch.from_numpy(x),
        eta=1.0,
        generator=torch.Generator().manual_seed(3),
    ).prev_sample
    np.testing.assert_allclose(got, want.numpy(), rtol=RTOL, atol=ATOL)


def test_one_step_turbo_schedule() -> None:
    """SD-Turbo's configuration: Euler, trailing, one step from t=999 straight to sigma 0."""
    turbo = make_scheduler(
        {"_class_name": "EulerDiscreteScheduler", **SD15},
        overrides={"timestep_spacing": "trailing"},
    )
    turbo.set_timesteps(1)
    assert turbo.timesteps.tolist() == [999.0]
    assert turbo.sigmas[-1] == 0.0
    # With sigma_next = 0 an epsilon step returns the predicted clean sample.
    x = np.full(SHAPE, 3.0, np.float32)
    eps = np.full(SHAPE, 0.2, np.float32)
    step = turbo.step(eps, 0, x)
    np.testing.assert_allclose(step.prev_sample, step.denoised, rtol=1e-6)
    np.testing.assert_allclose(step.prev_sample, x - float(turbo.sigmas[0]) * eps, rtol=1e-6)


def test_class_mapping_and_carry_over() -> None:
    assert kind_of_class("EulerAncestralDiscreteScheduler") == "euler_ancestral"
    assert kind_of_class("PNDMScheduler") is None
    pndm = {"_class_name": "PNDMScheduler", **SD15, "skip_prk_steps": True}
    with pytest.raises(ValueError, match="PNDMScheduler"):
        make_scheduler(pndm)
    # As diffusers' from_config: the known keys carry over, the rest take class defaults.
    ddim = make_scheduler(pndm, kind="ddim")
    ref = diffusers.DDIMScheduler.from_config(pndm)
    ddim.set_timesteps(20)
    ref.set_timesteps(20)
    np.testing.assert_array_equal(ddim.timesteps, ref.timesteps.numpy())
    assert ddim.config["clip_sample"] is False


@pytest.mark.parametrize(
    ("kind", "config", "match"),
    [
        ("euler", {"beta_schedule": "quadratic"}, "beta_schedule"),
        ("euler", {"timestep_spacing": "sideways"}, "timestep_spacing"),
        ("euler", {"prediction_type": "flow"}, "prediction_type"),
        ("euler", {"interpolation_type": "log_linear"}, "interpolation_type"),
    ],
)
def test_bad_config_is_named(kind: str, config: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_scheduler({"_class_name": DIFFUSERS_CLASS[kind], **config})


def test_step_count_is_validated() -> None:
    lcm = make_scheduler({"_class_name": "LCMScheduler"})
    assert lcm.max_inference_steps == 50
    with pytest.raises(ValueError, match=r"num_inference_steps must be in \[1, 50\], got 51"):
        lcm.set_timesteps(51)
    with pytest.raises(ValueError, match="got 0"):
        make_scheduler({"_class_name": "DDIMScheduler"}).set_timesteps(0)
