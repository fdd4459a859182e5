"""Recipe for ``tiny-sd-random``: a Stable Diffusion-shaped pipeline with RANDOM weights.

No text-to-image weights ship in any package (docs MODELS.md), so the embedded default is built
here, at preparation time, from the real architecture classes (diffusers ``UNet2DConditionModel``
and ``AutoencoderKL``, transformers ``CLIPTextModel``) with seeded random initialisation, and a
small CLIP byte-level BPE vocabulary written offline. It is untrained: its images are noise-like
and unrelated to the prompt. It exists so the real pipeline code runs end to end on every machine.

The recipe is its own source: the catalog entry names this file as the "weights file", so the
store key changes whenever the recipe does.

Base (``hf/``): the torch pipeline saved by diffusers (``StableDiffusionPipeline.save_pretrained``
layout), which the parity tests load into diffusers' own pipeline. Variants, each in the folder
layout of optimum's ONNX export of diffusers (``model_index.json``, ``text_encoder/model.onnx``,
``unet/model.onnx``, ``vae_decoder/model.onnx``, ``tokenizer/``, ``scheduler/``), so the runtime
loads them exactly like a real SD-Turbo or SD 1.5 export:

- ``cpu``: float32, dynamic batch, image size and sequence length.
- ``qnn``: UNet and VAE decoder with static shapes (batch 1, ``QNN_SIZE`` square), GroupNorm
  exported without Reshapes (see :func:`_group_norm_without_reshape`), QDQ-quantized for the HTP
  (uint16 activations, uint8 weights) on calibration inputs recorded from the float pipeline;
  the text encoder stays float and runs on the CPU EP.

The whole recipe stays in this one file on purpose: the store keys the prepared folder on this
file's hash, so any change here (export details included) prepares the model anew.

Everything heavy (torch, diffusers, transformers, onnx) is imported inside the functions.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from imagine_edge.models.store import BaseInfo, GraphFile, Manifest, SpecialTokens, Variant

if TYPE_CHECKING:
    import torch

__all__ = [
    "DESCRIPTION",
    "MODEL_CARD",
    "NAME",
    "QNN_SIZE",
    "RECIPE_FILE",
    "SEED",
    "build_modules",
    "prepare_base",
    "prepare_cpu",
    "prepare_qnn",
]

logger = logging.getLogger(__name__)

NAME: Final = "tiny-sd-random"
RECIPE_FILE: Final = "tiny_sd.py"
SEED: Final = 0
OPSET: Final = 17
# Image side of the static QNN graphs: latents of 8x8 keep the HTP simulator affordable.
QNN_SIZE: Final = 64
HF_DIR: Final = "hf"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH: Final = 77

DESCRIPTION: Final = (
    "UNTRAINED Stable Diffusion-shaped pipeline with random weights: produces noise-like images "
    "unrelated to the prompt. For real images, point imagine-edge at an optimum ONNX export of "
    "SD-Turbo or Stable Diffusion 1.5"
)

MODEL_CARD: Final = """\
tiny-sd-random: a Stable Diffusion-shaped text-to-image pipeline with RANDOM, UNTRAINED weights.
It produces noise-like images that have nothing to do with the prompt. Do not use it for images.

What it is: the real architecture classes (diffusers UNet2DConditionModel with cross-attention,
AutoencoderKL decoder with a scale factor of 8, transformers CLIPTextModel with a 77-token CLIP
BPE tokenizer) at toy sizes, initialised from a fixed seed when the model is prepared; nothing is
downloaded and no weights ship. It lets the runtime's real pipeline (text encoder, classifier-free
guidance, UNet loop with the numpy schedulers, VAE decoder, PNG encoding) run end to end, on the
CPU EP and, at 64x64, fully on the QNN HTP backend.

What to use instead: a real Stable Diffusion export in optimum's ONNX layout, made on a machine
with internet access, for example
    optimum-cli export onnx --model stabilityai/sd-turbo sd-turbo-onnx/
    optimum-cli export onnx --model stable-diffusion-v1-5/stable-diffusion-v1-5 sd15-onnx/
and point imagine-edge at that folder by path. SD-Turbo runs one step without guidance.
Licence: the recipe is the project's (Apache-2.0); the architectures are diffusers' and
transformers' (Apache-2.0)."""

