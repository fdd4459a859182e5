"""The GGUF format: detected from the header alone, bad files refused with what was found."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from imagine_edge.models.formats import FORMATS, detect
from imagine_edge.models.formats.gguf import FORMAT, sampling_defaults
from imagine_edge.runtime.sampling import SamplingDefaults
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import ModelType


def _write(path: Path, arch: str, name: str = "tiny", **sampling: float) -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    for key, value in sampling.items():  # general.sampling.<key>, as llama.cpp writes them
        if isinstance(value, int):
            writer.add_int32(f"general.sampling.{key}", value)
        else:
            writer.add_float32(f"general.sampling.{key}", value)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_array("tokenizer.ggml.tokens", ["a", "b", "c"])
    writer.add_tensor("token_embd.weight", np.arange(4 * 32, dtype=np.float32).reshape(4, 32))
    writer.add_tensor("output_norm.weight", np.ones(32, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_format_is_listed_once_with_its_type() -> None:
    assert [f.name for f in FORMATS].count("gguf") == 1
    assert FORMAT.model_type == ModelType.LLM


def test_a_supported_architecture_is_detected_from_its_header(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.gguf", "llama", "Tiny Llama")
    fmt, found = detect(path)
    assert fmt is FORMAT
    assert found.files == (path,)
    assert found.description == "Tiny Llama: llama, GGUF ALL_F32"


def test_an_unsupported_architecture_names_the_supported_ones(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.gguf", "mamba")
    with pytest.raises(InvalidRequestError, match="'mamba' is not supported; supported: llama"):
        detect(path)


@pytest.mark.parametrize("keep", [3, 30, -100, -1])
def test_a_truncated_file_is_refused_as_truncated(tmp_path: Path, keep: int) -> None:
    whole = _write(tmp_path / "whole.gguf", "llama").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:keep])
    with pytest.raises(InvalidRequestError, match=r"truncated|GGUF magic"):
        detect(cut)


def test_a_gguf_name_without_the_magic_says_what_it_found(tmp_path: Path) -> None:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(InvalidRequestError, match=r"GGUF magic \(found b.PK"):
        detect(path)


def test_a_corrupt_header_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + b"\xff" * 64)
    with pytest.raises(InvalidRequestError, match=r"bad\.gguf"):
        detect(path)


def test_a_file_no_format_reads_lists_what_each_expects(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(InvalidRequestError) as e:
        detect(path)
    assert "a .gguf file" in str(e.value)
    assert "genai_config.json" in str(e.value)
    assert "found a file (notes.txt)" in str(e.value)


def test_a_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="no such file or folder"):
        detect(tmp_path / "absent.gguf")


def test_the_files_sampling_keys_are_the_models_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.gguf", "llama", temp=0.5, top_k=40, top_p=0.75)
    assert sampling_defaults(path) == SamplingDefaults(temperature=0.5, top_k=40, top_p=0.75)


def test_missing_sampling_keys_take_the_neutral_defaults(tmp_path: Path) -> None:
    found = sampling_defaults(_write(tmp_path / "m.gguf", "llama", temp=0.25))
    assert found == SamplingDefaults(temperature=0.25)
    assert sampling_defaults(_write(tmp_path / "n.gguf", "llama", top_k=0)) == SamplingDefaults()


def test_a_file_without_sampling_keys_leaves_the_loaders_fallback(tmp_path: Path) -> None:
    assert sampling_defaults(_write(tmp_path / "m.gguf", "llama")) is None
