"""TRANSCRIBE: a Hugging Face Whisper folder (``WhisperForConditionalGeneration.save_pretrained``
plus its processor files, as on the hub: ``openai/whisper-*`` and fine-tunes of it).

Files: ``config.json`` (``model_type`` whisper), ``model.safetensors``, ``tokenizer.json`` and
``generation_config.json`` (``suppress_tokens``, ``begin_suppress_tokens``; read from
``config.json`` when there is no generation config, as older checkpoints keep them there).
Preparation loads the weights as float32 and continues as the catalog's Whisper recipe
(:mod:`imagine_edge.models.prepare.whisper`): int8 CPU graphs (``cpu``), QDQ encoder (``qnn``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from imagine_edge.models.formats._hf import broken, read_json, require_files
from imagine_edge.models.formats.base import Detection, SourceFormat
from imagine_edge.models.store import BaseInfo, VariantPreparer
from imagine_edge.sdk.types import ModelType

__all__ = ["FORMAT", "detect", "prepare_base", "suppressed"]

NAME: Final = "hf-whisper"
FILES: Final = ("config.json", "model.safetensors", "tokenizer.json")


def suppressed(path: Path) -> tuple[list[int], list[int]]:
    """The token ids suppressed at every step and at the first step, from the folder."""
    source = path / "generation_config.json"
    config: dict[str, Any] = read_json(NAME, source if source.is_file() else path / "config.json")
    lists = []
    for key in ("suppress_tokens", "begin_suppress_tokens"):
        value = config.get(key) or []
        if not isinstance(value, list) or not all(isinstance(i, int) for i in value):
            raise broken(NAME, path, f"{key} to be a list of token ids", f"{value!r}")
        lists.append([int(i) for i in value])
    return lists[0], lists[1]


def detect(path: Path) -> Detection | None:
    """A folder whose ``config.json`` says ``model_type`` whisper and that has no ONNX graphs
    or CTranslate2 file of its own (those are other formats)."""
    if not path.is_dir() or not (path / "config.json").is_file():
        return None
    if (path / "model.bin").exists() or (path / "model.bin.part1").exists():
        return None  # CTranslate2's config.json has no model_type; be safe all the same
    config = read_json(NAME, path / "config.json")
    if config.get("model_type") != "whisper":
        return None
    require_files(NAME, path, FILES)
    suppressed(path)
    layers = config.get("encoder_layers"), config.get("decoder_layers")
    files = [path / n for n in FILES]
    if (path / "generation_config.json").is_file():
        files.append(path / "generation_config.json")
    description = (
        f"Hugging Face Whisper ({layers[0]} encoder / {layers[1]} decoder layers, "
        f"d_model {config.get('d_model')}, safetensors)"
    )
    return Detection(files=tuple(files), description=description)


def prepare_base(path: Path, out: Path) -> BaseInfo:
    """The float32 model, tokenizer and decoding facts (the Whisper recipe's base)."""
    import torch
    from transformers import WhisperForConditionalGeneration

    from imagine_edge.models.prepare import whisper

    if detect(path) is None:
        raise broken(NAME, path, "config.json with model_type whisper", "none")
    suppress, suppress_begin = suppressed(path)
    try:
        loader: Any = WhisperForConditionalGeneration  # from_pretrained is untyped
        model = loader.from_pretrained(str(path), dtype=torch.float32).eval()
    except (OSError, ValueError, RuntimeError) as exc:
        found = f"{type(exc).__name__}: {str(exc)[:300]}"
        raise broken(NAME, path, "weights transformers can load", found) from None
    return whisper.write_float_base(
        model,
        path / "tokenizer.json",
        out,
        suppress_ids=suppress,
        suppress_ids_begin=suppress_begin,
    )


def _variants() -> dict[str, VariantPreparer]:
    from imagine_edge.models.prepare import whisper

    return {"cpu": whisper.prepare_cpu, "qnn": whisper.prepare_qnn}


FORMAT: Final = SourceFormat(
    name=NAME,
    model_type=ModelType.TRANSCRIBE,
    detect=detect,
    prepare_base=prepare_base,
    variants=_variants(),
    default_variants=("cpu",),
    loader="imagine_edge.models.transcribe:load_transcriber",
)
