"""Text-to-image: a Stable Diffusion pipeline over ONNX graphs in optimum's diffusers layout.

Owns the ImageGenerator of ModelType.TEXT_TO_IMAGE (``models/base.py``): it loads any folder that
optimum's ONNX export of a Stable Diffusion 1.x/2.x/Turbo/LCM pipeline produces (the layout:
``layout.py``) and runs CLIP text encoder (``tokenizer.py``) -> UNet loop (numpy schedulers,
``schedulers/``) -> VAE decoder -> PNG (``png.py``), as diffusers' ``StableDiffusionPipeline``
does (tests compare the two on the same weights). Each graph runs behind ``graph.py``, which
adapts to its input dtypes and static shapes.

Invariants and policies:
- Image ``i`` of a request uses ``numpy.random.default_rng((seed + i * seed_increment) mod 2**64)``
  for its initial latents and then every stochastic scheduler step, in that order; so the same
  request gives the same PNG bytes. ``seed`` None draws fresh entropy; ``seed_increment`` None
  counts as 1.
- Classifier-free guidance runs the UNet on [negative, prompt] and is skipped when
  ``guidance_scale <= 1`` (``negative_prompt`` is then unused). LCM-distilled UNets (a
  ``timestep_cond`` input) take the guidance as an embedding instead, as diffusers does.
- Turbo models (name contains "turbo", or ``turbo=True``) run one step with trailing timesteps
  and no guidance whatever the request says (SD-Turbo is distilled for exactly that).
- Sizes: both sides a multiple of ``vae_scale * 2**(UNet down blocks - 1)`` (64 for SD 1.5: the
  exported UNet cannot pad odd latents) and at most ``max_side``; a static-shape graph (QNN)
  accepts its one size. Anything else is an InvalidRequestError naming the valid values.
- Working memory: an image whose estimated working memory (``memory.py``: attention grows with
  the square of the pixel count) exceeds the budget is an InvalidRequestError naming both.
- The text encoder runs on the CPU EP; the UNet and VAE decoder on ``target``.
- ``cache_interval`` (DeepCache-style UNet feature reuse) is accepted and ignored: exported
  UNets do not expose their intermediate features.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from imagine_edge.models.catalog import prepared
from imagine_edge.models.store import Manifest
from imagine_edge.models.text_to_image.graph import PipelineGraph
from imagine_edge.models.text_to_image.layout import GRAPHS, check_layout, read_json
from imagine_edge.models.text_to_image.memory import BUDGET_ENV, WorkingMemory, budget_from_env
from imagine_edge.models.text_to_image.png import encode_png
from imagine_edge.models.text_to_image.schedulers import Scheduler, SchedulerKind, make_scheduler
from imagine_edge.models.text_to_image.tokenizer import ClipTokenizer
from imagine_edge.runtime.targets import Target, place, target_from_env
from imagine_edge.sdk.errors import InvalidRequestError, ModelRunError
from imagine_edge.sdk.limits import parse_image_size
from imagine_edge.sdk.types import ImageRequest, ModelType

__all__ = [
    "ClipTokenizer",
    "GenerationTimings",
    "StableDiffusionOnnx",
    "encode_png",
    "load_image_generator",
    "load_prepared",
    "load_text_to_image",
    "load_tiny_sd_random",
]

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
DEFAULT_MAX_SIDE: Final = 1024
DEFAULT_GUIDANCE: Final = 7.5


@dataclass(slots=True)
class GenerationTimings:
    """Seconds spent in each part of the last image (for the benchmark)."""

    text_encoder: float = 0.0
    unet_steps: list[float] = field(default_factory=list)
    vae_decoder: float = 0.0
    total: float = 0.0


def _unet_factor(unet_config: Mapping[str, Any]) -> int:
    blocks = unet_config.get("block_out_channels") or (320, 640, 1280, 1280)
    return int(2 ** (len(blocks) - 1))


class StableDiffusionOnnx:
    """An ImageGenerator over one optimum-layout folder (see the module docstring)."""

    def __init__(
        self,
        folder: str | Path,
        *,
        target: Target = "auto",
        scheduler: SchedulerKind | None = None,
        max_side: int = DEFAULT_MAX_SIDE,
        turbo: bool | None = None,
        turbo_steps: int = 1,
        memory_budget: int | None = None,
    ) -> None:
        self.folder = Path(folder).expanduser().resolve()
        check_layout(self.folder)
        index = read_json(self.folder / "model_index.json")
        unet_cfg = read_json(self.folder / "unet" / "config.json")
        vae_cfg = read_json(self.folder / "vae_decoder" / "config.json")
        text_cfg = read_json(self.folder / "text_encoder" / "config.json")
        self.vae_scale = int(2 ** (len(vae_cfg.get("block_out_channels") or (0,) * 4) - 1))
        self.size_multiple = self.vae_scale * _unet_factor(unet_cfg)
        self.scaling_factor = float(vae_cfg.get("scaling_factor", 0.18215))
        self.latent_channels = int(unet_cfg.get("in_channels", vae_cfg.get("latent_channels", 4)))
        self.max_side = max_side
        self.memory = WorkingMemory.from_configs(unet_cfg, vae_cfg)
        self.memory_budget = budget_from_env() if memory_budget is None else memory_budget
        name = f"{index.get('_name_or_path', '')} {self.folder.name}".lower()
        self.turbo = ("turbo" in name) if turbo is None else turbo
        self.turbo_steps = turbo_steps
        self.scheduler_config = read_json(self.folder / "scheduler" / "scheduler_config.json")
        self.scheduler_kind = scheduler
        self._new_scheduler()  # fail at load, not on the first request, on an unusable config
        self.tokenizer = ClipTokenizer(
            self.folder / "tokenizer", int(text_cfg.get("max_position_embeddings", 77))
        )
        self.text_encoder = PipelineGraph.open(
            self.folder / "text_encoder" / "model.onnx", "cpu", "last_hidden_state"
        )
        self.unet = PipelineGraph.open(self.folder / "unet" / "model.onnx", target, "out_sample")
        self.vae_decoder = PipelineGraph.open(
            self.folder / "vae_decoder" / "model.onnx", target, "sample"
        )
        if {"text_embeds", "time_ids"} & set(self.unet.dtypes):
            raise ModelRunError(
                "SDXL-style UNets (text_embeds, time_ids) are not supported", "load"
            )
        self.time_cond_dim = (
            unet_cfg.get("time_cond_proj_dim") if "timestep_cond" in self.unet.dtypes else None
        )
        self._cache: tuple[tuple[str, str | None, bool], F32] | None = None
        self.last_timings = GenerationTimings()
        # Why the model is not on QNN, when target "auto" fell back to the CPU variant.
        self.fallback: str | None = None
        log.info("loaded %s (%s)", self.folder, self.execution_provider)

    # ------------------------------------------------------------------ LoadedModel

    @property
    def execution_provider(self) -> str:
        parts: dict[str, list[str]] = {}
        for role in GRAPHS:
            parts.setdefault(getattr(self, role).loaded.describe(), []).append(role)
        fallback = f" (fallback: {self.fallback})" if self.fallback else ""
        if len(parts) == 1:
            return next(iter(parts)) + fallback
        return "; ".join(f"{ep} ({', '.join(roles)})" for ep, roles in parts.items()) + fallback

    def resident_bytes(self) -> int:
        return sum(
            f.stat().st_size for g in GRAPHS for f in (self.folder / g).iterdir() if f.is_file()
        )

    def close(self) -> None:
        for role in GRAPHS:
            getattr(self, role).loaded.close()
        self._cache = None

    # ------------------------------------------------------------------ validation

    def _new_scheduler(self) -> Scheduler:
        overrides = {"timestep_spacing": "trailing"} if self.turbo else None
        try:
            return make_scheduler(self.scheduler_config, self.scheduler_kind, overrides)
        except ValueError as e:
            if self.scheduler_kind is None and "not implemented" in str(e):
                # SD 1.5 ships PNDM; DDIM runs the same trained schedule deterministically.
                log.warning("%s; using DDIM with the same schedule", e)
                self.scheduler_kind = "ddim"
                return make_scheduler(self.scheduler_config, "ddim", overrides)
            raise ModelRunError(f"scheduler_config.json: {e}", phase="load") from e

    def check_memory(self, width: int, height: int, *, guided: bool) -> None:
        """422 when one image's estimated working memory exceeds the budget (``memory.py``)."""
        batch = 2 if guided else 1
        need = self.memory.bytes_for(width, height, unet_batch=batch)
        if need <= self.memory_budget:
            return
        side = self.memory.largest_square(
            self.memory_budget, unet_batch=batch, multiple=self.size_multiple
        )
        fits = f"; {side}x{side} fits" if side else ""
        raise InvalidRequestError(
            f"a {width}x{height} image needs about {need / 2**20:.0f} MiB of working memory, over "
            f"the image memory budget of {self.memory_budget / 2**20:.0f} MiB "
            f"({BUDGET_ENV}){fits}"
        )

    def supported_sizes(self) -> str:
        """The valid sizes, in words (for error messages and /models)."""
        static = self.unet.static.get("sample")
        if static is not None:
            return f"exactly {static[3] * self.vae_scale}x{static[2] * self.vae_scale}"
        m = self.size_multiple
        return f"width and height multiples of {m} in [{m}, {self.max_side}]"

    def parse_size(self, size: str | None) -> tuple[int, int]:
        """(width, height) of a request's size; InvalidRequestError unless the model takes it."""
        width, height = parse_image_size(size or "512x512")
        static = self.unet.static.get("sample")
        if static is not None:
            ok = (width, height) == (static[3] * self.vae_scale, static[2] * self.vae_scale)
        else:
            m = self.size_multiple
            ok = all(m <= s <= self.max_side and s % m == 0 for s in (width, height))
        if not ok:
            raise InvalidRequestError(
                f"size must be {self.supported_sizes()} for this model, got {size!r}"
            )
        return width, height

    # ------------------------------------------------------------------ pipeline

    def encode_prompt(self, prompt: str, negative: str | None, guided: bool) -> F32:
        """Text embeddings [1 or 2, tokens, dim]: [negative, prompt] when ``guided``."""
        key = (prompt, negative if guided else None, guided)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        texts = [negative or "", prompt] if guided else [prompt]
        ids = self.tokenizer(texts)
        # No attention mask: the SD text encoders attend over the padding too.
        embeds = self.text_encoder.run({"input_ids": ids}, ["input_ids"])
        self._cache = (key, embeds)
        return embeds

    def _guidance_embedding(self, scale: float) -> F32:
        # diffusers' get_guidance_scale_embedding of w = scale - 1 (LCM-distilled UNets).
        dim = int(self.time_cond_dim or 0)
        half = dim // 2
        freqs = np.exp(np.arange(half, dtype=np.float32) * -(np.log(10000.0) / (half - 1)))
        emb = (scale - 1.0) * 1000.0 * freqs
        out = np.concatenate([np.sin(emb), np.cos(emb)])
        return np.pad(out, (0, dim % 2))[None].astype(np.float32)

    def _denoise(self, x: F32, t: float, embeds: F32, cond: F32 | None) -> F32:
        """One UNet call over the batch ``x``; a static batch runs it in chunks."""
        feeds: dict[str, Any] = {"sample": x, "encoder_hidden_states": embeds}
        # Current optimum exports take a scalar timestep, older ones one per batch row.
        if self.unet.ranks.get("timestep", 0) == 0:
            feeds["timestep"] = np.asarray(t)
        else:
            feeds["timestep"] = np.full((len(x),), t)
        if cond is not None:
            feeds["timestep_cond"] = np.repeat(cond, len(x), 0)
        batched = [k for k in feeds if k != "timestep" or self.unet.ranks.get(k, 0) == 1]
        return self.unet.run(feeds, batched)

    def generate(
        self,
        prompt: str,
        *,
        width: int,
        height: int,
        steps: int,
        guidance_scale: float,
        negative_prompt: str | None,
        rng: np.random.Generator,
        cancel: threading.Event | None = None,
        latents: F32 | None = None,
    ) -> F32:
        """One image [height, width, 3] in [0, 1]. ``latents`` replaces the first noise draw."""
        start = time.perf_counter()
        timings = GenerationTimings()
        if self.turbo:
            steps, guidance_scale = min(steps, self.turbo_steps), 0.0
        sched = self._new_scheduler()
        if not 1 <= steps <= sched.max_inference_steps:
            raise InvalidRequestError(
                f"num_inference_steps must be in [1, {sched.max_inference_steps}] for this model, "
                f"got {steps}"
            )
        sched.set_timesteps(steps)
        cond = self._guidance_embedding(guidance_scale) if self.time_cond_dim else None
        guided = guidance_scale > 1.0 and cond is None
        self.check_memory(width, height, guided=guided)
        embeds = self.encode_prompt(prompt, negative_prompt, guided)
        timings.text_encoder = time.perf_counter() - start
        shape = (1, self.latent_channels, height // self.vae_scale, width // self.vae_scale)
        noise = rng.standard_normal(shape, dtype=np.float32) if latents is None else latents
        x = (noise * np.float32(sched.init_noise_sigma)).astype(np.float32)
        for i, t in enumerate(sched.timesteps):
            if cancel is not None and cancel.is_set():
                raise ModelRunError(f"image generation cancelled after {i} of {steps} steps")
            tick = time.perf_counter()
            scaled = sched.scale_model_input(x, i)
            batch = np.concatenate([scaled, scaled]) if guided else scaled
            out = self._denoise(batch, float(t), embeds, cond)
            if guided:
                out = out[:1] + np.float32(guidance_scale) * (out[1:] - out[:1])
            draw = rng.standard_normal(shape, dtype=np.float32) if sched.needs_noise(i) else None
            x = sched.step(out, i, x, draw).prev_sample
            timings.unet_steps.append(time.perf_counter() - tick)
        tick = time.perf_counter()
        image = self.vae_decoder.run(
            {"latent_sample": x / np.float32(self.scaling_factor)}, ["latent_sample"]
        )
        timings.vae_decoder = time.perf_counter() - tick
        timings.total = time.perf_counter() - start
        self.last_timings = timings
        return np.asarray(np.clip(image[0] / 2 + 0.5, 0.0, 1.0).transpose(1, 2, 0), np.float32)

    def generate_png(self, request: ImageRequest, index: int, cancel: threading.Event) -> bytes:
        """Image ``index`` of ``request`` as PNG bytes (see the module docstring for seeds)."""
        width, height = self.parse_size(request.size)
        increment = 1 if request.seed_increment is None else request.seed_increment
        seed = None if request.seed is None else (request.seed + index * increment) % 2**64
        guidance = DEFAULT_GUIDANCE if request.guidance_scale is None else request.guidance_scale
        image = self.generate(
            request.prompt,
            width=width,
            height=height,
            steps=request.num_inference_steps or 20,
            guidance_scale=guidance,
            negative_prompt=request.negative_prompt,
            rng=np.random.default_rng(seed),
            cancel=cancel,
        )
        return encode_png((image * 255).round().astype(np.uint8))


def load_text_to_image(
    path: str | Path, target: Target = "auto", **options: Any
) -> StableDiffusionOnnx:
    """A user-supplied optimum export (SD 1.x/2.x, SD-Turbo, LCM) at ``path``."""
    return StableDiffusionOnnx(path, target=target, **options)


def load_prepared(manifest: Manifest, variant: str = "cpu") -> StableDiffusionOnnx:
    """The registry's loader: ``manifest``'s pipeline, ``variant`` "cpu" (any size) or "qnn"."""
    target: Target = "qnn" if variant.startswith("qnn") else "cpu"
    folder = manifest.variant(variant).dir
    return StableDiffusionOnnx(folder, target=target, max_side=DEFAULT_MAX_SIDE)


def load_image_generator(manifest: Manifest) -> StableDiffusionOnnx:
    """The catalog loader: ``manifest``'s pipeline on ``IMAGINE_EDGE_TEXT_TO_IMAGE_TARGET`` =
    cpu (default: any size) | qnn (the static QNN variant, prepared first if missing) | auto."""
    target = target_from_env(ModelType.TEXT_TO_IMAGE)
    if target == "qnn" and "qnn" not in manifest.variants:
        manifest = prepared(manifest.name, ["qnn"])
    has_qnn = target != "cpu" and "qnn" in manifest.variants
    placed = place(
        target,
        manifest.name,
        qnn=(lambda: load_prepared(manifest, "qnn")) if has_qnn else None,
        cpu=lambda: load_prepared(manifest, "cpu"),
    )
    placed.value.fallback = placed.fallback
    return placed.value


def load_tiny_sd_random(variant: str = "cpu") -> StableDiffusionOnnx:
    """The catalog loader of ``tiny-sd-random`` (untrained; see its model card).

    ``variant`` "cpu" runs float32 graphs of any valid size on the CPU EP; "qnn" runs the
    static 64x64 QDQ UNet and VAE decoder strictly on the QNN HTP backend.
    """
    from imagine_edge.models.prepare.tiny_sd import NAME

    return load_prepared(prepared(NAME, [variant]), variant)
