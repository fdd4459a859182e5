"""The optimum ONNX Stable Diffusion format on a tiny optimum-layout folder: the catalog's
tiny-sd-random float export (random weights; its pipeline is compared with diffusers' in
tests/models/text_to_image). Added through the format and loaded by the catalog's loader, it
must generate the same pixels as the folder opened directly; loading it at target auto must
log one brief line per graph QNN cannot take, not QNN's node lists."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from imagine_edge.models.formats.onnx_stable_diffusion import FORMAT
from imagine_edge.models.text_to_image import StableDiffusionOnnx, load_image_generator
from imagine_edge.runtime.providers import qnn_unavailable_reason
from imagine_edge.sdk.errors import InvalidRequestError

from .builders import tiny_sd_folder
from .prepare_source import prepare_source


@pytest.fixture(scope="module")
def export() -> Path:
    return tiny_sd_folder()


def _image(model: StableDiffusionOnnx) -> np.ndarray:
    latents = np.random.default_rng(3).standard_normal((1, 4, 8, 8), np.float32)
    rng = np.random.default_rng(5)
    return model.generate(
        "a red square",
        width=64,
        height=64,
        steps=2,
        guidance_scale=5.0,
        negative_prompt=None,
        rng=rng,
        latents=latents,
    )


def test_added_folder_generates_as_the_folder_itself(
    export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = FORMAT.detect(export)
    assert found is not None
    assert "ORTStableDiffusionPipeline" in found.description
    manifest = prepare_source(FORMAT, export, tmp_path, ("cpu",))
    monkeypatch.setenv("IMAGINE_EDGE_TEXT_TO_IMAGE_TARGET", "cpu")
    ours = load_image_generator(manifest)
    direct = StableDiffusionOnnx(export, target="cpu")
    try:
        np.testing.assert_array_equal(_image(ours), _image(direct))
    finally:
        ours.close()
        direct.close()


@pytest.mark.skipif(qnn_unavailable_reason() is not None, reason="QNN unavailable")
def test_default_target_logs_placement_briefly(
    export: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    manifest = prepare_source(FORMAT, export, tmp_path, ("cpu",))
    capfd.readouterr()
    model = StableDiffusionOnnx(manifest.variant("cpu").dir, target="auto")
    try:
        err = capfd.readouterr().err
        assert "Unsupported nodes" not in err
        assert len(err) < 4000, err[:4000]  # was 134 KB
        assert "fallback" in model.execution_provider
    finally:
        model.close()


def test_broken_and_foreign_folders(export: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sd"
    shutil.copytree(export, folder)
    (folder / "unet" / "model.onnx").unlink()
    with pytest.raises(InvalidRequestError, match=r"missing: unet/model\.onnx"):
        FORMAT.detect(folder)
    shutil.copyfile(export / "unet" / "model.onnx", folder / "unet" / "model.onnx")
    (folder / "vae_decoder" / "model.onnx").write_bytes(b"\x00not a protobuf")
    with pytest.raises(InvalidRequestError, match=r"model\.onnx to be an ONNX model"):
        FORMAT.prepare_base(folder, tmp_path / "out")
    index = json.loads((export / "model_index.json").read_text())
    index["text_encoder_2"] = ["onnxruntime", "ORTModelTextEncoder"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(InvalidRequestError, match=r"SDXL"):
        FORMAT.detect(folder)
    assert FORMAT.detect(tmp_path / "nothing") is None
