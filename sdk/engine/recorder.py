"""Usage and request history: one SQLite row per request, aggregated for ``GET usage``.

Owns the database ``<data dir>/usage.sqlite3`` (stdlib ``sqlite3`` in WAL mode, so history and
usage reads never wait for a worker's write). The data directory is
``platformdirs.user_data_dir("imagine-edge")`` unless ``IMAGINE_EDGE_DATA_DIR`` says otherwise.

Invariants:
- A row is written for every request that reached a model's queue, whatever its status; usage
  sums the tokens and generation time of all of them (a cancelled stream did spend its tokens).
- Histories hold only successful requests with their response, most recent first, as the
  ``[response, request]`` pairs the official client returns unchanged (docs/contract.md, Endpoints).
- Bodies are stored for successful requests only, and only as bounded excerpts
  (:func:`excerpt`): strings beyond :data:`MAX_STRING_CHARS` characters and lists beyond
  :data:`MAX_LIST_ITEMS` items are cut (with a marker saying how much was left out), and a body
  is at most :data:`MAX_BODY_BYTES` of JSON. Failed and cancelled requests keep their counts,
  timings and a bounded error message, never their bodies.
- Bodies are kept for the last ``history_keep`` requests of each endpoint only (default
  :data:`DEFAULT_HISTORY_KEEP`, or ``IMAGINE_EDGE_HISTORY_KEEP``); older rows keep their counts
  and timings, so the file does not grow with every vector. ``history_keep`` 0 turns the
  history off: no body is stored and those already stored are cleared when the store opens.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self, cast

from pydantic import BaseModel

from imagine_edge.models.base import ModelCard
from imagine_edge.runtime.cache_dir import DATA_DIR_ENV, user_data
from imagine_edge.runtime.results import GenerationStats
from imagine_edge.sdk.engine.worker import Outcome, Status
from imagine_edge.sdk.errors import InvalidRequestError, NoHistoryError
from imagine_edge.sdk.paths import Endpoint
from imagine_edge.sdk.types import (
    Image,
    ImageResponse,
    ModelType,
    UsageRecord,
    UsageRecordAggregated,
    UsageResponse,
)

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_HISTORY_KEEP",
    "HISTORY_KEEP_ENV",
    "MAX_BODY_BYTES",
    "MAX_ERROR_CHARS",
    "MAX_LIST_ITEMS",
    "MAX_STRING_CHARS",
    "Recorder",
    "RequestRecord",
    "default_data_dir",
    "excerpt",
    "history_keep_from_env",
    "parse_client_datetime",
    "parse_duration",
    "stored_response",
]

HISTORY_KEEP_ENV: Final = "IMAGINE_EDGE_HISTORY_KEEP"
# The history GET returns at most 100 items (sdk/limits.py), so more bodies would never be read.
DEFAULT_HISTORY_KEEP: Final = 100
MAX_STRING_CHARS: Final = 2_000
MAX_LIST_ITEMS: Final = 64
MAX_BODY_BYTES: Final = 64 * 1024
MAX_ERROR_CHARS: Final = 2_000
_SCHEMA_VERSION: Final = 1
# date_bin origin: a Monday at midnight UTC, so weekly bins start on Mondays and daily bins at
# midnight UTC (PostgreSQL's documented example origin, the server this contract came from).
_ORIGIN: Final = dt.datetime(2001, 1, 1, tzinfo=dt.UTC).timestamp()
_UNITS: Final = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 604800),
}
_DURATION = re.compile(r"^\s*(\d+)?\s*([a-z]+)\s*$")


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as stored: counts, timings (seconds) and the JSON bodies."""

    id: str
    endpoint: Endpoint
    model: str
    model_type: ModelType
    status: Status
    created: float  # epoch seconds when the request was admitted
    # The run's token counts and model-side timings, as the model reported them.
    stats: GenerationStats = field(default_factory=GenerationStats)
    queue_seconds: float = 0.0
    load_seconds: float = 0.0
    generation_seconds: float = 0.0
    request: Mapping[str, Any] | None = None
    response: Mapping[str, Any] | None = None
    error: str | None = None

    @classmethod
    def of(
        cls,
        out: Outcome,
        call_id: str,
        endpoint: Endpoint,
        card: ModelCard,
        created: float,
        request: Mapping[str, Any],
    ) -> Self:
        """The record of a job that ended with ``out``."""
        return cls(
            id=call_id,
            endpoint=endpoint,
            model=card.name,
            model_type=card.model_type,
            status=out.status,
            created=created,
            stats=out.context.stats,
            queue_seconds=out.queue_seconds,
            load_seconds=out.load_seconds,
            generation_seconds=out.generation_seconds,
            request=request,
            response=stored_response(out.result),
            error=None if out.error is None else str(out.error),
        )


