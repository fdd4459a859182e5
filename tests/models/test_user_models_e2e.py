"""``imagine-edge models add`` end to end for every non-LLM format, through the CLI.

Each format's source (a real artifact from a weights package, or a real architecture with random
weights built by the test, tests/models/formats/builders.py) is added by the command in a
temporary data directory, without ``--type`` (the type is inferred from the files). Then: the
in-process ``ImagineEdge()`` serves it by its name (one call of its type); ``models list`` lists
it; a new process (a restart) serves it by name with the same answer; adding the same content
again is a cache hit; ``--type`` of another type is refused with the format and type it found;
``models remove`` removes it, from the listing and from a new process's models.

Preparations land in the user's model store, keyed by content: later runs are cache hits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imagine_edge.python_command import python_module
from imagine_edge.sdk.types import ModelType

from .formats.builders import (
    build_cross_encoder,
    build_hf_whisper,
    build_onnx_encoder,
    ct2_whisper_folder,
    minilm_folder,
    tiny_sd_folder,
)
from .formats.marian_builder import build_marian
from .user_model_calls import DOCUMENTS, SENTENCES, call

pytestmark = pytest.mark.model


@dataclass(frozen=True)
class Case:
    fmt: str
    model_type: ModelType
    wrong_type: ModelType  # a --type that the source is not
    source: Callable[[Path], Path]
    check: Callable[[Any], None]  # what a right answer looks like
    # A catalog model on the same weights, whose answer this one's must match (None: none).
    catalog: str | None = None


def _unit_vectors(answer: Any) -> None:
    vectors = np.array(answer)
    assert vectors.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def _scores(answer: Any) -> None:
    assert sorted(answer) == [str(i) for i in range(len(DOCUMENTS))]
    assert all(0.0 < s < 1.0 for s in answer.values())


def _beckett(answer: Any) -> None:
    assert "fail better" in answer.lower()


def _digest(answer: Any) -> None:
    assert len(answer) == 64


def _text(answer: Any) -> None:  # random weights: some text, the same after a restart
    assert isinstance(answer, str)
    assert answer.strip()


CASES = [
    Case("sentence-transformers", ModelType.EMBEDDING, ModelType.RERANKER,
         lambda tmp: minilm_folder(), _unit_vectors, "all-minilm-l6-v2"),
    Case("onnx-encoder", ModelType.EMBEDDING, ModelType.LLM,
         lambda tmp: build_onnx_encoder(tmp / "minilm-onnx"), _unit_vectors, "all-minilm-l6-v2"),
    Case("cross-encoder", ModelType.RERANKER, ModelType.EMBEDDING,
         lambda tmp: build_cross_encoder(tmp / "tiny-cross-encoder"), _scores),
    Case("ctranslate2-whisper", ModelType.TRANSCRIBE, ModelType.TEXT_TO_IMAGE,
         lambda tmp: ct2_whisper_folder(), _beckett, "whisper-tiny-en"),
    Case("hf-whisper", ModelType.TRANSCRIBE, ModelType.EMBEDDING,
         lambda tmp: build_hf_whisper(tmp / "whisper-tiny.en"), _beckett, "whisper-tiny-en"),
    Case("onnx-stable-diffusion", ModelType.TEXT_TO_IMAGE, ModelType.TRANSCRIBE,
         lambda tmp: tiny_sd_folder(), _digest),
    Case("hf-marian", ModelType.TRANSLATE, ModelType.EMBEDDING,
         lambda tmp: build_marian(tmp / "opus-mt-tiny"), _text),
]  # fmt: skip


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "IMAGINE_EDGE_DATA_DIR": str(data_dir)}


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*python_module("imagine_edge"), "models", *args],
        capture_output=True,
        text=True,
        env=_env(data_dir),
        timeout=1800,
        check=False,
    )


def _restarted(data_dir: Path, model_type: ModelType, name: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("user_model_calls.py")),
            model_type.value,
            name,
        ],
        capture_output=True,
        text=True,
        env={**_env(data_dir), "IMAGINE_EDGE_TEXT_TO_IMAGE_TARGET": "cpu"},
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _same(a: Any, b: Any) -> None:
    if isinstance(a, list):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], atol=1e-6)
    else:
        assert a == b


@pytest.mark.parametrize("case", CASES, ids=[c.fmt for c in CASES])
def test_added_by_the_cli_served_listed_restarted_and_removed(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("IMAGINE_EDGE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("IMAGINE_EDGE_TEXT_TO_IMAGE_TARGET", "cpu")
    source = case.source(tmp_path)
    name = f"my-{case.fmt}"

    added = _cli(data_dir, "add", str(source), "--name", name)  # no --type: inferred
    assert added.returncode == 0, added.stderr[-3000:]
    assert f"added {name} [{case.model_type.value}]" in added.stdout
    assert f"({case.fmt}, " in added.stdout

    from imagine_edge.sdk.client import ImagineEdge

    with ImagineEdge() as client:
        names = client.get_available_models_by_type(case.model_type)[case.model_type]
        assert name in names
        answer = call(client, case.model_type.value, name)
        expected = (
            None if case.catalog is None else call(client, case.model_type.value, case.catalog)
        )
    case.check(answer)
    if case.model_type is ModelType.EMBEDDING:  # the catalog's int8 MiniLM on the same weights
        cosine = np.sum(np.array(answer) * np.array(expected), axis=1)
        assert cosine.min() >= 0.99, cosine
    elif expected is not None:  # Whisper tiny.en: the catalog's recipe on the same weights
        assert answer == expected

    listed = _cli(data_dir, "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{name} [{case.model_type.value}]" in listed.stdout
    assert f"source {source} ({case.fmt}, " in listed.stdout

    restarted = _restarted(data_dir, case.model_type, name)
    assert restarted["listed"]
    _same(answer, restarted["answer"])

    again = _cli(data_dir, "add", str(source), "--name", f"{name}-again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cache hit" in again.stdout

    wrong = _cli(data_dir, "add", str(source), "--name", "wrong", "--type", case.wrong_type.value)
    assert wrong.returncode == 1
    assert "Traceback" not in wrong.stderr
    assert f"is a {case.fmt} model of type {case.model_type.value}" in wrong.stderr
    assert f"not {case.wrong_type.value}" in wrong.stderr

    for gone in (name, f"{name}-again"):
        removed = _cli(data_dir, "remove", gone)
        assert removed.returncode == 0, removed.stderr
        assert "stay in the store" in removed.stdout
    listed = _cli(data_dir, "list")
    assert name not in listed.stdout
    assert "added models: none" in listed.stdout
    assert not _restarted(data_dir, case.model_type, name)["listed"]


def test_bench_model_runs_the_added_models_own_type_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    source = build_cross_encoder(tmp_path / "bench-cross-encoder", seed=1)
    added = _cli(data_dir, "add", str(source), "--name", "bench-rerank")
    assert added.returncode == 0, added.stderr[-3000:]
    out = tmp_path / "out"
    done = subprocess.run(
        [*python_module("imagine_edge"), "bench", "--model", "bench-rerank", "--smoke",
         "--duration", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        env=_env(data_dir),
        timeout=900,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    report = json.loads((out / "bench.json").read_text())
    scenarios = [(s["model_type"], s["model"], s.get("error")) for s in report["scenarios"]]
    assert scenarios == [("reranker", "bench-rerank", None)]
    assert report["scenarios"][0]["points"]


def test_a_marian_folder_without_its_spm_is_refused(tmp_path: Path) -> None:
    folder = build_marian(tmp_path / "opus-mt-no-spm")
    (folder / "source.spm").unlink()
    data_dir = tmp_path / "data"
    for args in ((), ("--type", "translate")):
        done = _cli(data_dir, "add", str(folder), *args)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr
        assert "looks like a hf-marian folder: expected source.spm, target.spm" in done.stderr
        assert "missing: source.spm" in done.stderr
    assert "added models: none" in _cli(data_dir, "list").stdout
