"""The folder layout of optimum's ONNX export of a diffusers Stable Diffusion pipeline::

    model_index.json   text_encoder/model.onnx   unet/model.onnx   vae_decoder/model.onnx
    tokenizer/ (tokenizer.json, or CLIP's vocab.json + merges.txt)   scheduler/scheduler_config.json
    (plus each graph's config.json, read for the VAE scale and scaling factor)

what a folder must hold to be loaded, and its JSON files read leniently (a missing config is
empty: the pipeline falls back to SD 1.x values).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from imagine_edge.sdk.errors import ModelRunError

__all__ = ["GRAPHS", "check_layout", "read_json"]

GRAPHS: Final = ("text_encoder", "unet", "vae_decoder")


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; empty when the file is missing or holds no object."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def check_layout(folder: Path) -> None:
    """ModelRunError(phase="load") naming every file the layout needs that ``folder`` lacks."""
    missing = [f"{g}/model.onnx" for g in GRAPHS if not (folder / g / "model.onnx").is_file()]
    missing += [
        f for f in ("scheduler/scheduler_config.json", "tokenizer") if not (folder / f).exists()
    ]
    if missing:
        raise ModelRunError(
            f"{folder} is not a Stable Diffusion ONNX export in optimum's layout: "
            f"missing {', '.join(missing)}",
            phase="load",
        )