UNET_CONFIG: Final[dict[str, Any]] = {
    "sample_size": QNN_SIZE // 8,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    # Attention only at the lowest resolution (1/32 of the image side) and 16 channels: cheap
    # enough that the client's default request (512x512, 20 steps) takes seconds.
    "block_out_channels": (16, 16, 16),
    "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}
# Four blocks, so the latent is 1/8 of the image side, as in every SD 1.x/2.x VAE.
VAE_CONFIG: Final[dict[str, Any]] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (8, 16, 32, 32),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": QNN_SIZE,
}
TEXT_CONFIG: Final[dict[str, Any]] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": MAX_LENGTH,
    "projection_dim": 32,
}
# SD 1.x's schedule; Euler ancestral is the pipeline's default sampler here.
SCHEDULER_CONFIG: Final[dict[str, Any]] = {
    "_class_name": "EulerAncestralDiscreteScheduler",
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}
# Words that get whole-word merges in the toy vocabulary; any other text is spelled in bytes.
_WORDS: Final = (
    *("a", "an", "the", "of", "in", "on", "with", "and", "photo", "painting", "portrait"),
    *("drawing", "picture", "red", "green", "blue", "yellow", "black", "white", "orange"),
    *("purple", "square", "circle", "cat", "dog", "bird", "horse", "flower", "tree", "house"),
    *("city", "sky", "sea", "river", "mountain", "forest", "sunset", "night", "snow"),
    *("astronaut", "riding", "small", "big", "old", "blurry", "sharp", "detailed", "high"),
    *("quality", "low", "bad"),
)
_CALIBRATION_PROMPTS: Final = (
    "a red square",
    "a photo of a cat in the snow",
    "an astronaut riding a horse, detailed painting",
    "blurry",
)


