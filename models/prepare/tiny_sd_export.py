"""ONNX export of ``tiny-sd-random`` in the folder layout of optimum's diffusers export.

Each part gets a wrapper whose forward has optimum's input and output names; dynamic graphs (the
``cpu`` variant) have batch, image size and sequence length axes, static ones (for the QNN
variant, :mod:`.tiny_sd_qnn`) are constant-folded so only ops the HTP runs remain. The non-graph
files (tokenizer, scheduler, ``model_index.json``) are copied beside them, so the runtime loads the
folder exactly like a real SD-Turbo or SD 1.5 export.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from imagine_edge.models.prepare.tiny_sd_config import MAX_LENGTH, NAME, QNN_SIZE
from imagine_edge.models.prepare.tiny_sd_modules import load_pipeline, quiet
from imagine_edge.models.store import GraphFile, Manifest, Variant

if TYPE_CHECKING:
    import torch

__all__ = [
    "OPSET",
    "export_text_encoder",
    "export_unet",
    "export_vae_decoder",
    "float_hf",
    "prepare_cpu",
    "write_layout",
]

OPSET: Final = 17


def _wrappers() -> tuple[type[Any], type[Any], type[Any]]:
    """Modules whose forward has optimum's ONNX input and output names."""
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.model(input_ids=input_ids, return_dict=False)
            return out[0], out[1]

    class Unet(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
        ) -> torch.Tensor:
            out: torch.Tensor = self.model(
                sample, timestep, encoder_hidden_states, return_dict=False
            )[0]
            return out

    class VaeDecoder(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
            image: torch.Tensor = self.model.decode(latent_sample, return_dict=False)[0]
            return image

    return TextEncoder, Unet, VaeDecoder


def _export(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    names: tuple[list[str], list[str]],
    dynamic_axes: dict[str, dict[int, str]] | None,
) -> GraphFile:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet(), torch.inference_mode():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=names[0],
            output_names=names[1],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    if dynamic_axes is None:
        _fold_constants(path)
    return GraphFile(path, tuple(names[0]), tuple(names[1]))


def _fold_constants(path: Path) -> None:
    """Fold what the exporter leaves of a static graph (Shape/Cast/Sqrt chains of attention
    scales, Constant norm parameters), leaving only ops the HTP runs. Dynamic graphs are left
    to the CPU EP's own optimizer at session creation."""
    import onnx
    import onnxscript.optimizer

    model = onnxscript.optimizer.optimize(onnx.load(str(path)))
    onnx.save(model, str(path))


def export_text_encoder(pipe: Any, out: Path) -> GraphFile:
    import torch

    text_cls, _, _ = _wrappers()
    # optimum's SD exports take int32 ids; the runtime casts to whatever the graph declares.
    ids = torch.zeros((1, MAX_LENGTH), dtype=torch.int32)
    axes = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "last_hidden_state": {0: "batch_size", 1: "sequence_length"},
        "pooler_output": {0: "batch_size"},
    }
    names = (["input_ids"], ["last_hidden_state", "pooler_output"])
    graph = _export(text_cls(pipe.text_encoder), (ids,), out / "model.onnx", names, axes)
    pipe.text_encoder.config.to_json_file(str(out / "config.json"))
    return graph


def export_unet(pipe: Any, out: Path, static: int | None) -> GraphFile:
    import torch

    _, unet_cls, _ = _wrappers()
    side = (static or QNN_SIZE) // 8
    hidden = pipe.text_encoder.config.hidden_size
    # Static graphs take a [1] timestep (no rank-0 tensors on the HTP); dynamic ones a scalar,
    # as current optimum exports do.
    timestep = torch.tensor([999.0]) if static else torch.tensor(999.0)
    args = (torch.zeros(1, 4, side, side), timestep, torch.zeros(1, MAX_LENGTH, hidden))
    axes = None
    if static is None:
        axes = {
            "sample": {0: "batch_size", 2: "height", 3: "width"},
            "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
            "out_sample": {0: "batch_size", 2: "height", 3: "width"},
        }
    names = (["sample", "timestep", "encoder_hidden_states"], ["out_sample"])
    graph = _export(unet_cls(pipe.unet), args, out / "model.onnx", names, axes)
    pipe.unet.save_config(str(out))
    return graph


def export_vae_decoder(pipe: Any, out: Path, static: int | None) -> GraphFile:
    import torch

    _, _, vae_cls = _wrappers()
    side = (static or QNN_SIZE) // 8
    axes = None
    if static is None:
        axes = {
            "latent_sample": {0: "batch_size", 2: "latent_height", 3: "latent_width"},
            "sample": {0: "batch_size", 2: "height", 3: "width"},
        }
    names = (["latent_sample"], ["sample"])
    args = (torch.zeros(1, 4, side, side),)
    graph = _export(vae_cls(pipe.vae), args, out / "model.onnx", names, axes)
    pipe.vae.save_config(str(out))
    return graph


def write_layout(pipe: Any, hf: Path, out: Path) -> None:
    """The non-graph files of optimum's layout: tokenizer, scheduler, model_index.json."""
    import diffusers

    shutil.copytree(hf / "tokenizer", out / "tokenizer")
    (out / "scheduler").mkdir()
    shutil.copyfile(
        hf / "scheduler" / "scheduler_config.json", out / "scheduler" / "scheduler_config.json"
    )
    index = {
        "_class_name": "ORTStableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "_name_or_path": NAME,
        "requires_safety_checker": False,
        "scheduler": ["diffusers", type(pipe.scheduler).__name__],
        "text_encoder": ["onnxruntime", "ORTModelTextEncoder"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["onnxruntime", "ORTModelUnet"],
        "vae_decoder": ["onnxruntime", "ORTModelVaeDecoder"],
    }
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def float_hf(manifest: Manifest) -> Path:
    """The base's torch pipeline folder, which every variant is exported from."""
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base has no torch pipeline to export from")
    return manifest.float_weights


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """Export the float32 graphs with dynamic batch, size and sequence length."""
    hf = float_hf(manifest)
    pipe = load_pipeline(hf)
    graphs = {
        "text_encoder": export_text_encoder(pipe, out / "text_encoder"),
        "unet": export_unet(pipe, out / "unet", None),
        "vae_decoder": export_vae_decoder(pipe, out / "vae_decoder", None),
    }
    write_layout(pipe, hf, out)
    return Variant(
        ep="cpu",
        dir=out,
        quantization="float32",
        graphs=graphs,
        options={"opset": OPSET},
        notes="optimum's diffusers ONNX layout; dynamic batch, image size and sequence length.",
    )
