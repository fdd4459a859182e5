"""An LLM's sampling defaults in its manifest: written by preparation, read by the loader, and
an older manifest without them loading with the values it had before."""

from __future__ import annotations

import importlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from imagine_edge.models import catalog
from imagine_edge.models.catalog import CatalogEntry, get_entry, prepared
from imagine_edge.models.llm import SMOLLM2_DEFAULTS, model_defaults
from imagine_edge.models.store import BaseInfo, GraphFile, Manifest, SpecialTokens, Variant
from imagine_edge.runtime.sampling import SamplingDefaults
from imagine_edge.sdk.types import ModelType

FROM_FILE = SamplingDefaults(temperature=0.6, top_k=20, top_p=0.95, max_tokens=256)
FROM_CATALOG = SamplingDefaults(temperature=0.3, top_k=-1, top_p=0.8, max_tokens=100)


def _entry(base_defaults: SamplingDefaults | None, own: SamplingDefaults | None) -> CatalogEntry:
    def base(weights: Path, out: Path) -> BaseInfo:
        (out / "tokenizer.json").write_text("{}", encoding="utf-8")
        return BaseInfo(
            tokenizer=Path("tokenizer.json"),
            chat_template=None,
            special_tokens=SpecialTokens(1, (2,), 2, {}),
            context_length=64,
            architecture=None,
            float_weights=None,
            sampling_defaults=base_defaults,
        )

    def cpu(manifest: Manifest, out: Path) -> Variant:
        (out / "model.onnx").write_bytes(b"")
        return Variant("cpu", out, "none", {"decoder": GraphFile(out / "model.onnx", (), ())})

    return CatalogEntry(
        name="fake-llm",
        model_type=ModelType.LLM,
        description="a fake LLM",
        licence="MIT",
        model_card="Fake.",
        source_package="fakeweights",
        source_module="fakeweights",
        source_file="weights.bin",
        recipe_version=1,
        prepare_base=base,
        variants={"cpu": cpu},
        default_variants=("cpu",),
        sampling_defaults=own,
    )


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake weights package and an empty store of our own."""
    pkg = tmp_path / "site" / "fakeweights"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('never imported')\n")
    (pkg / "weights.bin").write_text("weights")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.setenv("IMAGINE_EDGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize(
    ("from_file", "own", "expected"),
    [
        (FROM_FILE, None, FROM_FILE),  # the source's metadata (a user's GGUF or genai folder)
        (FROM_FILE, FROM_CATALOG, FROM_CATALOG),  # the catalog's own values win
        (None, FROM_CATALOG, FROM_CATALOG),
        (None, None, None),
    ],
)
def test_preparation_writes_the_defaults_into_the_manifest(
    store: Path,
    monkeypatch: pytest.MonkeyPatch,
    from_file: SamplingDefaults | None,
    own: SamplingDefaults | None,
    expected: SamplingDefaults | None,
) -> None:
    monkeypatch.setattr(catalog, "CATALOG", [_entry(from_file, own)])
    manifest = prepared("fake-llm")
    raw = json.loads((manifest.root / "manifest.json").read_text(encoding="utf-8"))
    if expected is None:
        assert raw["sampling_defaults"] is None
        assert model_defaults(manifest) == SMOLLM2_DEFAULTS
    else:
        assert raw["sampling_defaults"] == {
            "temperature": expected.temperature,
            "top_k": expected.top_k,
            "top_p": expected.top_p,
            "max_tokens": expected.max_tokens,
        }
        assert manifest.sampling_defaults == expected
        assert model_defaults(manifest) == expected
    assert Manifest.load(manifest.root) == manifest


def test_a_manifest_written_before_the_field_loads_with_the_old_values(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "CATALOG", [_entry(None, FROM_CATALOG)])
    manifest = prepared("fake-llm")
    path = manifest.root / "manifest.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    del raw["sampling_defaults"]
    path.write_text(json.dumps(raw), encoding="utf-8")
    old = Manifest.load(manifest.root)
    assert old.sampling_defaults is None
    assert model_defaults(old) == SMOLLM2_DEFAULTS  # what every LLM got before the field
    # An onnxruntime-genai folder prepared then kept its search section in the variant options.
    cpu = old.variant("cpu")
    genai = replace(
        old,
        variants={
            "cpu": replace(
                cpu,
                options={"default_temperature": 0.0, "default_top_k": 5, "default_top_p": 0.5},
            )
        },
    )
    assert model_defaults(genai) == SamplingDefaults(0.0, 5, 0.5, SMOLLM2_DEFAULTS.max_tokens)


def test_the_catalog_smollm2_carries_its_model_cards_values() -> None:
    entry = get_entry("smollm2-135m-instruct")
    assert entry.sampling_defaults == SamplingDefaults(
        temperature=0.2, top_k=-1, top_p=0.9, max_tokens=256
    )


@pytest.mark.model
def test_the_loader_takes_the_manifests_defaults(smollm2_manifest: Manifest) -> None:
    from imagine_edge.models.llm import ChatModel

    mine = replace(smollm2_manifest, sampling_defaults=FROM_CATALOG)
    model = ChatModel(mine, max_length=64)
    try:
        assert model.defaults == FROM_CATALOG
    finally:
        model.close()
