"""Text-to-image end to end on ``tiny-sd-random`` (untrained, built by the store on first use).

Depths: the real pipeline's determinism and seed semantics on PNG bytes; agreement with
diffusers' own ``StableDiffusionPipeline`` on the same weights; request validation; and placement
on the QNN HTP simulator (marked ``qnn``). The tokenizer is checked against transformers' in
``test_tokenizer.py``.

Parity tolerance: our images and diffusers' (float in [0, 1], 64x64 and 128x64, guidance 6.5
with a negative prompt, two steps) differ by at most 2e-5 where measured (ONNX Runtime's and
torch's float32 kernels sum in different orders), so the test allows 1e-4, still 40 times below
one 8-bit level (1/255), and then checks the 8-bit pixels differ by at most one level (rounding
of values that straddle a level boundary).
"""

from __future__ import annotations

import dataclasses
import shutil
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imagine_edge.models.catalog import get_entry, prepared
from imagine_edge.models.prepare.tiny_sd import NAME, QNN_SIZE
from imagine_edge.models.store import Manifest
from imagine_edge.models.text_to_image.pipeline import (
    StableDiffusionOnnx,
    encode_png,
    load_image_generator,
    load_tiny_sd_random,
)
from imagine_edge.sdk.errors import InvalidRequestError, ModelRunError
from imagine_edge.sdk.types import ImageRequest

# diffusers' own numpy-2 deprecation (np.array on a torch tensor), not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

PROMPT = "a red square"
PARITY_ATOL = 1e-4


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return prepared(NAME, ["cpu"])


@pytest.fixture(scope="module")
def model(manifest: Manifest) -> StableDiffusionOnnx:
    return StableDiffusionOnnx(manifest.variant("cpu").dir, target="cpu")


def _request(**fields: Any) -> ImageRequest:
    base: dict[str, Any] = {"prompt": PROMPT, "model": NAME, "stream": False, "size": "64x64"}
    base["num_inference_steps"] = 3
    return ImageRequest(**{**base, **fields})