# --------------------------------------------------------------------------- tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable characters."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def write_tokenizer(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Write a CLIP tokenizer folder (vocab.json, merges.txt, configs) with a toy vocabulary.

    The layout is CLIP's: the 256 byte characters, the same with ``</w>``, then one token per
    merge, then the two special tokens. Merges build the words of ``_WORDS`` left to right, so
    the vocabulary is deterministic and every text is encodable.
    """
    base = list(_bytes_to_unicode().values())
    vocab = base + [c + "</w>" for c in base]
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        current = parts[0]
        for part in parts[1:]:
            if (current, part) not in merges:
                merges.append((current, part))
                vocab.append(current + part)
            current += part
    vocab += [BOS, EOS]
    ids = {tok: i for i, tok in enumerate(vocab)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), "utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), "utf-8")
    return ids, merges


# --------------------------------------------------------------------------- torch modules


def _lib(name: str) -> Any:
    """A preparation-time library, untyped (diffusers and transformers ship no usable stubs)."""
    import importlib

    return importlib.import_module(name)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' and libraries' warnings (tracer notes, deprecations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def build_modules(vocab_size: int, seed: int = SEED) -> tuple[Any, Any, Any]:
    """(text_encoder, unet, vae) with seeded random weights, in eval mode.

    Each module gets its own seed, so a change to one leaves the others' weights unchanged.
    """
    import torch

    diffusers, transformers = _lib("diffusers"), _lib("transformers")
    text_config = transformers.CLIPTextConfig(
        vocab_size=vocab_size,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        **TEXT_CONFIG,
    )
    with _quiet():
        torch.manual_seed(seed)
        text_encoder = transformers.CLIPTextModel(text_config).eval()
        torch.manual_seed(seed + 1)
        unet = diffusers.UNet2DConditionModel(**UNET_CONFIG).eval()
        torch.manual_seed(seed + 2)
        vae = diffusers.AutoencoderKL(**VAE_CONFIG).eval()
    return text_encoder, unet, vae


def prepare_base(recipe: Path, out: Path) -> BaseInfo:
    """Build the random torch pipeline and save it under ``out/hf`` (diffusers layout).

    ``recipe`` is this file (the catalog's source file); only its hash matters, for the key.
    """
    diffusers, transformers = _lib("diffusers"), _lib("transformers")
    hf = out / HF_DIR
    ids, _ = write_tokenizer(hf / "tokenizer")
    text_encoder, unet, vae = build_modules(len(ids))
    with _quiet():
        tokenizer = transformers.CLIPTokenizer.from_pretrained(str(hf / "tokenizer"))
        scheduler = diffusers.EulerAncestralDiscreteScheduler.from_config(SCHEDULER_CONFIG)
        pipe = diffusers.StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(str(hf), safe_serialization=True)
        tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    logger.info("built %s from %s (seed %d)", NAME, recipe.name, SEED)
    return BaseInfo(
        tokenizer=Path("tokenizer.json"),
        chat_template=None,
        special_tokens=SpecialTokens(
            bos_token_id=ids[BOS],
            eos_token_ids=(ids[EOS],),
            pad_token_id=ids[EOS],
            ids={BOS: ids[BOS], EOS: ids[EOS]},
        ),
        context_length=MAX_LENGTH,
        architecture=None,
        float_weights=Path(HF_DIR),
    )


# --------------------------------------------------------------------------- ONNX export


def _load_hf(hf: Path) -> Any:
    diffusers, transformers = _lib("diffusers"), _lib("transformers")
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    with _quiet():
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(hf), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


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
    with _quiet(), torch.inference_mode():
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


def _export_text_encoder(pipe: Any, out: Path) -> GraphFile:
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


def _export_unet(pipe: Any, out: Path, static: int | None) -> GraphFile:
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


def _export_vae_decoder(pipe: Any, out: Path, static: int | None) -> GraphFile:
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


def _write_layout(pipe: Any, hf: Path, out: Path) -> None:
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


def _float_hf(manifest: Manifest) -> Path:
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base has no torch pipeline to export from")
    return manifest.float_weights


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """Export the float32 graphs with dynamic batch, size and sequence length."""
    hf = _float_hf(manifest)
    pipe = _load_hf(hf)
    graphs = {
        "text_encoder": _export_text_encoder(pipe, out / "text_encoder"),
        "unet": _export_unet(pipe, out / "unet", None),
        "vae_decoder": _export_vae_decoder(pipe, out / "vae_decoder", None),
    }
    _write_layout(pipe, hf, out)
    return Variant(
        ep="cpu",
        dir=out,
        quantization="float32",
        graphs=graphs,
        options={"opset": OPSET},
        notes="optimum's diffusers ONNX layout; dynamic batch, image size and sequence length.",
    )


# --------------------------------------------------------------------------- QNN variant


Feed = dict[str, npt.NDArray[np.float32]]


def _calibration_feeds(pipe: Any, size: int, steps: int = 4) -> tuple[list[Feed], list[Feed]]:
    """UNet and VAE-decoder inputs recorded from the float pipeline at ``size``.

    Runs the torch modules with the runtime's own scheduler (Euler ancestral, the model's
    default) and guidance 6.5 over a few prompts and seeds, so the ranges cover the
    unconditional and conditional branches and every noise level the sampler visits.
    """
    import torch

    tok = pipe.tokenizer
    with torch.inference_mode():
        ids = tok(list(_CALIBRATION_PROMPTS), padding="max_length", max_length=MAX_LENGTH,
                  truncation=True, return_tensors="pt").input_ids  # fmt: skip
        embeds = pipe.text_encoder(ids)[0].numpy()
        uncond = pipe.text_encoder(tok([""], padding="max_length", max_length=MAX_LENGTH,
                                       return_tensors="pt").input_ids)[0].numpy()  # fmt: skip
    unet_feeds: list[Feed] = []
    vae_feeds: list[Feed] = []
    for seed in range(2):
        for p in range(len(_CALIBRATION_PROMPTS)):
            cond = np.concatenate([uncond, embeds[p : p + 1]])
            _trajectory(pipe, cond, size, steps, np.random.default_rng(seed), unet_feeds, vae_feeds)
    return unet_feeds, vae_feeds


def _trajectory(
    pipe: Any,
    cond: npt.NDArray[np.float32],
    size: int,
    steps: int,
    rng: np.random.Generator,
    unet_feeds: list[Feed],
    vae_feeds: list[Feed],
) -> None:
    """One guided sampling run; appends each UNet input row and each decoded latent."""
    import torch

    from imagine_edge.models.schedulers import make_scheduler

    scaling = np.float32(pipe.vae.config.scaling_factor)
    sched = make_scheduler(pipe.scheduler.config)
    sched.set_timesteps(steps)
    x = rng.standard_normal((1, 4, size // 8, size // 8), dtype=np.float32)
    x *= np.float32(sched.init_noise_sigma)
    for i, t in enumerate(sched.timesteps):
        scaled = sched.scale_model_input(x, i)
        unet_feeds.extend(
            {"sample": scaled, "timestep": np.array([t], np.float32), "encoder_hidden_states": c}
            for c in (cond[:1], cond[1:])
        )
        with torch.inference_mode():
            batch = torch.from_numpy(np.concatenate([scaled, scaled]))
            out = pipe.unet(batch, float(t), torch.from_numpy(cond))[0].numpy()
        guided = out[:1] + np.float32(6.5) * (out[1:] - out[:1])
        step = sched.step(guided, i, x, rng.standard_normal(x.shape, dtype=np.float32))
        vae_feeds.append({"latent_sample": step.denoised / scaling})
        x = step.prev_sample
    vae_feeds.append({"latent_sample": x / scaling})


class _Reader:
    """A CalibrationDataReader over recorded feeds."""

    def __init__(self, feeds: Sequence[Feed]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> Feed | None:
        return next(self._feeds, None)


def quantize_for_qnn(float_path: Path, out_path: Path, feeds: Sequence[Feed]) -> None:
    """QDQ-quantize a static graph for the HTP: uint16 activations, uint8 per-channel weights."""
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import (
        get_qnn_qdq_config,
        qnn_preprocess_model,
    )

    pre = float_path.with_name(float_path.stem + ".pre.onnx")
    # Fuses the decomposed GELU (Erf) and LayerNorm patterns the HTP cannot run as they are.
    source = pre if qnn_preprocess_model(float_path, pre, fuse_layernorm=True) else float_path
    config = get_qnn_qdq_config(
        source,
        _Reader(feeds),
        activation_type=QuantType.QUInt16,
        weight_type=QuantType.QUInt8,
        per_channel=True,
    )
    with _quiet():
        quantize(source, out_path, config)
    pre.unlink(missing_ok=True)


def _group_norm_without_reshape(
    input: torch.Tensor,  # torch's parameter name, so the function can stand in for it
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """GroupNorm from 4-D ops only: global average pools and a 1x1 convolution that averages
    the channels of each group (equal to torch's to ~5e-7).

    torch exports GroupNorm as Reshape -> InstanceNormalization -> Reshape; on the HTP backend
    (onnxruntime-qnn 2.7) that pattern followed by SiLU and a Conv computes wrong values
    (correlation ~0.4 with the CPU EP on the same QDQ graph), whether the normalisation is an
    InstanceNormalization or a LayerNormalization. Without the Reshapes the UNet agrees with the
    CPU EP to a correlation of 0.999998.
    """
    import torch
    import torch.nn.functional as F

    x = input
    if x.dim() == 3:  # attention blocks normalise [batch, channels, tokens]
        return _group_norm_without_reshape(x[..., None], num_groups, weight, bias, eps)[..., 0]
    k = x.shape[1] // num_groups
    group_mean = np.kron(np.eye(num_groups), np.full((k, k), 1.0 / k)).astype(np.float32)
    avg = torch.from_numpy(group_mean)[:, :, None, None]
    mean = F.conv2d(F.adaptive_avg_pool2d(x, 1), avg)
    centred = x - mean
    var = F.conv2d(F.adaptive_avg_pool2d(centred * centred, 1), avg)
    y = centred / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight[:, None, None]
    if bias is not None:
        y = y + bias[:, None, None]
    return y


@contextmanager
def _htp_group_norm() -> Iterator[None]:
    """Export GroupNorm as :func:`_group_norm_without_reshape` inside the block."""
    import torch.nn.functional as F

    original = F.group_norm
    F.group_norm = _group_norm_without_reshape  # nn.GroupNorm.forward looks it up per call
    try:
        yield
    finally:
        F.group_norm = original


def prepare_qnn(manifest: Manifest, out: Path) -> Variant:
    """Static-shape QDQ UNet and VAE decoder at ``QNN_SIZE``, float text encoder for the CPU."""
    hf = _float_hf(manifest)
    pipe = _load_hf(hf)
    scratch = out / ".float"
    with _htp_group_norm():
        unet_float = _export_unet(pipe, scratch / "unet", QNN_SIZE)
        vae_float = _export_vae_decoder(pipe, scratch / "vae_decoder", QNN_SIZE)
    unet_feeds, vae_feeds = _calibration_feeds(pipe, QNN_SIZE)
    graphs = {"text_encoder": _export_text_encoder(pipe, out / "text_encoder")}
    for role, float_graph, feeds in (
        ("unet", unet_float, unet_feeds),
        ("vae_decoder", vae_float, vae_feeds),
    ):
        (out / role).mkdir()
        target = out / role / "model.onnx"
        quantize_for_qnn(float_graph.path, target, feeds)
        shutil.copyfile(float_graph.path.parent / "config.json", out / role / "config.json")
        graphs[role] = GraphFile(target, float_graph.inputs, float_graph.outputs)
    shutil.rmtree(scratch)
    _write_layout(pipe, hf, out)
    return Variant(
        ep="qnn",
        dir=out,
        quantization="QDQ uint16 activations / uint8 per-channel weights (unet, vae_decoder)",
        graphs=graphs,
        options={"image_size": f"{QNN_SIZE}x{QNN_SIZE}", "batch": 1, "opset": OPSET},
        notes=(
            f"UNet and VAE decoder with static shapes (batch 1, {QNN_SIZE}x{QNN_SIZE} images) "
            "for the QNN HTP backend; guidance runs them twice per step. The text encoder is "
            "float32 for the CPU EP."
        ),
    )
