"""GET /metrics after real HTTP requests, parsed with prometheus_client's own parser."""

from __future__ import annotations

import httpx
import imagine
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imagine_edge.sdk.types import ChatCompletionRequest

MESSAGES = [{"role": "user", "content": "one two three four"}]


def scrape(root: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = httpx.get(root + "/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_as_requests_are_served(make_live):
    with make_live() as live:
        before = scrape(live.root)
        client = imagine.ImagineClient(endpoint=live.endpoint, api_key="k")
        client.chat(MESSAGES, model="echo-llm")
        list(client.chat_stream(MESSAGES, model="echo-llm"))
        client.embeddings(["a text"], model="hash-embedder")
        bad = httpx.post(live.endpoint + "/chat/completions", json={"model": "echo-llm"})
        assert bad.status_code == 422
        after = scrape(live.root)

    route = "/api/v2/chat/completions"
    requests = "imagine_edge_http_requests_total"
    assert value(after, requests, endpoint=route, method="POST", status="200") == 2
    assert value(after, requests, endpoint=route, method="POST", status="422") == 1
    assert value(before, requests, endpoint=route, method="POST", status="200") == 0
    assert value(after, requests, endpoint="/api/v2/embeddings", method="POST", status="200") == 1
    finished = "imagine_edge_requests_total"
    assert value(after, finished, model="echo-llm", endpoint="chat/completions", outcome="ok") == 2
    # Four words echoed, twice; the embedding counts prompt tokens only.
    assert value(after, "imagine_edge_generated_tokens_total", model="echo-llm") == 8
    assert value(after, "imagine_edge_prompt_tokens_total", model="hash-embedder") > 0
    ttft = "imagine_edge_time_to_first_token_seconds_count"
    assert value(after, ttft, model="echo-llm") == 2
    assert value(after, "imagine_edge_time_per_output_token_seconds_count", model="echo-llm") == 2
    assert value(after, ttft, model="hash-embedder") == 0  # no generated token, no TTFT
    assert value(after, "imagine_edge_model_loaded", model="echo-llm") == 1
    assert value(before, "imagine_edge_model_loaded", model="echo-llm") == 0
    assert ("imagine_edge_model_resident_bytes", (("model", "echo-llm"),)) in after


def test_queue_depth_and_running_sequences_while_requests_wait(make_live, wait):
    # A slow fake model: one request runs, the others wait in its queue (admitted in process,
    # scraped over HTTP: the gauges read the engine).
    with make_live(delay=0.05) as live:
        request = ChatCompletionRequest(
            model="echo-llm",
            stream=False,
            messages=[{"role": "user", "content": " ".join(["w"] * 200)}],
        )
        calls = [live.engine.chat(request) for _ in range(3)]
        try:
            wait(
                lambda: value(scrape(live.root), "imagine_edge_queue_depth", model="echo-llm") == 2,
                "two requests queued behind the running one",
            )
            samples = scrape(live.root)
            assert value(samples, "imagine_edge_running_sequences", model="echo-llm") == 1
        finally:
            for call in calls:
                call.cancel()
        wait(
            lambda: (
                value(scrape(live.root), "imagine_edge_running_sequences", model="echo-llm") == 0
            ),
            "the cancelled requests to leave",
        )
        samples = scrape(live.root)
        assert value(samples, "imagine_edge_queue_depth", model="echo-llm") == 0


def test_unmatched_paths_share_one_label(make_live):
    with make_live() as live:
        for i in range(3):
            assert httpx.get(f"{live.root}/no/such/path/{i}").status_code == 404
        samples = scrape(live.root)
    names = {labels for (name, labels) in samples if name == "imagine_edge_http_requests_total"}
    endpoints = {dict(labels)["endpoint"] for labels in names}
    assert "unmatched" in endpoints
    assert not any(e.startswith("/no/such") for e in endpoints)


def test_metrics_need_the_api_key_when_one_is_set(make_live):
    with make_live(api_key="secret") as live:
        assert httpx.get(live.root + "/metrics").status_code == 401
        samples = scrape(live.root, Authorization="Bearer secret")
    refused = value(
        samples,
        "imagine_edge_http_requests_total",
        endpoint="unmatched",
        method="GET",
        status="401",
    )
    assert refused == 1


def test_metrics_refuse_a_foreign_host_on_a_loopback_bind(make_live):
    with make_live(loopback_guard=True) as live:
        response = httpx.get(live.root + "/metrics", headers={"Host": "evil.example"})
        assert response.status_code == 403
        assert httpx.get(live.root + "/metrics").status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_openai_usage_carries_timings(make_live, stream):
    import openai

    with make_live() as live:
        client = openai.OpenAI(base_url=live.root + "/v1", api_key="k", max_retries=0)
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model="echo-llm",
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            usage = chunks[-1].usage
        else:
            usage = client.chat.completions.create(model="echo-llm", messages=MESSAGES).usage
    assert usage is not None
    assert usage.completion_tokens == 4
    timings = usage.model_extra["timings"]  # an extra field the openai client keeps
    assert set(timings) == {"queue_ms", "load_ms", "prefill_ms", "decode_ms", "tokens_per_s"}
    assert timings["queue_ms"] >= 0
    assert timings["decode_ms"] > 0
    assert timings["tokens_per_s"] == pytest.approx(4 / (timings["decode_ms"] / 1e3), rel=0.01)


def test_health_shows_what_runs_and_waits(make_live, wait):
    with make_live(delay=0.05) as live:
        request = ChatCompletionRequest(
            model="echo-llm", stream=False, messages=[{"role": "user", "content": "w " * 200}]
        )
        calls = [live.engine.chat(request) for _ in range(2)]
        try:
            wait(
                lambda: "1 running, 1 waiting" in httpx.get(live.endpoint + "/health").text,
                "health to show one running request and one waiting",
            )
        finally:
            for call in calls:
                call.cancel()


@pytest.mark.model
def test_embedding_batch_runs_are_counted(tmp_path):
    """Requests gathered into one run of the real embedding model show in the batch counters."""
    import threading

    from prometheus_client.parser import text_string_to_metric_families

    from imagine_edge.models.embedding import EMBEDDING_MODEL
    from imagine_edge.sdk.engine import Engine
    from imagine_edge.sdk.types import EmbeddingRequest
    from imagine_edge.server.metrics import ServerMetrics

    with Engine.from_catalog([EMBEDDING_MODEL], data_dir=tmp_path) as engine:
        worker = engine.workers.worker(engine.index.lookup_strict(EMBEDDING_MODEL))
        worker.load()
        gate, held = threading.Event(), threading.Event()
        holder = threading.Thread(
            target=worker.control, args=(lambda: held.set() or gate.wait(30),)
        )
        holder.start()
        held.wait(30)
        texts = ["one sentence.", "another, longer sentence.", "a third."]
        calls = [engine.embeddings(EmbeddingRequest(input=t, model=EMBEDDING_MODEL)) for t in texts]
        gate.set()
        holder.join()
        for c in calls:
            c.result()
        engine.embeddings(EmbeddingRequest(input="alone", model=EMBEDDING_MODEL)).result()
        text = ServerMetrics(engine).render().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    runs = "imagine_edge_batch_runs_total"
    assert value(samples, runs, model=EMBEDDING_MODEL, requests="several") == 1
    assert value(samples, runs, model=EMBEDDING_MODEL, requests="one") == 1
    assert value(samples, "imagine_edge_batched_requests_total", model=EMBEDDING_MODEL) == 4
