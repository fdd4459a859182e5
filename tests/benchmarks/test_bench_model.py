"""``imagine-edge bench --model NAME``: the named model's own type is benchmarked, not every type;
a name that is not served, or a --type that does not match it, is a clear error (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest

from imagine_edge.benchmarks.cli import model_type_of, parse_args, run_bench
from imagine_edge.benchmarks.report import SCHEMA_PATH
from imagine_edge.python_command import python_module
from imagine_edge.sdk.client import ImagineEdge
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.testing import fake_cards, fake_models
from imagine_edge.sdk.types import ModelType

SCHEMA = json.loads(SCHEMA_PATH.read_text())


@pytest.fixture
def fake_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IMAGINE_EDGE_DATA_DIR", str(tmp_path))
    client = ImagineEdge(engine=Engine(fake_cards(fake_models()), data_dir=tmp_path))
    yield client
    client.close()


def test_only_the_named_models_type_is_run(fake_client: ImagineEdge) -> None:
    report = run_bench(parse_args(["--model", "Hash-Embedder", "--smoke"]), local=fake_client)
    jsonschema.validate(report, SCHEMA)
    assert [(s["model_type"], s["model"]) for s in report["scenarios"]] == [
        ("embedding", "Hash-Embedder")
    ]
    assert report["scenarios"][0]["points"]
    assert "error" not in report["scenarios"][0]


def test_the_type_comes_from_catalog_aliases_too() -> None:
    assert model_type_of("whisper-tiny.en", {}) is ModelType.TRANSCRIBE
    assert model_type_of("overlap-reranker", {ModelType.RERANKER: ["overlap-reranker"]}) is (
        ModelType.RERANKER
    )


def test_an_unknown_name_or_a_mismatched_type_is_refused(fake_client: ImagineEdge) -> None:
    with pytest.raises(InvalidRequestError, match=r"no model is called 'nobody'.*echo-llm"):
        run_bench(parse_args(["--model", "nobody", "--smoke"]), local=fake_client)
    with pytest.raises(
        InvalidRequestError, match=r"is of type embedding; --type llm does not match"
    ):
        run_bench(
            parse_args(["--model", "hash-embedder", "--type", "llm", "--smoke"]),
            local=ImagineEdge(engine=Engine(fake_cards(fake_models()))),
        )


def test_cli_exits_2_with_the_reason(tmp_path: Path) -> None:
    done = subprocess.run(
        [*python_module("imagine_edge"), "bench", "--model", "nobody", "--smoke",
         "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "IMAGINE_EDGE_DATA_DIR": str(tmp_path / "data")},
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "imagine-edge bench: no model is called 'nobody'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
