"""The text-to-image working-memory budget: the estimate against a measured peak on the real
tiny-sd-random pipeline, and a request over the budget refused before any work, naming it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from imagine_edge.models.text_to_image.memory import (
    BUDGET_ENV,
    DEFAULT_BUDGET,
    WorkingMemory,
    budget_from_env,
)
from imagine_edge.models.text_to_image.pipeline import StableDiffusionOnnx, load_tiny_sd_random
from imagine_edge.runtime.memory import release_free_memory
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import ImageRequest

MIB = 2**20
TINY_UNET = {"down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
             "attention_head_dim": 4}  # fmt: skip
TINY_VAE = {"block_out_channels": [8, 16, 32, 32]}
SD15_UNET = {
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "attention_head_dim": 8,
}
SD15_VAE = {"block_out_channels": [128, 256, 512, 512]}


def test_the_estimate_grows_with_the_square_of_the_pixels() -> None:
    tiny = WorkingMemory.from_configs(TINY_UNET, TINY_VAE)
    assert (tiny.vae_scale, tiny.unet_attention_level, tiny.unet_heads) == (8, 2, 4)
    assert tiny.bytes_for(1024, 1024, unet_batch=2) == 2304 * MIB
    assert tiny.bytes_for(512, 512, unet_batch=2) == 228 * MIB
    # SD 1.5: eight heads at the latent resolution, twice with guidance, dominate.
    sd15 = WorkingMemory.from_configs(SD15_UNET, SD15_VAE)
    guided, unguided = (sd15.bytes_for(512, 512, unet_batch=b) for b in (2, 1))
    assert guided > 2 * 2**30 > unguided
    assert sd15.largest_square(DEFAULT_BUDGET, unet_batch=2, multiple=64) == 512


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", DEFAULT_BUDGET), ("1G", 2**30), ("512M", 512 * MIB), ("3000000", 3_000_000),
     ("1.5GiB", 3 * 2**29)],
)  # fmt: skip
def test_the_budget_comes_from_the_environment(
    raw: str, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BUDGET_ENV, raw)
    assert budget_from_env() == expected


@pytest.mark.parametrize("raw", ["lots", "-1G", "0"])
def test_a_bad_budget_is_named(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUDGET_ENV, raw)
    with pytest.raises(ValueError, match=BUDGET_ENV):
        budget_from_env()


@pytest.fixture(scope="module")
def pipeline() -> StableDiffusionOnnx:
    model = load_tiny_sd_random()
    yield model
    model.close()


def _request(size: str) -> ImageRequest:
    return ImageRequest(
        prompt="a lighthouse", model="tiny-sd-random", size=size, num_inference_steps=1,
        guidance_scale=6.5, seed=1, stream=False,
    )  # fmt: skip


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/self/status")


@pytest.mark.model
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="resets the peak RSS")
def test_the_estimate_bounds_the_measured_peak(pipeline: StableDiffusionOnnx) -> None:
    pipeline.generate_png(_request("64x64"), 0, threading.Event())  # sessions warm
    release_free_memory()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_bytes("VmRSS")
    pipeline.generate_png(_request("768x768"), 0, threading.Event())
    peak = _status_bytes("VmHWM") - before
    estimate = pipeline.memory.bytes_for(768, 768, unet_batch=2)
    print(f"768x768: measured peak growth {peak / MIB:.0f} MiB, estimate {estimate / MIB:.0f}")
    assert peak <= estimate <= 1.5 * peak


@pytest.mark.model
def test_a_request_over_the_budget_is_refused_before_any_work(
    pipeline: StableDiffusionOnnx,
) -> None:
    pipeline.memory_budget = 1024 * MIB
    try:
        with pytest.raises(InvalidRequestError) as refused:
            pipeline.generate_png(_request("1024x1024"), 0, threading.Event())
        message = str(refused.value)
        assert "1024x1024 image needs about 2304 MiB" in message
        assert f"budget of 1024 MiB ({BUDGET_ENV})" in message
        assert "800x800 fits" in message
        assert pipeline.generate_png(_request("512x512"), 0, threading.Event())[:4] == b"\x89PNG"
    finally:
        pipeline.memory_budget = DEFAULT_BUDGET
