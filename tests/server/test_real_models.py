"""Every real packaged model type behind the server, driven by the unchanged official client.

The LLM has its own module (test_real_llm.py); this one covers embeddings, the reranker,
translation, transcription and text-to-image on the models the catalog serves by default.
"""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import httpx
import imagine
import numpy as np
import pytest

from imagine_edge.models.registry import model_cards
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.types import ModelType
from imagine_edge.server.app import create_app

pytestmark = pytest.mark.model
SERVED = (
    ModelType.EMBEDDING,
    ModelType.RERANKER,
    ModelType.TRANSLATE,
    ModelType.TRANSCRIBE,
    ModelType.TEXT_TO_IMAGE,
)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory, serve):
    cards = [c for c in model_cards() if c.model_type in SERVED and c.name != "whisper-base"]
    engine = Engine(cards, data_dir=tmp_path_factory.mktemp("real-models"))
    try:
        with serve(create_app(engine)) as root:
            yield root + "/api/v2"
    finally:
        engine.close()


@pytest.fixture(scope="module")
def client(endpoint):
    return imagine.ImagineClient(endpoint=endpoint, api_key="local", max_retries=1)


def test_embeddings_of_related_sentences_are_close(client):
    texts = ["A man is eating food", "A man is eating a piece of bread", "The stock market fell"]
    response = client.embeddings(texts)  # the client's default name resolves to MiniLM
    vectors = np.array([d.embedding for d in response.data])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    cos = vectors @ vectors.T
    assert cos[0, 1] > 0.7
    assert cos[0, 1] > max(cos[0, 2], cos[1, 2])
    assert response.usage.prompt_tokens > 0


def test_reranker_puts_the_population_passage_first(client):
    passages = [
        "Berlin is known for its museums, galleries and the Museum Island.",
        "New York City is the most populous city in the United States.",
        "Mix the flour with two eggs and a cup of milk, then bake for twenty minutes.",
        "Berlin has a population of about 3.8 million people, the largest of any German city.",
    ]
    response = client.reranker(
        "How many people live in Berlin?", passages, top_n=2, return_documents=True
    )
    assert response.data[0].index == 3
    assert len(response.data) == 2
    assert response.data[0].document == passages[3]
    assert response.data[0].relevance_score >= response.data[1].relevance_score


def test_translate_both_ways(client):
    to_pt = client.translate("How are you today?", "bergamot-en-pt-tiny")
    assert "Como você está" in to_pt.first_text
    back = client.translate(to_pt.first_text, "bergamot-pt-en-tiny")
    assert "How are you" in back.first_text
    assert back.usage.completion_tokens > 0


def _beckett() -> Path:
    spec = importlib.util.find_spec("moonshine_voice")
    assert spec is not None, "moonshine-voice (the test audio) is installed"
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "beckett.wav"


def test_transcribe_a_file_path(client):
    response = client.transcribe(str(_beckett()))  # "whisper-tiny" resolves to tiny.en
    words = response.text.lower()
    assert "ever tried" in words
    assert "fail better" in words
    assert response.generation_time > 0
    assert response.ts


def test_images_as_b64_url_and_stream(client, endpoint):
    b64 = client.images_generate("a red square", size="64x64", num_inference_steps=2, n=2)
    first, second = (base64.b64decode(d.b64_json) for d in b64.data)
    assert first.startswith(PNG)
    assert second.startswith(PNG)
    assert first != second  # seed + i * seed_increment

    again = client.images_generate("a red square", size="64x64", num_inference_steps=2)
    assert base64.b64decode(again.data[0].b64_json) == first  # same seed, same bytes

    by_url = client.images_generate(
        "a red square", size="64x64", num_inference_steps=2, response_format="url"
    )
    fetched = httpx.get(by_url.data[0].url, timeout=30)
    assert fetched.status_code == 200
    assert fetched.content == first

    events = list(
        client.images_generate_stream("a red square", size="64x64", num_inference_steps=2, n=2)
    )
    assert len(events) == 2
    assert [base64.b64decode(e.data[0].b64_json) for e in events] == [first, second]
