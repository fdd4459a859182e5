"""Seconds per image and per denoising step of the text-to-image pipeline.

Run: ``python -m imagine_edge.benchmarks.bench_text_to_image [--model PATH] [--target cpu]
[--size 512x512] [--steps 20] [--guidance 6.5] [--images 3] [--json FILE]``.

Without ``--model`` it measures the embedded ``tiny-sd-random`` (untrained, so only its speed
means anything; ``--variant qnn`` runs its static 64x64 QDQ graphs on the QNN HTP backend, whose
x86 simulator says nothing about a phone). With ``--model`` it measures any optimum ONNX export
of Stable Diffusion (SD 1.5, SD-Turbo, LCM) at that path.

Each image is the client's default request shape (prompt, negative prompt, guidance, seed i);
one warm-up image is generated first and not counted. The report gives the load time, where each
graph ran, and medians over the images of: seconds per image, text encoder, UNet step (with
guidance a step is one batch-2 UNet call, or two batch-1 calls on a static graph) and VAE decode.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from imagine_edge.benchmarks.machine import machine_info
from imagine_edge.models.text_to_image import (
    StableDiffusionOnnx,
    load_text_to_image,
    load_tiny_sd_random,
)
from imagine_edge.sdk.types import ImageRequest


def _load(args: argparse.Namespace) -> tuple[StableDiffusionOnnx, str]:
    if args.model:
        return load_text_to_image(args.model, target=args.target), str(args.model)
    return load_tiny_sd_random(args.variant), f"tiny-sd-random ({args.variant})"


def run(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    model, name = _load(args)
    load_seconds = time.perf_counter() - start
    size = args.size or ("64x64" if args.variant == "qnn" and not args.model else "512x512")
    request = ImageRequest(
        prompt=args.prompt, model=name, stream=False, size=size, seed=27, seed_increment=100,
        num_inference_steps=args.steps, guidance_scale=args.guidance, negative_prompt="blurry",
    )  # fmt: skip
    cancel = threading.Event()
    model.generate_png(request, 0, cancel)  # warm-up: first-run allocations, EP compilation
    images, steps, text, vae = [], [], [], []
    for i in range(args.images):
        model.generate_png(request, i + 1, cancel)
        t = model.last_timings
        images.append(t.total)
        steps.extend(t.unet_steps)
        text.append(t.text_encoder)
        vae.append(t.vae_decoder)
    result = {
        "model": name,
        "execution_provider": model.execution_provider,
        "size": size,
        "steps": len(model.last_timings.unet_steps),
        "guidance_scale": args.guidance,
        "images": args.images,
        "load_seconds": round(load_seconds, 3),
        "seconds_per_image": round(statistics.median(images), 4),
        "seconds_per_step": round(statistics.median(steps), 5),
        "text_encoder_seconds": round(statistics.median(text), 5),
        "vae_decoder_seconds": round(statistics.median(vae), 4),
        "machine": machine_info(),
    }
    model.close()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an optimum SD ONNX export folder")
    parser.add_argument("--target", default="auto", choices=["cpu", "qnn", "auto"],
                        help="EP of the UNet and VAE decoder of --model")  # fmt: skip
    parser.add_argument("--variant", default="cpu", choices=["cpu", "qnn"],
                        help="tiny-sd-random variant when no --model is given")  # fmt: skip
    parser.add_argument("--size", help="'<W>x<H>' (default 512x512; 64x64 for --variant qnn)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=6.5)
    parser.add_argument("--images", type=int, default=3, help="measured images (after 1 warm-up)")
    parser.add_argument("--prompt", default="a photo of a red square on a blue table")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
