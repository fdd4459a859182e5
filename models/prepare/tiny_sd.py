"""Recipe for ``tiny-sd-random``: a Stable Diffusion-shaped pipeline with RANDOM weights; the
entry points the catalog names.

No text-to-image weights ship in any package (docs MODELS.md), so the embedded default is built
here, at preparation time, from the real architecture classes (diffusers ``UNet2DConditionModel``
and ``AutoencoderKL``, transformers ``CLIPTextModel``) with seeded random initialisation, and a
small CLIP byte-level BPE vocabulary written offline. It is untrained: its images are noise-like
and unrelated to the prompt. It exists so the real pipeline code runs end to end on every machine.

Base (``hf/``): the torch pipeline saved by diffusers (``StableDiffusionPipeline.save_pretrained``
layout), which the parity tests load into diffusers' own pipeline. Variants, each in the folder
layout of optimum's ONNX export of diffusers (``model_index.json``, ``text_encoder/model.onnx``,
``unet/model.onnx``, ``vae_decoder/model.onnx``, ``tokenizer/``, ``scheduler/``), so the runtime
loads them exactly like a real SD-Turbo or SD 1.5 export:

- ``cpu``: float32, dynamic batch, image size and sequence length (:mod:`.tiny_sd_export`).
- ``qnn``: UNet and VAE decoder with static shapes (batch 1, ``QNN_SIZE`` square), GroupNorm
  exported without Reshapes, QDQ-quantized for the HTP (uint16 activations, uint8 weights) on
  calibration inputs recorded from the float pipeline (:mod:`.tiny_sd_calibration`); the text
  encoder stays float and runs on the CPU EP (:mod:`.tiny_sd_qnn`).

The other modules: the name, sizes and architecture configs (:mod:`.tiny_sd_config`), the toy
tokenizer (:mod:`.tiny_sd_tokenizer`) and the seeded torch modules (:mod:`.tiny_sd_modules`).

The recipe is its own source: the catalog entry names ``RECIPE_FILE``, a glob over this file and
every ``tiny_sd_*.py`` module, as the "weights file", so the store keys the prepared folder on all
of their contents and any change to the recipe (export details included) prepares the model anew.

Everything heavy (torch, diffusers, transformers, onnx) is imported inside the functions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from imagine_edge.models.prepare.tiny_sd_config import (
    HF_DIR,
    MAX_LENGTH,
    NAME,
    QNN_SIZE,
    SCHEDULER_CONFIG,
    SEED,
)
from imagine_edge.models.prepare.tiny_sd_export import prepare_cpu
from imagine_edge.models.prepare.tiny_sd_modules import build_modules, lib, quiet
from imagine_edge.models.prepare.tiny_sd_qnn import prepare_qnn
from imagine_edge.models.prepare.tiny_sd_tokenizer import BOS, EOS, write_tokenizer
from imagine_edge.models.store import BaseInfo, SpecialTokens

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

# Every module of this recipe, relative to the package folder (the store hashes all matches).
RECIPE_FILE: Final = "tiny_sd*.py"

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


def prepare_base(recipe: Path, out: Path) -> BaseInfo:
    """Build the random torch pipeline and save it under ``out/hf`` (diffusers layout).

    ``recipe`` is the catalog's source path (the ``RECIPE_FILE`` glob); it only names the log line:
    the recipe's hash is what matters, for the key.
    """
    diffusers, transformers = lib("diffusers"), lib("transformers")
    hf = out / HF_DIR
    ids, _ = write_tokenizer(hf / "tokenizer")
    text_encoder, unet, vae = build_modules(len(ids))
    with quiet():
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
