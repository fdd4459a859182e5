"""``imagine-edge models prune``: older model versions and the graphs derived from them go;
what current models use stays."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from imagine_edge.models.catalog import lookup
from imagine_edge.models.cli import models_command
from imagine_edge.models.prune import stale_files
from imagine_edge.models.store import cache_root
from imagine_edge.runtime.prepacked import prepacked_dir
from imagine_edge.runtime.session import epcontext_dir

HOUR = 3600


def _graph(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    graph = folder / "model.onnx"
    graph.write_bytes(b"graph")
    return graph


def _derived(entry: Path, source: Path | None) -> Path:
    entry.mkdir(parents=True)
    (entry / "model.data").write_bytes(b"x" * 1000)
    if source is not None:
        (entry / "source.json").write_text(json.dumps({"source": str(source)}))
    return entry


def _compiled(stem: str, source: Path) -> list[Path]:
    root = epcontext_dir()
    root.mkdir(parents=True, exist_ok=True)
    files = [root / f"{stem}.onnx", root / f"{stem}_qnn.bin", root / f"{stem}.source.json"]
    files[0].write_bytes(b"wrapper")
    files[1].write_bytes(b"b" * 500)
    files[2].write_text(json.dumps({"source": str(source)}))
    return files


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("IMAGINE_EDGE_CACHE", str(tmp_path / "cache"))
    store = cache_root()
    current = lookup("smollm2").folder  # the current version's folder (not prepared here)
    old = store / "smollm2-135m-instruct-0123456789abcdef"
    paths = {
        "current": current,
        "old": old,
        "current_graph": _graph(current / "cpu"),
        "old_graph": _graph(old / "cpu"),
        "foreign": _graph(store / "my-own-model-0123456789abcdef").parent,
        "fresh_tmp": store / ".tmp-whisper-base-abc",
        "abandoned_tmp": store / ".tmp-whisper-base-def",
    }
    for tmp in ("fresh_tmp", "abandoned_tmp"):
        paths[tmp].mkdir()
    stamp = time.time() - 2 * HOUR
    os.utime(paths["abandoned_tmp"], (stamp, stamp))
    (store / f".{old.name}.lock").write_bytes(b"")
    paths["copy_current"] = _derived(prepacked_dir() / "model-aaa", paths["current_graph"])
    paths["copy_old"] = _derived(prepacked_dir() / "model-bbb", paths["old_graph"])
    paths["copy_unrecorded"] = _derived(prepacked_dir() / "model-ccc", None)
    paths["compiled_current"] = _compiled("decode-111", paths["current_graph"])[0]
    paths["compiled_old"] = _compiled("decode-222", paths["old_graph"])[0]
    return paths


def test_only_what_no_current_model_uses_is_stale(cache: dict[str, Path]) -> None:
    stale = {item.path: item for item in stale_files()}
    expected = {
        cache["old"], cache["abandoned_tmp"], cache["copy_old"], cache["copy_unrecorded"],
        *(epcontext_dir() / n for n in ("decode-222.onnx", "decode-222_qnn.bin",
                                        "decode-222.source.json")),
    }  # fmt: skip
    assert set(stale) == expected
    assert "older version of smollm2-135m-instruct" in stale[cache["old"]].reason
    files = list(cache["copy_old"].iterdir())
    assert stale[cache["copy_old"]].size == sum(f.stat().st_size for f in files) > 1000


def test_a_dry_run_lists_and_keeps_everything(cache, capsys) -> None:
    assert models_command(["prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert str(cache["old"]) in out
    assert "nothing removed" in out
    assert cache["old"].is_dir()
    assert cache["copy_old"].is_dir()


def test_prune_removes_the_stale_and_keeps_the_rest(cache, capsys) -> None:
    assert models_command(["prune"]) == 0
    assert "freed" in capsys.readouterr().out
    for gone in ("old", "abandoned_tmp", "copy_old", "copy_unrecorded", "compiled_old"):
        assert not cache[gone].exists(), gone
    for kept in ("current", "foreign", "fresh_tmp", "copy_current", "compiled_current"):
        assert cache[kept].exists(), kept
    assert not (cache_root() / f".{cache['old'].name}.lock").exists()
    assert stale_files() == []
