"""The CLIP tokenizer of the text-to-image pipeline against transformers' ``CLIPTokenizer``, on the
tokenizer folder of ``tiny-sd-random`` (built by the store on first use)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from imagine_edge.models.catalog import prepared
from imagine_edge.models.prepare.tiny_sd import NAME
from imagine_edge.models.store import Manifest
from imagine_edge.models.text_to_image.tokenizer import ClipTokenizer

PROMPT = "a red square"


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return prepared(NAME, ["cpu"])


def test_tokenizer_matches_transformers(manifest: Manifest, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = manifest.variant("cpu").dir / "tokenizer"
    ref = transformers.CLIPTokenizer.from_pretrained(str(folder))
    # The same folder without tokenizer.json: CLIP's vocab.json + merges.txt, as most SD exports.
    bare = tmp_path / "tokenizer"
    shutil.copytree(folder, bare)
    (bare / "tokenizer.json").unlink()
    texts = [
        PROMPT,
        "A   PHOTO of a Cat, in the snow!!",
        "",
        "naïve café — ünïcödé 123",
        "a red square " * 40,  # longer than 77 tokens: truncated, still ends with eos
    ]
    want = ref(texts, padding="max_length", max_length=77, truncation=True).input_ids
    for tok_folder in (folder, bare):
        got = ClipTokenizer(tok_folder, 77)(texts)
        np.testing.assert_array_equal(got, np.array(want))