def stored_response(result: Any) -> dict[str, Any] | None:
    """The response as kept in the history; image data is left out (it can be megabytes)."""
    if not isinstance(result, BaseModel):
        return None
    if isinstance(result, ImageResponse):
        result = result.model_copy(
            update={
                "data": [
                    Image(url=i.url, b64_json=None if i.b64_json is None else "<omitted>")
                    for i in result.data
                ]
            }
        )
    return cast(dict[str, Any], result.model_dump(mode="json"))


def default_data_dir() -> Path:
    """Where imagine-edge keeps its database and generated files."""
    return user_data()


def history_keep_from_env() -> int:
    """``IMAGINE_EDGE_HISTORY_KEEP`` (bodies kept per endpoint; 0: none), else the default."""
    raw = os.environ.get(HISTORY_KEEP_ENV, "").strip()
    if not raw:
        return DEFAULT_HISTORY_KEEP
    try:
        keep = int(raw)
    except ValueError:
        keep = -1
    if keep < 0:
        raise ValueError(f"{HISTORY_KEEP_ENV} must be a whole number >= 0, got {raw!r}")
    return keep


def _cut(value: Any, chars: int, items: int) -> Any:
    if isinstance(value, str):
        if len(value) <= chars:
            return value
        return f"{value[:chars]}… [{len(value) - chars} more characters not stored]"
    if isinstance(value, Mapping):
        return {str(k): _cut(v, chars, items) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        head = [_cut(v, chars, items) for v in value[:items]]
        if len(value) > items:
            head.append(f"… [{len(value) - items} more items not stored]")
        return head
    return value


def excerpt(body: Mapping[str, Any]) -> str:
    """The JSON stored for ``body``: long strings and lists cut with a marker, and at most
    :data:`MAX_BODY_BYTES`; the limits are halved until it fits (deeply nested bodies), and a
    body that still does not fit is stored as the start of its JSON text."""
    chars, items = MAX_STRING_CHARS, MAX_LIST_ITEMS
    while True:
        text = json.dumps(_cut(body, chars, items))
        if len(text.encode()) <= MAX_BODY_BYTES:
            return text
        if chars <= 16 and items <= 1:
            return json.dumps({"excerpt": text[: MAX_BODY_BYTES // 8]})
        chars, items = max(16, chars // 2), max(1, items // 2)


def parse_duration(text: str) -> int:
    """Seconds in an aggregation duration such as '1 day', '1 hour' or '15 minutes'."""
    match = _DURATION.match(text.lower())
    unit = _UNITS.get(match.group(2)) if match else None
    count = int(match.group(1) or 1) if match else 0
    if match is None or unit is None or count < 1:
        raise InvalidRequestError(
            "aggregation_duration must be a positive count and a unit, like '1 day', '1 hour' "
            f"or '15 minutes' (units: seconds, minutes, hours, days, weeks), got {text!r}"
        )
    return count * unit


def parse_client_datetime(text: str, name: str) -> dt.datetime:
    """Parse ``str(datetime)`` as the official client sends it (space or 'T', optional offset)."""
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    # An unencoded '+' in a query string arrives as a space: '...05 00:00' means '...05+00:00'.
    repaired = re.sub(r" (\d{2}:?\d{2})$", r"+\1", text.strip())
    try:
        return dt.datetime.fromisoformat(repaired)
    except ValueError:
        raise InvalidRequestError(
            f"{name} must be a date and time like '2024-01-02 03:04:05+00:00', got {text!r}"
        ) from None


def _epoch(value: dt.datetime) -> float:
    # Naive datetimes are local time, as datetime.timestamp() reads them.
    return value.timestamp()


class Recorder:
    """Writes request records and answers usage and history queries; thread-safe."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        userid: str = "local",
        history_keep: int | None = None,
    ) -> None:
        self.path = path if path is not None else default_data_dir() / "usage.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.userid = userid
        keep = history_keep_from_env() if history_keep is None else history_keep
        if keep < 0:
            raise ValueError(f"history_keep must be >= 0, got {keep}")
        self.history_keep = keep
        self._lock = threading.Lock()
        # One connection shared under a lock: writes come from model workers, reads from the
        # server's threads; WAL keeps them from blocking each other at the file level.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._create_schema()

    def _create_schema(self) -> None:
        with self._lock:
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS requests (
                    id TEXT PRIMARY KEY, created REAL NOT NULL, userid TEXT NOT NULL,
                    endpoint TEXT NOT NULL, model TEXT NOT NULL, model_type TEXT NOT NULL,
                    status TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
                    completion_tokens INTEGER NOT NULL, queue_seconds REAL NOT NULL,
                    load_seconds REAL NOT NULL, prefill_seconds REAL NOT NULL,
                    decode_seconds REAL NOT NULL, generation_seconds REAL NOT NULL,
                    request_json TEXT, response_json TEXT, error TEXT);
                CREATE INDEX IF NOT EXISTS requests_by_endpoint ON requests(endpoint, created);
                CREATE INDEX IF NOT EXISTS requests_by_time ON requests(created);
                -- The rows that still hold bodies: pruning after each request reads only these
                -- (without it, every row of the endpoint: 38 ms a request at 9,000 embeddings).
                CREATE INDEX IF NOT EXISTS requests_with_bodies ON requests(endpoint, created)
                    WHERE request_json IS NOT NULL;
                """
            )
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            endpoints = self._db.execute("SELECT DISTINCT endpoint FROM requests").fetchall()
            for (endpoint,) in endpoints:
                self._prune(endpoint)

    def _prune(self, endpoint: str) -> None:
        """Drop the bodies of ``endpoint`` beyond the newest ``history_keep`` (all when 0)."""
        if self.history_keep == 0:
            self._db.execute(
                "UPDATE requests SET request_json = NULL, response_json = NULL "
                "WHERE endpoint = ? AND request_json IS NOT NULL",
                (endpoint,),
            )
            return
        self._db.execute(
            "UPDATE requests SET request_json = NULL, response_json = NULL "
            "WHERE endpoint = ? AND request_json IS NOT NULL AND created < ("
            "  SELECT created FROM requests WHERE endpoint = ? "
            "  ORDER BY created DESC LIMIT 1 OFFSET ?)",
            (endpoint, endpoint, self.history_keep - 1),
        )

    def record(self, rec: RequestRecord) -> None:
        """Store one request (bodies as excerpts, and only when it succeeded and the history is
        on), then drop bodies beyond the newest ``history_keep`` of its kind."""
        keep = rec.status is Status.OK and self.history_keep > 0
        request = excerpt(rec.request) if keep and rec.request is not None else None
        response = excerpt(rec.response) if keep and rec.response is not None else None
        error = None if rec.error is None else _cut(rec.error, MAX_ERROR_CHARS, 0)
        stats = rec.stats
        row = (
            rec.id, rec.created, self.userid, rec.endpoint.value, rec.model, rec.model_type.value,
            rec.status.value, stats.prompt_tokens, stats.completion_tokens, rec.queue_seconds,
            rec.load_seconds, stats.prefill_seconds, stats.decode_seconds, rec.generation_seconds,
            request, response, error,
        )  # fmt: skip
        with self._lock:
            self._db.execute(f"INSERT INTO requests VALUES ({','.join('?' * len(row))})", row)
            if keep:
                self._prune(rec.endpoint.value)

    def history(self, endpoint: Endpoint, max_items: int) -> list[list[Any]]:
        """The last ``max_items`` successful ``[response, request]`` pairs, most recent first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT response_json, request_json FROM requests WHERE endpoint = ? "
                "AND status = 'ok' AND response_json IS NOT NULL AND request_json IS NOT NULL "
                "ORDER BY created DESC, rowid DESC LIMIT ?",
                (endpoint.value, max_items),
            ).fetchall()
        if not rows and self.history_keep == 0:
            raise NoHistoryError(
                f"the request history is off ({HISTORY_KEEP_ENV}=0 or serve --history-keep 0): "
                "no request bodies are stored"
            )
        if not rows:
            raise NoHistoryError(
                f"no {endpoint.value} request has been recorded yet: the history fills as "
                f"requests to POST {endpoint.value} succeed"
            )
        return [[json.loads(response), json.loads(request)] for response, request in rows]

    def usage(
        self,
        aggregation_duration: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        model: str | None = None,
    ) -> UsageResponse:
        """Token and time totals per model and time bin ('1 day' bins by default)."""
        width = parse_duration(aggregation_duration or "1 day")
        low = _epoch(since) if since is not None else float("-inf")
        high = _epoch(until) if until is not None else float("inf")
        if low > high:
            raise InvalidRequestError(f"from ({since}) must not be after to ({until})")
        where = "userid = ? AND created >= ? AND created <= ?"
        params: list[Any] = [self.userid, low, high]
        if model is not None:
            where += " AND model = ?"
            params.append(model)
        sums = (
            "SUM(prompt_tokens), SUM(completion_tokens), SUM(generation_seconds) FROM requests "
            f"WHERE {where} GROUP BY model"
        )
        with self._lock:
            binned = self._db.execute(
                f"SELECT model, CAST((created - ?) / ? AS INTEGER) AS bin, {sums}, bin "
                "ORDER BY bin, model",
                [_ORIGIN, width, *params],
            ).fetchall()
            overall = self._db.execute(f"SELECT model, {sums} ORDER BY model", params).fetchall()
        return UsageResponse(
            usage=[
                UsageRecord(
                    date_bin=dt.datetime.fromtimestamp(_ORIGIN + b * width, dt.UTC),
                    **self._totals(m, p, c, t),
                )
                for m, b, p, c, t in binned
            ],
            overall=[UsageRecordAggregated(**self._totals(*row)) for row in overall],
        )

    def _totals(self, model: str, prompt: int, completion: int, seconds: float) -> dict[str, Any]:
        return {
            "userid": self.userid,
            "model": model,
            "total_input_tokens": prompt,
            "total_output_tokens": completion,
            "total_tokens": prompt + completion,
            "total_generation_time": seconds,
        }

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()
