"""What the usage store keeps: bounded excerpts of successful requests only, a configurable
history with an opt-out, and a bounded history answer."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from imagine_edge.runtime.results import GenerationStats
from imagine_edge.sdk.engine.recorder import (
    DEFAULT_HISTORY_KEEP,
    HISTORY_KEEP_ENV,
    MAX_BODY_BYTES,
    MAX_LIST_ITEMS,
    MAX_STRING_CHARS,
    Recorder,
    RequestRecord,
    excerpt,
)
from imagine_edge.sdk.engine.worker import Status
from imagine_edge.sdk.errors import NoHistoryError
from imagine_edge.sdk.paths import Endpoint
from imagine_edge.sdk.types import ModelType

T0 = dt.datetime(2024, 3, 4, 10, 0, tzinfo=dt.UTC).timestamp()
TEN_MB = "x" * (10 * 2**20)


def _record(
    recorder: Recorder,
    i: int,
    request: dict[str, Any],
    *,
    status: Status = Status.OK,
    error: str | None = None,
) -> None:
    recorder.record(
        RequestRecord(
            id=f"r{i}",
            endpoint=Endpoint.CHAT,
            model="m",
            model_type=ModelType.LLM,
            status=status,
            created=T0 + i,
            stats=GenerationStats(prompt_tokens=2, completion_tokens=3),
            request=request,
            response={"answer": i},
            error=error,
        )
    )


def _stored_bytes(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        row = db.execute(
            "SELECT SUM(LENGTH(COALESCE(request_json, '')) + LENGTH(COALESCE(response_json, ''))"
            " + LENGTH(COALESCE(error, ''))) FROM requests"
        ).fetchone()
    finally:
        db.close()
    return int(row[0] or 0)


def test_ten_chats_with_a_10_mb_stop_string_store_kilobytes_not_100_mb(tmp_path: Path) -> None:
    """Today's failure: each chat body was stored whole (ten of them grew the store by 110 MB),
    failed ones too."""
    recorder = Recorder(tmp_path / "u.sqlite3")
    for i in range(10):
        body = {"messages": [{"role": "user", "content": "hi"}], "stop": [TEN_MB]}
        failed = i % 2 == 1
        _record(
            recorder,
            i,
            body,
            status=Status.ERROR if failed else Status.OK,
            error=("bad stop " + TEN_MB) if failed else None,
        )
    assert _stored_bytes(recorder.path) < 10 * (MAX_BODY_BYTES + 4_096)
    history = recorder.history(Endpoint.CHAT, 10)
    assert len(history) == 5  # successes only
    stop = history[0][1]["stop"][0]
    assert stop.startswith("x" * MAX_STRING_CHARS)
    assert stop.endswith(f"[{len(TEN_MB) - MAX_STRING_CHARS} more characters not stored]")
    assert history[0][1]["messages"] == [{"role": "user", "content": "hi"}]  # small: kept whole
    db = sqlite3.connect(recorder.path)
    failed_rows = db.execute(
        "SELECT request_json, response_json, LENGTH(error) FROM requests WHERE status = 'error'"
    ).fetchall()
    db.close()
    assert failed_rows
    assert all(r[0] is None and r[1] is None and r[2] < 2 * MAX_STRING_CHARS for r in failed_rows)
    assert recorder.usage().overall[0].total_tokens == 50  # every request still counts
    recorder.close()


def test_excerpts_cut_long_lists_and_deep_bodies_to_the_byte_bound() -> None:
    vectors = {"data": [{"embedding": [0.125] * 384, "index": i} for i in range(512)]}
    text = excerpt(vectors)
    assert len(text.encode()) <= MAX_BODY_BYTES
    kept = json.loads(text)
    assert kept["data"][-1] == f"… [{512 - MAX_LIST_ITEMS} more items not stored]"
    deep: dict[str, Any] = {"v": "y" * 1_000}
    for _ in range(200):  # nested lists that each stay under the item and string bounds
        deep = {"a": [deep] + ["z" * 1_000] * 30}
    assert len(excerpt(deep).encode()) <= MAX_BODY_BYTES
    small = {"prompt": "hello", "n": [1, 2, 3], "nested": {"k": None, "f": 0.5}}
    assert json.loads(excerpt(small)) == small


def test_history_retention_is_configurable_and_can_be_turned_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "u.sqlite3"
    recorder = Recorder(path)
    assert recorder.history_keep == DEFAULT_HISTORY_KEEP
    for i in range(5):
        _record(recorder, i, {"n": i})
    recorder.close()

    monkeypatch.setenv(HISTORY_KEEP_ENV, "2")
    recorder = Recorder(path)  # opening prunes to the new retention at once
    assert [p[1]["n"] for p in recorder.history(Endpoint.CHAT, 10)] == [4, 3]
    recorder.close()

    monkeypatch.setenv(HISTORY_KEEP_ENV, "0")
    recorder = Recorder(path)  # opting out clears the bodies already stored
    assert _stored_bytes(path) == 0
    _record(recorder, 9, {"n": 9, "secret": "do not keep"})
    assert _stored_bytes(path) == 0
    with pytest.raises(NoHistoryError, match="history is off"):
        recorder.history(Endpoint.CHAT, 1)
    assert recorder.usage().overall[0].total_tokens == 30
    recorder.close()

    monkeypatch.setenv(HISTORY_KEEP_ENV, "lots")
    with pytest.raises(ValueError, match="IMAGINE_EDGE_HISTORY_KEEP must be a whole number"):
        Recorder(path)
    assert Recorder(path, history_keep=1).history_keep == 1  # an explicit value wins


def test_recording_reads_the_rows_with_bodies_not_the_whole_history(tmp_path):
    """Pruning after each request reads the rows that still hold bodies (the partial index),
    so a request costs the same with 100 or 2,000 older requests of its kind in the store
    (counted in SQLite VM steps, not time)."""
    recorder = Recorder(tmp_path / "usage.sqlite3", history_keep=5)
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    def steps_of_one_record(i: int) -> int:
        nonlocal steps
        steps = 0
        recorder._db.set_progress_handler(count, 1)
        _record(recorder, i, {"text": "hello"})
        recorder._db.set_progress_handler(None, 1)
        return steps

    for i in range(100):
        _record(recorder, i, {"text": "hello"})
    early = steps_of_one_record(100)
    for i in range(101, 2100):
        _record(recorder, i, {"text": "hello"})
    late = steps_of_one_record(2100)
    recorder.close()
    assert late < 2 * early, (early, late)