def _decode_png(data: bytes) -> np.ndarray:
    """Pixels of an 8-bit RGB PNG whose rows all use filter 0 (what encode_png writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        assert zlib.crc32(kind + body) == crc
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
            size = (height, width)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(size[0], 1 + size[1] * 3)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(size[0], size[1], 3)


# --------------------------------------------------------------------------- PNG and seeds


def test_png_round_trip() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = encode_png(pixels)
    np.testing.assert_array_equal(_decode_png(data), pixels)
    assert encode_png(pixels) == data
    with pytest.raises(ValueError, match="shape"):
        encode_png(pixels[..., :2])


def test_same_seed_same_png_bytes(model: StableDiffusionOnnx) -> None:
    request = _request(seed=11)
    first = model.generate_png(request, 0, threading.Event())
    assert model.generate_png(request, 0, threading.Event()) == first
    pixels = _decode_png(first)
    assert pixels.shape == (64, 64, 3)
    assert pixels.std() > 5  # noise-like, not a flat image


def test_different_seeds_differ(model: StableDiffusionOnnx) -> None:
    a = model.generate_png(_request(seed=1), 0, threading.Event())
    b = model.generate_png(_request(seed=2), 0, threading.Event())
    assert a != b


def test_image_i_uses_seed_plus_i_times_increment(model: StableDiffusionOnnx) -> None:
    request = _request(seed=5, seed_increment=100, n=2)
    first = model.generate_png(request, 0, threading.Event())
    second = model.generate_png(request, 1, threading.Event())
    assert first != second
    assert second == model.generate_png(_request(seed=105), 0, threading.Event())
    # Negative seeds are taken modulo 2**64 rather than rejected.
    assert model.generate_png(_request(seed=-1), 0, threading.Event())


# --------------------------------------------------------------------------- parity


class _TorchNoise:
    """A numpy-Generator stand-in drawing from torch, so stochastic steps match diffusers'."""

    def __init__(self, seed: int) -> None:
        import torch

        self._torch = torch
        self._gen = torch.Generator().manual_seed(seed)

    def standard_normal(self, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        return self._torch.randn(shape, generator=self._gen).numpy().astype(dtype)


@pytest.fixture(scope="module")
def diffusers_pipe(manifest: Manifest) -> Any:
    diffusers = pytest.importorskip("diffusers")
    assert manifest.float_weights is not None
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        str(manifest.float_weights), safety_checker=None
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    ("kind", "scheduler_class", "width", "height"),
    [
        ("ddim", "DDIMScheduler", 64, 64),
        ("euler", "EulerDiscreteScheduler", 64, 64),
        ("euler_ancestral", "EulerAncestralDiscreteScheduler", 64, 64),
        ("lcm", "LCMScheduler", 64, 64),
        ("ddim", "DDIMScheduler", 128, 64),  # not square: width and height kept apart
    ],
)
def test_matches_diffusers_pipeline(
    manifest: Manifest,
    diffusers_pipe: Any,
    kind: str,
    scheduler_class: str,
    width: int,
    height: int,
) -> None:
    import diffusers
    import torch

    diffusers_pipe.scheduler = getattr(diffusers, scheduler_class).from_config(
        diffusers_pipe.scheduler.config
    )
    ours = StableDiffusionOnnx(manifest.variant("cpu").dir, target="cpu", scheduler=kind)
    latents = np.random.default_rng(3).standard_normal((1, 4, height // 8, width // 8), np.float32)
    want = diffusers_pipe(
        PROMPT,
        negative_prompt="blurry",
        num_inference_steps=2,
        guidance_scale=6.5,
        height=height,
        width=width,
        latents=torch.from_numpy(latents),
        generator=torch.Generator().manual_seed(7),
        output_type="np",
    ).images[0]
    got = ours.generate(
        PROMPT,
        width=width,
        height=height,
        steps=2,
        guidance_scale=6.5,
        negative_prompt="blurry",
        rng=_TorchNoise(7),  # type: ignore[arg-type]
        latents=latents,
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=PARITY_ATOL)
    levels = np.abs((got * 255).round() - (want * 255).round())
    assert levels.max() <= 1


# --------------------------------------------------------------------------- pipeline policies


def _unet_batches(model: StableDiffusionOnnx, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the batch size of every UNet session run."""
    calls: list[int] = []
    session = model.unet.loaded.session
    run = session.run

    def spy(names: Any, feeds: Any) -> Any:
        calls.append(len(feeds["sample"]))
        return run(names, feeds)

    monkeypatch.setattr(session, "run", spy)
    return calls


def test_guidance_at_most_one_skips_cfg(
    model: StableDiffusionOnnx, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _unet_batches(model, monkeypatch)
    plain = model.generate_png(
        _request(guidance_scale=1.0, negative_prompt="x"), 0, threading.Event()
    )
    assert calls == [1, 1, 1]
    other_negative = _request(guidance_scale=1.0, negative_prompt="something else")
    assert model.generate_png(other_negative, 0, threading.Event()) == plain
    calls.clear()
    guided = model.generate_png(_request(guidance_scale=6.5), 0, threading.Event())
    assert calls == [2, 2, 2]
    assert guided != plain
    other = model.generate_png(
        _request(guidance_scale=6.5, negative_prompt="red"), 0, threading.Event()
    )
    assert other != guided  # the negative prompt matters under guidance


def test_turbo_runs_one_unguided_step(manifest: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    turbo = StableDiffusionOnnx(manifest.variant("cpu").dir, target="cpu", turbo=True)
    assert turbo.turbo
    calls = _unet_batches(turbo, monkeypatch)
    png = turbo.generate_png(
        _request(num_inference_steps=20, guidance_scale=6.5), 0, threading.Event()
    )
    assert calls == [1]
    same = _request(num_inference_steps=1, guidance_scale=0.0, negative_prompt=None)
    assert turbo.generate_png(same, 0, threading.Event()) == png


@pytest.mark.parametrize("kind", ["euler", "euler_ancestral", "ddim", "lcm"])
def test_every_scheduler_runs(manifest: Manifest, kind: str) -> None:
    gen = StableDiffusionOnnx(manifest.variant("cpu").dir, target="cpu", scheduler=kind)
    image = gen.generate(
        PROMPT, width=64, height=32, steps=3, guidance_scale=3.0, negative_prompt=None,
        rng=np.random.default_rng(0),
    )  # fmt: skip
    assert image.shape == (32, 64, 3)
    assert np.isfinite(image).all()
    assert image.min() >= 0.0
    assert image.max() <= 1.0
    assert len(gen.last_timings.unet_steps) == 3


def test_older_optimum_unet_interface(manifest: Manifest, tmp_path: Path) -> None:
    """Older optimum exports take one int64 timestep per batch row instead of a float scalar:
    the same weights behind that interface give the same image (DDIM timesteps are integers)."""
    import onnx
    from onnx import TensorProto, helper

    folder = tmp_path / "old-export"
    shutil.copytree(manifest.variant("cpu").dir, folder)
    graph_path = folder / "unet" / "model.onnx"
    model = onnx.load(str(graph_path))
    for node in model.graph.node:
        node.input[:] = ["timestep_f" if i == "timestep" else i for i in node.input]
    old = next(i for i in model.graph.input if i.name == "timestep")
    model.graph.input.remove(old)
    model.graph.input.append(
        helper.make_tensor_value_info("timestep", TensorProto.INT64, ["steps"])
    )
    zero = helper.make_tensor("zero", TensorProto.INT64, [], [0])
    model.graph.initializer.append(zero)
    model.graph.node.insert(0, helper.make_node("Gather", ["timestep_i", "zero"], ["timestep_f"]))
    model.graph.node.insert(0, helper.make_node("Cast", ["timestep"], ["timestep_i"], to=1))
    onnx.save(model, str(graph_path))

    kwargs: dict[str, Any] = {
        "width": 64, "height": 64, "steps": 3, "guidance_scale": 5.0, "negative_prompt": None,
    }  # fmt: skip
    old_style = StableDiffusionOnnx(folder, target="cpu", scheduler="ddim")
    assert old_style.unet.dtypes["timestep"] is np.int64
    current = StableDiffusionOnnx(manifest.variant("cpu").dir, target="cpu", scheduler="ddim")
    got = old_style.generate(PROMPT, rng=np.random.default_rng(1), **kwargs)
    want = current.generate(PROMPT, rng=np.random.default_rng(1), **kwargs)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("size", "match"),
    [
        ("100x64", r"multiples of 32 in \[32, 1024\].*'100x64'"),
        ("2048x2048", r"multiples of 32 in \[32, 1024\]"),
        ("0x64", "multiples of 32"),
        ("big", "512x512"),
    ],
)
def test_size_validation(model: StableDiffusionOnnx, size: str, match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        model.generate_png(_request(size=size), 0, threading.Event())


def test_size_multiple_comes_from_the_configs(model: StableDiffusionOnnx) -> None:
    # VAE of 4 blocks (x8) and a UNet of 3 blocks (x4): SD 1.5's would give 8 * 8 = 64.
    assert (model.vae_scale, model.size_multiple) == (8, 32)
    assert model.parse_size("96x32") == (96, 32)


def test_step_count_validation(manifest: Manifest) -> None:
    lcm = StableDiffusionOnnx(manifest.variant("cpu").dir, target="cpu", scheduler="lcm")
    with pytest.raises(InvalidRequestError, match=r"num_inference_steps must be in \[1, 50\]"):
        lcm.generate_png(_request(num_inference_steps=60), 0, threading.Event())


def test_cancel_stops_between_steps(model: StableDiffusionOnnx) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ModelRunError, match="cancelled after 0 of 3 steps"):
        model.generate_png(_request(), 0, cancel)


def test_not_a_model_folder(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelRunError, match=r"missing text_encoder/model\.onnx, unet/model\.onnx"):
        StableDiffusionOnnx(tmp_path)


def test_catalog_says_untrained(model: StableDiffusionOnnx) -> None:
    entry = get_entry("tiny-sd")
    assert entry.name == NAME
    assert "UNTRAINED" in entry.description
    assert "random" in entry.model_card.lower()
    assert "SD-Turbo" in entry.model_card
    assert "optimum" in entry.model_card
    assert model.execution_provider == "CPUExecutionProvider"
    assert model.resident_bytes() > 100_000


def test_the_catalog_loader_follows_the_target_variable(
    manifest: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu_only = dataclasses.replace(manifest, variants={"cpu": manifest.variant("cpu")})
    monkeypatch.delenv("IMAGINE_EDGE_TEXT_TO_IMAGE_TARGET", raising=False)
    plain = load_image_generator(cpu_only)
    assert plain.execution_provider == "CPUExecutionProvider"
    monkeypatch.setenv("IMAGINE_EDGE_TEXT_TO_IMAGE_TARGET", "auto")
    auto = load_image_generator(cpu_only)
    assert auto.execution_provider == "CPUExecutionProvider (fallback: no prepared QNN graphs)"
    request = _request(seed=3)
    first = auto.generate_png(request, 0, threading.Event())
    assert first == plain.generate_png(request, 0, threading.Event())
    for m in (plain, auto):
        m.close()
    monkeypatch.setenv("IMAGINE_EDGE_TEXT_TO_IMAGE_TARGET", "npu")
    with pytest.raises(ValueError, match="TEXT_TO_IMAGE_TARGET must be cpu, qnn or auto"):
        load_image_generator(cpu_only)


# --------------------------------------------------------------------------- QNN


@pytest.fixture(scope="module")
def qnn_folder() -> Path:
    return prepared(NAME, ["qnn"]).variant("qnn").dir


def test_static_graphs_on_cpu(qnn_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The QDQ variant on the CPU EP: one size only, a static batch of 1 run twice per step."""
    gen = StableDiffusionOnnx(qnn_folder, target="cpu")
    assert gen.supported_sizes() == f"exactly {QNN_SIZE}x{QNN_SIZE}"
    with pytest.raises(InvalidRequestError, match=f"exactly {QNN_SIZE}x{QNN_SIZE}"):
        gen.parse_size("128x128")
    calls = _unet_batches(gen, monkeypatch)
    png = gen.generate_png(_request(num_inference_steps=2), 0, threading.Event())
    assert calls == [1, 1, 1, 1]
    assert _decode_png(png).shape == (QNN_SIZE, QNN_SIZE, 3)


@pytest.mark.qnn
def test_unet_and_vae_run_entirely_on_qnn(qnn_folder: Path) -> None:
    """Every node of the UNet and VAE decoder on the HTP simulator, agreeing with the CPU EP
    on the same QDQ graphs (two guided steps: four UNet calls and one decode, ~1 s)."""
    from imagine_edge.runtime.providers import qnn_unavailable_reason

    if qnn_unavailable_reason() is not None:
        pytest.skip(f"QNN unavailable: {qnn_unavailable_reason()}")
    npu = load_tiny_sd_random("qnn")
    for graph in (npu.unet, npu.vae_decoder):
        assert set(graph.loaded.node_assignment) == {"QNNExecutionProvider"}
    assert "QNNExecutionProvider (unet, vae_decoder)" in npu.execution_provider
    cpu = StableDiffusionOnnx(qnn_folder, target="cpu")
    kwargs: dict[str, Any] = {
        "width": QNN_SIZE, "height": QNN_SIZE, "steps": 2, "guidance_scale": 6.5,
        "negative_prompt": "blurry",
    }  # fmt: skip
    on_npu = npu.generate(PROMPT, rng=np.random.default_rng(4), **kwargs)
    on_cpu = cpu.generate(PROMPT, rng=np.random.default_rng(4), **kwargs)
    # Same QDQ graphs; the HTP's fixed-point requantization differs from the CPU EP's
    # float emulation by a few 16-bit steps (measured: max 0.01, correlation 0.99997).
    assert np.corrcoef(on_npu.ravel(), on_cpu.ravel())[0, 1] > 0.999
    assert np.abs(on_npu - on_cpu).max() < 0.05
    npu.close()
