"""The ONNX encoder format: an export of a BERT encoder (all-MiniLM-L6-v2's real weights,
exported by the test as optimum does: inputs ids, mask and token types, output the token
vectors), used as it is and pooled on the host, against transformers on the same weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from imagine_edge.models.embedding import open_embedder
from imagine_edge.models.formats.onnx_encoder import FORMAT
from imagine_edge.sdk.errors import InvalidRequestError

from .builders import build_onnx_encoder
from .prepare_source import prepare_source
from .test_sentence_transformers import HELD_OUT, package_folder


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An optimum-style folder: model.onnx, config.json, tokenizer.json at the top."""
    return build_onnx_encoder(tmp_path_factory.mktemp("onnx") / "export")


def reference(pooling: str) -> np.ndarray:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(package_folder()))
    model = AutoModel.from_pretrained(str(package_folder()), dtype=torch.float32).eval()
    with torch.no_grad():
        batch = tok(HELD_OUT, padding=True, return_tensors="pt")
        hidden = model(**batch).last_hidden_state
    if pooling == "cls":
        out = hidden[:, 0].numpy()
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        out = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def embed(folder: Path, root: Path) -> np.ndarray:
    manifest = prepare_source(FORMAT, folder, root, ("cpu",))
    embedder = open_embedder(manifest, "cpu")
    try:
        return embedder.embed(HELD_OUT).vectors
    finally:
        embedder.close()


def test_mean_pooled_export_matches_transformers(export: Path, tmp_path: Path) -> None:
    found = FORMAT.detect(export)
    assert found is not None
    assert "mean pooling" in found.description
    cosine = np.sum(embed(export, tmp_path) * reference("mean"), axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_cls_pooling_from_the_pooling_config(export: Path, tmp_path: Path) -> None:
    # The sentence-transformers hub layout: onnx/model.onnx, the Pooling module's config.
    folder = tmp_path / "hub"
    (folder / "onnx").mkdir(parents=True)
    (folder / "1_Pooling").mkdir()
    shutil.copyfile(export / "model.onnx", folder / "onnx" / "model.onnx")
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(export / name, folder / name)
    pooling = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    cosine = np.sum(embed(folder, tmp_path / "store") * reference("cls"), axis=1)
    assert cosine.min() >= 0.9999, cosine


def test_not_claimed_and_broken(export: Path, tmp_path: Path) -> None:
    assert FORMAT.detect(package_folder()) is None  # safetensors, no ONNX graph
    folder = tmp_path / "broken"
    shutil.copytree(export, folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(InvalidRequestError, match=r"missing: tokenizer\.json"):
        FORMAT.detect(folder)
    shutil.copyfile(export / "tokenizer.json", folder / "tokenizer.json")
    (folder / "model.onnx").write_bytes(b"\x00garbage, not a protobuf")
    with pytest.raises(InvalidRequestError, match=r"model.onnx to be an ONNX model"):
        FORMAT.prepare_base(folder, tmp_path / "out")
    config = json.loads((export / "config.json").read_text())
    config["architectures"] = ["BertForSequenceClassification"]
    (folder / "config.json").write_text(json.dumps(config))
    assert FORMAT.detect(folder) is None  # a cross-encoder: the reranker format's
