"""One call of a model's type by name, on a client: what the end-to-end tests of added models
ask (tests/models/test_user_models_e2e.py), in the test's process and, run as a script
(``python user_model_calls.py TYPE NAME``), in a new process: a restart, whose answer must be
the same. The script prints one JSON line: whether the name is listed, and the answer."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["DOCUMENTS", "QUERY", "SENTENCES", "call"]

SENTENCES = [
    "The ferry to the island leaves twice a day in winter.",
    "How do I reset the router without losing my settings?",
    "Tigers are solitary hunters that patrol large territories.",
]
QUERY = "how long do tigers live in the wild"
DOCUMENTS = [
    "Tigers in the wild usually live 10 to 15 years.",
    "The ferry to the island leaves twice a day.",
    "A tiger's stripes are unique, like fingerprints.",
]


def _audio() -> str:
    spec = importlib.util.find_spec("moonshine_voice")
    assert spec is not None, "make setup installs moonshine-voice"
    assert spec.origin is not None
    return str(Path(spec.origin).parent / "assets" / "beckett.wav")


def call(client: Any, model_type: str, name: str) -> Any:
    """The answer of model ``name`` to this type's request, as JSON-ready data."""
    if model_type == "embedding":
        return [d.embedding for d in client.embeddings(SENTENCES, model=name).data]
    if model_type == "reranker":
        ranked = client.reranker(QUERY, DOCUMENTS, model=name).data
        return {str(d.index): d.relevance_score for d in ranked}
    if model_type == "transcribe":
        return client.transcribe(_audio(), model=name).text
    if model_type == "text_to_image":
        image = client.images_generate(
            "a red square", model=name, size="64x64", num_inference_steps=2
        ).data[0]
        return hashlib.sha256(base64.b64decode(image.b64_json)).hexdigest()
    if model_type == "translate":
        return client.translate(SENTENCES[0], model=name).first_text
    raise ValueError(f"no call for model type {model_type!r}")


def main(model_type: str, name: str) -> None:
    from imagine_edge.sdk.client import ImagineEdge

    with ImagineEdge() as client:
        names = client.get_available_models_by_type(model_type)[model_type]
        listed = name in names
        answer = call(client, model_type, name) if listed else None
    sys.stdout.write(json.dumps({"listed": listed, "answer": answer}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
