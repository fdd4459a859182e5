"""One structured log line per HTTP request, and the request metrics, from one ASGI middleware.

:class:`RequestLogMiddleware` (plain ASGI: streams pass through untouched) makes a
:class:`_Entry` per HTTP request and sets it as the engine's request observer
(sdk/engine/observe.py) for the request's context, which the thread pool's admission inherits.
The entry joins two halves that end in either order: the HTTP answer (status, duration) and the
model's report (tokens, queue/prefill/decode times), which for a stream its client dropped
arrives only when the worker notices, a step later. The line is written once both are in; a
request the engine never admitted (a 4xx, ping, health) logs at once.

The line is JSON on the ``imagine_edge.requests`` logger (docs/server.md, Request log): never a
body, a header or the key.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagine_edge.sdk.engine.observe import RequestReport, observing
from imagine_edge.server.metrics import ServerMetrics

__all__ = ["REQUEST_LOGGER", "RequestLogMiddleware"]

REQUEST_LOGGER: Final = "imagine_edge.requests"
_UNMATCHED: Final = "unmatched"  # the label of a path no route serves
_PARAM: Final = re.compile(r"\{(\w+)(?::\w+)?\}")


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


class _Entry:
    """One HTTP request's record, completed from the event loop and the worker thread."""

    def __init__(self, method: str, metrics: ServerMetrics, logger: logging.Logger) -> None:
        self.method = method
        self.started = time.monotonic()
        self._metrics, self._logger = metrics, logger
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._reports: list[RequestReport] = []
        self._http: dict[str, Any] | None = None
        self._written = False

    # The engine's observer protocol (sdk/engine/observe.py).
    def admitted(self, request_id: str, endpoint: str, model: str) -> None:
        with self._lock:
            self._pending.add(request_id)

    def finished(self, report: RequestReport) -> None:
        self._metrics.request_finished(report)
        with self._lock:
            self._pending.discard(report.id)
            self._reports.append(report)
        self._write_if_complete()

    def http_done(self, endpoint: str, status: int) -> None:
        self._metrics.http_request(endpoint, self.method, status)
        with self._lock:
            self._http = {
                "endpoint": endpoint,
                "status": status,
                "duration_ms": _ms(time.monotonic() - self.started),
            }
        self._write_if_complete()

    def _write_if_complete(self) -> None:
        with self._lock:
            if self._written or self._http is None or self._pending:
                return
            self._written = True
            line: dict[str, Any] = {"method": self.method, **self._http}
            reports = list(self._reports)
        for report in reports[:1]:  # one request, one model job (the only shape routes make)
            line.update(
                request_id=report.id,
                model=report.model,
                outcome=report.status,
                prompt_tokens=report.prompt_tokens,
                completion_tokens=report.completion_tokens,
                queue_ms=_ms(report.queue_seconds),
                load_ms=_ms(report.load_seconds),
                prefill_ms=_ms(report.prefill_seconds),
                decode_ms=_ms(report.decode_seconds),
                tokens_per_s=(
                    None if report.tokens_per_second is None else round(report.tokens_per_second, 3)
                ),
            )
            if report.error is not None:
                line["error"] = report.error
        self._logger.info(json.dumps(line, sort_keys=True))


def route_template(scope: Scope) -> str:
    """The path template of the route that served ``scope`` (set by the router), if any.

    An included router's route knows only its own part ('/chat/completions'); the prefix it was
    included under is what the request path has before that part, with the parameters filled.
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return _UNMATCHED
    params = scope.get("path_params") or {}
    filled = _PARAM.sub(lambda m: str(params.get(m.group(1), m.group(0))), template)
    path = str(scope.get("path", ""))
    return path[: len(path) - len(filled)] + template if path.endswith(filled) else template


class RequestLogMiddleware:
    """Counts every HTTP request and logs it as one JSON line, joined with its model report."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self._metrics = metrics
        self._logger = logging.getLogger(REQUEST_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = _Entry(scope["method"], self._metrics, self._logger)
        status = 500  # an exception before any response start is answered 500 by the server

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            with observing(entry):
                await self.app(scope, receive, sending)
        finally:
            entry.http_done(route_template(scope), status)
