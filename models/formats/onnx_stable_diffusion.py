"""TEXT_TO_IMAGE: an optimum ONNX export of a Stable Diffusion pipeline (1.x, 2.x, Turbo, LCM).

The folder ``optimum-cli export onnx --task text-to-image`` writes (and onnx repositories on the
hub hold): ``model_index.json``, ``text_encoder/``, ``unet/``, ``vae_decoder/`` each with
``model.onnx`` (and ``config.json``), ``tokenizer/`` and ``scheduler/scheduler_config.json``.
The graphs are used as they are: the base links the folder into the store and the ``cpu``
variant links the base, which :func:`imagine_edge.models.text_to_image.load_prepared` opens.
SDXL exports (a second text encoder) are refused: the pipeline has no SDXL conditioning. No QNN
variant: float graphs with dynamic shapes do not fit the HTP (the catalog's tiny-sd has a QDQ
recipe of its own); at target auto each graph falls back to the CPU EP with one log line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from imagine_edge.models.formats._hf import broken, link_or_copy, onnx_io, read_json
from imagine_edge.models.formats.base import Detection, SourceFormat
from imagine_edge.models.store import BaseInfo, GraphFile, Manifest, SpecialTokens, Variant
from imagine_edge.sdk.types import ModelType

__all__ = ["FORMAT", "GRAPHS", "detect", "prepare_base", "prepare_cpu"]

NAME: Final = "onnx-stable-diffusion"
GRAPHS: Final = ("text_encoder", "unet", "vae_decoder")
PIPELINE_DIR: Final = "pipeline"
# What the pipeline reads, besides the graphs (each graph's config.json is optional).
REQUIRED: Final = ("scheduler/scheduler_config.json",)
SDXL_PARTS: Final = ("text_encoder_2", "tokenizer_2")


def _files(path: Path) -> list[Path]:
    """Every file the pipeline may read (the folder's other files, e.g. vae_encoder, are not
    needed to generate)."""
    parts = [*GRAPHS, "tokenizer", "scheduler"]
    out = [path / "model_index.json"]
    for part in parts:
        folder = path / part
        if folder.is_dir():
            out += sorted(f for f in folder.rglob("*") if f.is_file())
    return out


def detect(path: Path) -> Detection | None:
    """A folder with ``model_index.json`` and ONNX graphs in optimum's layout."""
    if not path.is_dir() or not (path / "model_index.json").is_file():
        return None
    index = read_json(NAME, path / "model_index.json")
    if not any((path / g / "model.onnx").is_file() for g in GRAPHS):
        return None  # a diffusers (torch) pipeline folder: not an ONNX export
    if any(k in index or (path / k).exists() for k in SDXL_PARTS):
        found = f"{index.get('_class_name', 'a pipeline')} with text_encoder_2 (SDXL)"
        raise broken(NAME, path, "a Stable Diffusion 1.x/2.x/Turbo/LCM export", found)
    missing = [f"{g}/model.onnx" for g in GRAPHS if not (path / g / "model.onnx").is_file()]
    missing += [f for f in REQUIRED if not (path / f).is_file()]
    tokenizer = path / "tokenizer"
    has_tokenizer = (tokenizer / "tokenizer.json").is_file() or (
        (tokenizer / "vocab.json").is_file() and (tokenizer / "merges.txt").is_file()
    )
    if not has_tokenizer:
        missing.append("tokenizer/tokenizer.json (or vocab.json + merges.txt)")
    if missing:
        expected = "text_encoder, unet, vae_decoder graphs, a tokenizer and a scheduler config"
        raise broken(NAME, path, expected, f"missing: {', '.join(missing)}")
    empty = [g for g in GRAPHS if (path / g / "model.onnx").stat().st_size == 0]
    if empty:
        raise broken(NAME, path, "non-empty graphs", f"empty: {', '.join(empty)}")
    size = sum(f.stat().st_size for f in _files(path)) / 2**20
    kind = index.get("_class_name", "pipeline")
    description = f"ONNX Stable Diffusion ({kind}, {size:.0f} MiB), as exported"
    return Detection(files=tuple(_files(path)), description=description)


def _link_tree(src: Path, dst: Path, files: list[Path]) -> None:
    for f in files:
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(f, target)


def prepare_base(path: Path, out: Path) -> BaseInfo:
    """Link the pipeline's files into ``out/pipeline`` (the graphs are not converted)."""
    if detect(path) is None:
        raise broken(NAME, path, "model_index.json and ONNX graphs", "neither")
    text_file = path / "text_encoder" / "config.json"
    text_config = read_json(NAME, text_file) if text_file.is_file() else {}
    for graph in GRAPHS:  # a corrupt graph fails here, not at the first load
        onnx_io(NAME, path / graph / "model.onnx")
    _link_tree(path, out / PIPELINE_DIR, _files(path))
    tokenizer = Path(PIPELINE_DIR) / "tokenizer"
    if (out / tokenizer / "tokenizer.json").is_file():
        tokenizer /= "tokenizer.json"
    limit = text_config.get("max_position_embeddings", 77)
    return BaseInfo(
        tokenizer=tokenizer,
        chat_template=None,
        special_tokens=SpecialTokens(),
        context_length=limit if isinstance(limit, int) else 77,
        architecture=None,
        float_weights=Path(PIPELINE_DIR),
    )


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """The pipeline folder, linked from the base, for the CPU EP."""
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base kept no pipeline")
    src = manifest.float_weights
    _link_tree(src, out, sorted(f for f in src.rglob("*") if f.is_file()))
    graphs = {}
    for g in GRAPHS:
        inputs, outputs, _ = onnx_io(NAME, out / g / "model.onnx")
        graphs[g] = GraphFile(out / g / "model.onnx", inputs, outputs)
    return Variant(
        ep="cpu",
        dir=out,
        quantization="as exported (not converted)",
        graphs=graphs,
        options={"precision": "as exported"},
        notes="optimum's layout; loaded by text_to_image.load_prepared.",
    )


FORMAT: Final = SourceFormat(
    name=NAME,
    model_type=ModelType.TEXT_TO_IMAGE,
    detect=detect,
    prepare_base=prepare_base,
    variants={"cpu": prepare_cpu},
    default_variants=("cpu",),
    loader="imagine_edge.models.text_to_image:load_image_generator",
)
