"""The registry of added models: atomic, safe against concurrent writers, and persistent."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from imagine_edge.models import user_models
from imagine_edge.models.user_models import UserModel, find, list_models, register, unregister
from imagine_edge.sdk.errors import InvalidRequestError, ModelNotFoundError
from imagine_edge.sdk.types import ModelType


def _model(name: str, source: str = "/models/a.gguf") -> UserModel:
    return UserModel(
        name=name,
        model_type=ModelType.LLM,
        format="gguf",
        source=source,
        description="test: llama, GGUF Q4_1",
        size_bytes=123,
        store="/store/user-gguf-0123",
        variants=("cpu",),
        added="2026-01-01T00:00:00+0000",
    )


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMAGINE_EDGE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_registered_model_is_read_back_from_the_file(data_dir: Path) -> None:
    register(_model("mine"))
    assert user_models.registry_path() == data_dir / "models.json"
    on_disk = json.loads((data_dir / "models.json").read_text(encoding="utf-8"))
    assert [m["name"] for m in on_disk["models"]] == ["mine"]
    assert find("MINE") == _model("mine")
    assert list_models() == [_model("mine")]


def test_a_name_taken_by_another_source_is_refused() -> None:
    register(_model("mine", "/a.gguf"))
    with pytest.raises(InvalidRequestError, match=r"already taken.*/a.gguf"):
        register(_model("mine", "/b.gguf"))
    register(_model("mine", "/a.gguf"))  # the same source again is an update
    assert [m.source for m in list_models()] == ["/a.gguf"]


def test_unregister_removes_only_that_entry() -> None:
    register(_model("one", "/1"))
    register(_model("two", "/2"))
    assert unregister("one").source == "/1"
    assert [m.name for m in list_models()] == ["two"]
    with pytest.raises(ModelNotFoundError, match="no added model is called 'one'"):
        unregister("one")


def test_a_damaged_registry_is_a_clear_error(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    (data_dir / "models.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidRequestError, match="unreadable"):
        list_models()


def test_no_temporary_file_is_left_beside_the_registry(data_dir: Path) -> None:
    for i in range(5):
        register(_model(f"m{i}", f"/{i}"))
    assert sorted(p.name for p in data_dir.iterdir()) == [".models.json.lock", "models.json"]


def _add_many(data: str, worker: int, count: int) -> None:
    import os

    os.environ["IMAGINE_EDGE_DATA_DIR"] = data
    for i in range(count):
        register(_model(f"w{worker}-{i}", f"/w{worker}/{i}"))
        json.loads(user_models.registry_path().read_text(encoding="utf-8"))  # always whole


def test_processes_adding_at_once_lose_no_entry(data_dir: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(str(data_dir), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    names = {m.name for m in list_models()}
    assert names == {f"w{w}-{i}" for w in range(4) for i in range(15)}
