"""The hf-marian format on a real architecture with random weights (no opus-mt ships offline):
a tiny MarianMTModel and SentencePiece model built by the test (marian_builder.py). Our
tokenization equals MarianTokenizer's, and our greedy token ids equal transformers'
``generate(num_beams=1, do_sample=False)`` on the same folder."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagine_edge.models.formats import detect
from imagine_edge.models.formats.marian import FORMAT
from imagine_edge.models.translate_marian import MarianTranslator, load_marian_translator
from imagine_edge.sdk.errors import InvalidRequestError, PayloadTooLargeError
from imagine_edge.sdk.types import FinishReason, ModelType, TranslateRequest

from .marian_builder import SENTENCES, build_marian
from .prepare_source import prepare_source

INPUTS = [
    *SENTENCES[:3],
    "An unseen word: Zyxqwv!",  # pieces outside the vocabulary -> <unk>
    ">>pt<< the garden",  # a language code kept whole
    "",
]


def _reference(folder: Path, texts: list[str], steps: list[int]) -> list[list[int]]:
    import torch
    from transformers import MarianMTModel, MarianTokenizer

    tok = MarianTokenizer.from_pretrained(str(folder))
    model = MarianMTModel.from_pretrained(str(folder)).eval()
    out = []
    for text, n in zip(texts, steps, strict=True):
        batch = tok([text], return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=n)
        out.append([int(i) for i in ids[0, 1:] if int(i) != 0])  # no start id, no </s>
    return out


@pytest.fixture(scope="module", params=[0.0, 0.2], ids=["runs-to-the-bound", "stops-at-eos"])
def prepared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, MarianTranslator]]:
    root = tmp_path_factory.mktemp("marian")
    folder = build_marian(root / f"opus-mt-tiny-{request.param}", eos_bias=request.param)
    manifest = prepare_source(FORMAT, folder, root / "prepared", ("cpu",))
    translator = load_marian_translator(manifest)
    yield folder, translator
    translator.close()


def test_detected_as_translate_without_type(prepared: tuple[Path, MarianTranslator]) -> None:
    folder, _ = prepared
    fmt, found = detect(folder)
    assert fmt.name == "hf-marian"
    assert fmt.model_type is ModelType.TRANSLATE
    assert "Marian (2 encoder / 2 decoder layers, d_model 16" in found.description


def test_tokenization_equals_marian_tokenizer(prepared: tuple[Path, MarianTranslator]) -> None:
    from transformers import MarianTokenizer

    folder, translator = prepared
    tok = MarianTokenizer.from_pretrained(str(folder))
    for text in INPUTS:
        ours = translator.segments(text)
        assert len(ours) == 1
        assert ours[0] == tok(text)["input_ids"], text
    assert tok.unk_token_id in translator.segments(INPUTS[3])[0]


def test_greedy_ids_equal_transformers_generate(prepared: tuple[Path, MarianTranslator]) -> None:
    folder, translator = prepared
    sources = [translator.segments(t)[0] for t in INPUTS]
    steps = [translator.steps(len(s)) for s in sources]
    ours = [list(translator.greedy(s, n)) for s, n in zip(sources, steps, strict=True)]
    assert ours == _reference(folder, INPUTS, steps)
    assert any(ours)
    # a bias of 0.2 on </s>'s logit makes these random weights stop at </s> before the bound
    stopped = [len(o) < n - 1 for o, n in zip(ours, steps, strict=True)]
    assert any(stopped) == (not folder.name.endswith("-0.0"))


def test_translate_streams_the_decoded_text(prepared: tuple[Path, MarianTranslator]) -> None:
    from transformers import MarianTokenizer

    folder, translator = prepared
    tok = MarianTokenizer.from_pretrained(str(folder))
    source = translator.segments(SENTENCES[0])[0]
    ids = list(translator.greedy(source, translator.steps(len(source))))
    request = TranslateRequest(prompt=SENTENCES[0], model="m", stream=True)
    chunks = list(translator.translate(request, threading.Event()))
    assert chunks[-1].finish_reason is FinishReason.stop
    text = "".join(c.text for c in chunks)
    assert text == tok.decode(ids, skip_special_tokens=True)
    assert chunks[-1].stats is not None
    assert chunks[-1].stats.completion_tokens == len(ids)


def test_bounds_as_the_catalog_translator(prepared: tuple[Path, MarianTranslator]) -> None:
    _, translator = prepared
    request = TranslateRequest(prompt="a" * 20_001, model="m", stream=False)
    with pytest.raises(PayloadTooLargeError):
        list(translator.translate(request, threading.Event()))
    capped = TranslateRequest(prompt=SENTENCES[1], model="m", stream=False, max_tokens=2)
    source = translator.segments(SENTENCES[1])[0]
    if len(list(translator.greedy(source, translator.steps(len(source))))) > 2:
        chunks = list(translator.translate(capped, threading.Event()))
        assert chunks[-1].finish_reason is FinishReason.length
        assert chunks[-1].stats is not None
        assert chunks[-1].stats.completion_tokens == 2
    long = " ".join(SENTENCES[0].rstrip(".").split() * 30)  # one sentence past 64 positions
    segments = translator.segments(long)
    assert len(segments) > 1
    assert all(len(s) <= 64 and s[-1] == 0 for s in segments)


def test_missing_spm_is_refused_with_what_was_expected(tmp_path: Path) -> None:
    folder = build_marian(tmp_path / "opus-mt-broken")
    (folder / "target.spm").unlink()
    with pytest.raises(InvalidRequestError) as caught:
        detect(folder)
    message = str(caught.value)
    assert "looks like a hf-marian folder: expected source.spm, target.spm, vocab.json" in message
    assert "missing: target.spm" in message
    shutil.copy(folder / "source.spm", folder / "target.spm")
    (folder / "model.safetensors").unlink()
    with pytest.raises(InvalidRequestError, match=r"expected model.safetensors or pytorch_model"):
        detect(folder)


def test_a_cancelled_request_ends_before_decoding(prepared: tuple[Path, MarianTranslator]) -> None:
    _, translator = prepared
    cancel = threading.Event()
    cancel.set()
    request = TranslateRequest(prompt=SENTENCES[0], model="m", stream=True)
    chunks = list(translator.translate(request, cancel))
    assert [c.text for c in chunks] == [""]
    assert chunks[-1].finish_reason is FinishReason.stop
    assert chunks[-1].stats is not None
    assert chunks[-1].stats.completion_tokens == 0
