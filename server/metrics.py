"""The server's Prometheus metrics (``GET /metrics``, prometheus-client's text format).

Two kinds (docs/server.md, Metrics):

- counted as requests end: HTTP requests by route, method and status; prompt and generated
  tokens, time to first token and time per output token by model (from each finished request's
  :class:`~imagine_edge.sdk.engine.observe.RequestReport`);
- read from the engine at each scrape: queue depth, running sequences, KV slots, resident
  memory and the embedding/reranker batch runs by model (:class:`_EngineCollector`), so they
  are never stale.

Each app has its own registry (two apps in one process, as in the tests, do not share counts),
and route labels are the routes' path templates, never the raw path a client sent: a scan of
random paths cannot grow the label set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.engine.observe import RequestReport

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
_TTFT_BUCKETS: Final = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_TPOT_BUCKETS: Final = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0)


class _EngineCollector(Collector):
    """Gauges read from the engine's model states when Prometheus scrapes."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def describe(self) -> list[Metric]:
        return []  # the families are known only at scrape time; nothing to check at register

    def collect(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily(
            "imagine_edge_queue_depth",
            "Admitted requests waiting for their model.",
            labels=["model"],
        )
        running = GaugeMetricFamily(
            "imagine_edge_running_sequences",
            "Requests (LLM: sequences) a model is running now.",
            labels=["model"],
        )
        slots = GaugeMetricFamily(
            "imagine_edge_kv_slots",
            "A loaded LLM's KV-cache slots: leased to a running sequence, allocated, the limit.",
            labels=["model", "state"],
        )
        kv_bytes = GaugeMetricFamily(
            "imagine_edge_kv_resident_bytes",
            "Memory a loaded LLM's KV slots hold (positions ever filled).",
            labels=["model"],
        )
        resident = GaugeMetricFamily(
            "imagine_edge_model_resident_bytes",
            "Memory a loaded model's sessions and buffers hold (0 when not loaded).",
            labels=["model"],
        )
        loaded = GaugeMetricFamily(
            "imagine_edge_model_loaded", "1 when the model is loaded, else 0.", labels=["model"]
        )
        runs = CounterMetricFamily(
            "imagine_edge_batch_runs",
            "Graph runs of an embedding or reranker model, by how many requests each held: "
            "'one' or 'several' (requests gathered across callers).",
            labels=["model", "requests"],
        )
        batched = CounterMetricFamily(
            "imagine_edge_batched_requests",
            "Embedding and reranker requests served by those runs.",
            labels=["model"],
        )
        for s in self._engine.model_states():
            b = self._engine.batches.stats(s.name)
            if b.runs:
                runs.add_metric([s.name, "one"], b.runs - b.gathered_runs)
                runs.add_metric([s.name, "several"], b.gathered_runs)
                batched.add_metric([s.name], b.requests)
            queued.add_metric([s.name], max(0, s.queued - s.running))
            running.add_metric([s.name], s.running)
            resident.add_metric([s.name], s.resident_bytes or 0)
            loaded.add_metric([s.name], int(s.state == "loaded"))
            if s.kv_slots is not None:
                slots.add_metric([s.name, "leased"], s.kv_slots.leased)
                slots.add_metric([s.name, "allocated"], s.kv_slots.allocated)
                slots.add_metric([s.name, "limit"], s.kv_slots.total)
                kv_bytes.add_metric([s.name], s.kv_slots.resident_bytes)
        yield from (queued, running, slots, kv_bytes, resident, loaded, runs, batched)


class ServerMetrics:
    """One app's metrics: fed by the request log middleware, rendered by ``GET /metrics``."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "imagine_edge_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self._finished = Counter(
            "imagine_edge_requests",
            "Model requests finished, by model, endpoint and outcome (ok, error, cancelled).",
            ["model", "endpoint", "outcome"],
            registry=r,
        )
        self._prompt = Counter(
            "imagine_edge_prompt_tokens", "Prompt tokens processed.", ["model"], registry=r
        )
        self._generated = Counter(
            "imagine_edge_generated_tokens", "Completion tokens generated.", ["model"], registry=r
        )
        self._ttft = Histogram(
            "imagine_edge_time_to_first_token_seconds",
            "Admission to the first generated token (queue, load, prefill), per request.",
            ["model"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self._tpot = Histogram(
            "imagine_edge_time_per_output_token_seconds",
            "A request's mean time per output token after the first (decode time / (tokens-1)).",
            ["model"],
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        r.register(_EngineCollector(engine))

    def http_request(self, endpoint: str, method: str, status: int) -> None:
        self._requests.labels(endpoint, method, str(status)).inc()

    def request_finished(self, report: RequestReport) -> None:
        model = report.model
        self._finished.labels(model, report.endpoint, report.status).inc()
        self._prompt.labels(model).inc(report.prompt_tokens)
        self._generated.labels(model).inc(report.completion_tokens)
        if (ttft := report.ttft_seconds) is not None:
            self._ttft.labels(model).observe(ttft)
        if (tpot := report.tpot_seconds) is not None:
            self._tpot.labels(model).observe(tpot)

    def render(self) -> bytes:
        return generate_latest(self.registry)
