"""Usage and request history: one SQLite row per request, aggregated for ``GET usage``.

Owns the database ``<data dir>/usage.sqlite3`` (stdlib ``sqlite3`` in WAL mode, so history and
usage reads never wait for a worker's write). The data directory is
``platformdirs.user_data_dir("imagine-edge")`` unless ``IMAGINE_EDGE_DATA_DIR`` says otherwise.

Invariants:
- A row is written for every request that reached a model's queue, whatever its status; usage
  sums the tokens and generation time of all of them (a cancelled stream did spend its tokens).
- Histories hold only successful requests with their response, most recent first, as the
  ``[response, request]`` pairs the official client returns unchanged (CONTRACT.md §2.12).
- Request and response bodies are kept for the last ``history_keep`` requests of each endpoint
  only; older rows keep their counts and timings, so the file does not grow with every vector.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from imagine_edge.sdk.errors import InvalidRequestError, NoHistoryError
from imagine_edge.sdk.types import (
    ModelType,
    UsageRecord,
    UsageRecordAggregated,
    UsageResponse,
)

__all__ = [
    "DATA_DIR_ENV",
    "Endpoint",
    "Recorder",
    "RequestRecord",
    "Status",
    "default_data_dir",
    "parse_client_datetime",
    "parse_duration",
]

DATA_DIR_ENV: Final = "IMAGINE_EDGE_DATA_DIR"
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


class Endpoint(StrEnum):
    """The request kinds, named by their path under the API root (the history key)."""

    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    TRANSLATE = "translate"
    EMBEDDINGS = "embeddings"
    RERANKER = "reranker"
    IMAGES = "images/generations"
    TRANSCRIBE = "transcribe"


class Status(StrEnum):
    """How a request ended."""

    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as stored: counts, timings (seconds) and the JSON bodies."""

    id: str
    endpoint: Endpoint
    model: str
    model_type: ModelType
    status: Status
    created: float  # epoch seconds when the request was admitted
    prompt_tokens: int = 0
    completion_tokens: int = 0
    queue_seconds: float = 0.0
    load_seconds: float = 0.0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    generation_seconds: float = 0.0
    request: Mapping[str, Any] | None = None
    response: Mapping[str, Any] | None = None
    error: str | None = None


def default_data_dir() -> Path:
    """Where imagine-edge keeps its database and generated files."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    import platformdirs  # deferred: only needed when no directory is given

    return Path(platformdirs.user_data_dir("imagine-edge"))


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
        self, path: Path | None = None, *, userid: str = "local", history_keep: int = 256
    ) -> None:
        self.path = path if path is not None else default_data_dir() / "usage.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.userid = userid
        self._history_keep = history_keep
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
                """
            )
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def record(self, rec: RequestRecord) -> None:
        """Store one request, then drop bodies beyond the newest ``history_keep`` of its kind."""
        row = (
            rec.id, rec.created, self.userid, rec.endpoint.value, rec.model, rec.model_type.value,
            rec.status.value, rec.prompt_tokens, rec.completion_tokens, rec.queue_seconds,
            rec.load_seconds, rec.prefill_seconds, rec.decode_seconds, rec.generation_seconds,
            None if rec.request is None else json.dumps(rec.request),
            None if rec.response is None else json.dumps(rec.response),
            rec.error,
        )  # fmt: skip
        with self._lock:
            self._db.execute(f"INSERT INTO requests VALUES ({','.join('?' * len(row))})", row)
            self._db.execute(
                "UPDATE requests SET request_json = NULL, response_json = NULL "
                "WHERE endpoint = ? AND request_json IS NOT NULL AND created < ("
                "  SELECT created FROM requests WHERE endpoint = ? "
                "  ORDER BY created DESC LIMIT 1 OFFSET ?)",
                (rec.endpoint.value, rec.endpoint.value, self._history_keep - 1),
            )

    def history(self, endpoint: Endpoint, max_items: int) -> list[list[Any]]:
        """The last ``max_items`` successful ``[response, request]`` pairs, most recent first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT response_json, request_json FROM requests WHERE endpoint = ? "
                "AND status = 'ok' AND response_json IS NOT NULL AND request_json IS NOT NULL "
                "ORDER BY created DESC, rowid DESC LIMIT ?",
                (endpoint.value, max_items),
            ).fetchall()
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
