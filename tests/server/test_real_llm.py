"""The real packaged LLM behind the server, driven by the official and the openai clients."""

from __future__ import annotations

import importlib

import imagine
import openai
import pytest

from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.types import ModelType
from imagine_edge.server.app import create_app

pytestmark = pytest.mark.model
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def _llm_card_or_skip():
    from imagine_edge.models.catalog import lookup
    from imagine_edge.models.registry import LOADERS, model_cards

    card = next((c for c in model_cards() if c.model_type == ModelType.LLM), None)
    if card is None:
        pytest.skip("the model registry has no LLM card yet")
    module, _, function = LOADERS[card.name].partition(":")
    if not hasattr(importlib.import_module(module), function):
        pytest.skip(f"the LLM loader {LOADERS[card.name]} is not implemented yet")
    if lookup(card.name).manifest is None:
        pytest.skip(f"{card.name} is not prepared: run `make prepare`")
    return card


@pytest.fixture(scope="module")
def real(tmp_path_factory, serve):
    card = _llm_card_or_skip()
    engine = Engine([card], data_dir=tmp_path_factory.mktemp("real"))
    try:
        engine.load()
        with serve(create_app(engine)) as root:
            yield root
    finally:
        engine.close()


def test_official_client_chats_with_the_real_model(real):
    client = imagine.ImagineClient(endpoint=real + "/api/v2", api_key="k")
    answer = client.chat(QUESTION, max_tokens=24, temperature=0.0)
    assert answer.first_content.strip()
    assert answer.usage.prompt_tokens > 5
    assert answer.usage.completion_tokens > 0
    chunks = list(client.chat_stream(QUESTION, max_tokens=24, temperature=0.0))
    assert "".join(c.first_content for c in chunks) == answer.first_content
    assert chunks[-1].choices[0].finish_reason == answer.choices[0].finish_reason
    assert client.get_available_models(imagine.ModelType.LLM) == [answer.model]


def test_openai_client_streams_from_the_real_model(real):
    client = openai.OpenAI(base_url=real + "/v1", api_key="k", max_retries=0)
    stream = client.chat.completions.create(
        model="Llama-3.1-8B", messages=QUESTION, max_tokens=24, temperature=0.0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    official = imagine.ImagineClient(endpoint=real + "/api/v2", api_key="k")
    assert text == official.chat(QUESTION, max_tokens=24, temperature=0.0).first_content


def test_the_real_model_knows_the_capital_of_france(real):
    # SmolLM2-135M-Instruct answers this greedily (MODELS.md): a check of the whole pipeline.
    # A plain system message: under SmolLM's default one the first token is a 0.09-logit tie that
    # int8 activations flip (tests/models/test_llm.py).
    client = imagine.ImagineClient(endpoint=real + "/api/v2", api_key="k")
    question = [{"role": "system", "content": "You are a helpful assistant."}, *QUESTION]
    assert "Paris" in client.chat(question, max_tokens=24, temperature=0.0).first_content


def test_metrics_and_timings_after_real_requests(real):
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    body = {"model": "", "messages": QUESTION, "stream": False, "max_tokens": 16}
    body["model"] = httpx.get(real + "/v1/models").json()["data"][0]["id"]
    usage = httpx.post(real + "/api/v2/chat/completions", json=body).json()["usage"]
    timings = usage["timings"]
    assert timings["prefill_ms"] > 0
    assert timings["decode_ms"] > 0
    assert timings["tokens_per_s"] > 0
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(httpx.get(real + "/metrics").text)
        for s in family.samples
    }
    model = body["model"]

    def kv(state):
        return samples[("imagine_edge_kv_slots", (("model", model), ("state", state)))]

    assert kv("limit") >= 1
    assert kv("allocated") >= 1  # the request leased one, and it stays for prefix reuse
    assert kv("leased") == 0  # nothing runs now
    assert samples[("imagine_edge_generated_tokens_total", (("model", model),))] >= 1
    assert samples[("imagine_edge_model_resident_bytes", (("model", model),))] > 0
    assert samples[("imagine_edge_kv_resident_bytes", (("model", model),))] > 0
    health = httpx.get(real + "/api/v2/health").json()["models"]
    assert f"KV slots 0 of {int(kv('limit'))} running a sequence" in health


def _health_models(root: str) -> str:
    import httpx

    return str(httpx.get(root + "/api/v2/health").json()["models"])


def test_four_streams_decode_together_and_a_dropped_one_frees_its_slot(real):
    """Continuous batching over HTTP: four streams run at once (health shows four sequences in
    the KV slots), and a stream whose client goes away leaves the batch at its next step."""
    import re
    import threading
    import time

    import httpx

    body = {
        "model": "smollm2-135m-instruct",
        "prompt": "Once upon a time",
        "max_tokens": 400,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream": True,
    }
    url = real + "/api/v2/completions"
    stop = threading.Event()

    def stream_to_end() -> None:
        with httpx.stream("POST", url, json=body, timeout=300) as response:
            for _line in response.iter_lines():
                if stop.is_set():
                    break

    keepers = [threading.Thread(target=stream_to_end) for _ in range(3)]
    with httpx.stream("POST", url, json=body, timeout=300) as dropped:
        lines = dropped.iter_lines()
        assert next(lines).startswith("data: ")
        for t in keepers:
            t.start()
        deadline = time.monotonic() + 120
        while "KV slots 4 of" not in (text := _health_models(real)):
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
        assert re.search(r"4 running", text), text
    # The dropped stream's slot frees while the other three still decode.
    deadline = time.monotonic() + 60
    while "KV slots 3 of" not in (text := _health_models(real)):
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
    stop.set()
    for t in keepers:
        t.join(timeout=300)
    deadline = time.monotonic() + 60
    while "KV slots 0 of" not in (text := _health_models(real)):
        assert time.monotonic() < deadline, text
        time.sleep(0.05)
