"""The cross-encoder format on a real architecture with random weights (no cross-encoder ships
offline): a BertForSequenceClassification with one label built by the test, saved as
``save_pretrained`` writes it (safetensors) and as an ONNX export; scores against transformers'
sigmoid(logits) on the same weights and the same (query, document) pairs."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from imagine_edge.models.formats.cross_encoder import FORMAT
from imagine_edge.models.reranker import load_cross_encoder_reranker
from imagine_edge.sdk.errors import InvalidRequestError

from .builders import CROSS_TOKENIZER_FILES, build_cross_encoder
from .prepare_source import prepare_source
from .test_sentence_transformers import package_folder

QUERY = "how long do tigers live in the wild"
DOCUMENTS = [
    "Tigers in the wild usually live 10 to 15 years.",
    "The ferry to the island leaves twice a day.",
    "A tiger's stripes are unique, like fingerprints.",
    "",
    "Bake the bread until the crust sounds hollow when tapped. " * 40,  # truncated
]
TOKENIZER_FILES = CROSS_TOKENIZER_FILES


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("cross") / "tiny-cross-encoder")


def reference(folder: Path) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    batch = tok(
        [QUERY] * len(DOCUMENTS),
        DOCUMENTS,
        padding=True,
        truncation=True,
        max_length=128,
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = model(**batch).logits[:, 0].double()
    return torch.sigmoid(logits).numpy()


def scores(folder: Path, root: Path) -> np.ndarray:
    manifest = prepare_source(FORMAT, folder, root, ("cpu",))
    reranker = load_cross_encoder_reranker(manifest)
    try:
        rankings = reranker.rank(QUERY, DOCUMENTS)
    finally:
        reranker.close()
    assert rankings.prompt_tokens > 0
    return rankings.scores


def test_safetensors_folder_matches_transformers(folder: Path, tmp_path: Path) -> None:
    found = FORMAT.detect(folder)
    assert found is not None
    assert "BertForSequenceClassification" in found.description
    np.testing.assert_allclose(scores(folder, tmp_path), reference(folder), atol=1e-5)


def test_onnx_export_is_used_as_it_is(folder: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    exported = tmp_path / "exported"
    (exported / "onnx").mkdir(parents=True)
    for name in ("config.json", *TOKENIZER_FILES):
        shutil.copyfile(folder / name, exported / name)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    ids = torch.full((2, 8), 1000, dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(exported / "onnx" / "model.onnx"),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**{n: {0: "b", 1: "s"} for n in names}, "logits": {0: "b"}},
            opset_version=17,
            dynamo=False,
        )
    found = FORMAT.detect(exported)
    assert found is not None
    assert "ONNX, as exported" in found.description
    np.testing.assert_allclose(scores(exported, tmp_path / "store"), reference(folder), atol=1e-5)


def test_broken_folders_say_what_they_lack(folder: Path, tmp_path: Path) -> None:
    assert FORMAT.detect(package_folder()) is None  # a BertModel: an embedding model
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "entailment", "1": "neutral", "2": "contradiction"}
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidRequestError, match=r"expected one label.*with 3 labels"):
        FORMAT.detect(broken)
    shutil.copyfile(folder / "config.json", broken / "config.json")
    (broken / "model.safetensors").unlink()
    with pytest.raises(InvalidRequestError, match=r"model.safetensors or model.onnx"):
        FORMAT.detect(broken)
