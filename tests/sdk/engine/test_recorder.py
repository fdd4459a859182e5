"""The SQLite recorder: usage aggregation, the client's datetime format, histories, pruning."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from imagine_edge.sdk.engine.recorder import (
    Endpoint,
    Recorder,
    RequestRecord,
    Status,
    default_data_dir,
    parse_client_datetime,
    parse_duration,
)
from imagine_edge.sdk.errors import InvalidRequestError, NoHistoryError
from imagine_edge.sdk.types import ModelType

T0 = dt.datetime(2024, 3, 4, 10, 0, tzinfo=dt.UTC).timestamp()


def record(recorder: Recorder, i: int, *, at: float, model: str = "m", status=Status.OK,
           endpoint=Endpoint.CHAT, tokens=(2, 3), seconds=0.5) -> None:  # fmt: skip
    recorder.record(
        RequestRecord(
            id=f"r{i}", endpoint=endpoint, model=model, model_type=ModelType.LLM, status=status,
            created=at, prompt_tokens=tokens[0], completion_tokens=tokens[1],
            generation_seconds=seconds, request={"n": i}, response={"answer": i},
        )
    )  # fmt: skip


@pytest.fixture
def recorder(tmp_path):
    r = Recorder(tmp_path / "usage.sqlite3")
    yield r
    r.close()


def test_wal_mode_and_data_dir_override(recorder, tmp_path, monkeypatch):
    mode = sqlite3.connect(recorder.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    monkeypatch.setenv("IMAGINE_EDGE_DATA_DIR", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1 day", 86400), ("1 hour", 3600), ("15 minutes", 900), ("2 weeks", 1209600),
     ("30 seconds", 30), ("hour", 3600), ("5min", 300), (" 1 Day ", 86400)],
)  # fmt: skip
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["1 month", "0 hours", "-1 day", "soon", ""])
def test_bad_durations_name_the_value(text):
    with pytest.raises(InvalidRequestError, match="aggregation_duration must be"):
        parse_duration(text)


def test_client_datetime_formats():
    aware = dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    assert parse_client_datetime(str(aware), "from") == aware
    assert parse_client_datetime("2024-01-02 03:04:05", "to") == dt.datetime(2024, 1, 2, 3, 4, 5)
    # An unencoded '+' in the query string arrives as a space.
    assert parse_client_datetime("2024-01-02T03:04:05 00:00", "from").tzinfo is not None
    with pytest.raises(InvalidRequestError, match="from must be a date and time"):
        parse_client_datetime("yesterday", "from")


def test_usage_bins_and_totals(recorder):
    record(recorder, 1, at=T0 + 60)
    record(recorder, 2, at=T0 + 1800, seconds=1.0)
    record(recorder, 3, at=T0 + 3700, model="other", tokens=(10, 0))
    record(recorder, 4, at=T0 + 3800, status=Status.CANCELLED, tokens=(1, 1))
    usage = recorder.usage("1 hour")
    bins = [(r.model, r.date_bin.hour, r.total_tokens) for r in usage.usage]
    assert bins == [("m", 10, 10), ("m", 11, 2), ("other", 11, 10)]
    overall = {r.model: r for r in usage.overall}
    assert overall["m"].total_input_tokens == 5
    assert overall["m"].total_output_tokens == 7
    assert overall["m"].total_generation_time == pytest.approx(2.0)
    assert overall["other"].userid == "local"
    quarter = recorder.usage("15 minutes").usage
    assert [r.date_bin.minute for r in quarter if r.model == "m"] == [0, 30, 0]


def test_usage_filters(recorder):
    for i in range(4):
        record(recorder, i, at=T0 + i * 86400, model="ab"[i % 2])
    since = dt.datetime.fromtimestamp(T0 + 86400, dt.UTC)
    until = dt.datetime.fromtimestamp(T0 + 2 * 86400, dt.UTC)
    window = recorder.usage(since=since, until=until)
    assert [r.date_bin.day for r in window.usage] == [5, 6]
    only_a = recorder.usage(model="a")
    assert [r.model for r in only_a.overall] == ["a"]
    assert only_a.overall[0].total_tokens == 10
    with pytest.raises(InvalidRequestError, match="must not be after"):
        recorder.usage(since=until, until=since)


def test_history_newest_first_and_only_successes(recorder):
    with pytest.raises(NoHistoryError, match="no chat/completions request"):
        recorder.history(Endpoint.CHAT, 1)
    record(recorder, 1, at=T0)
    record(recorder, 2, at=T0 + 1)
    record(recorder, 3, at=T0 + 2, status=Status.ERROR)
    record(recorder, 4, at=T0 + 3, endpoint=Endpoint.EMBEDDINGS)
    assert recorder.history(Endpoint.CHAT, 5) == [[{"answer": 2}, {"n": 2}],
                                                   [{"answer": 1}, {"n": 1}]]  # fmt: skip
    assert recorder.history(Endpoint.CHAT, 1) == [[{"answer": 2}, {"n": 2}]]


def test_bodies_are_pruned_beyond_the_kept_history(tmp_path):
    recorder = Recorder(tmp_path / "u.sqlite3", history_keep=3)
    for i in range(6):
        record(recorder, i, at=T0 + i)
    assert [pair[1]["n"] for pair in recorder.history(Endpoint.CHAT, 10)] == [5, 4, 3]
    assert recorder.usage().overall[0].total_tokens == 30  # counts of every request remain
    recorder.close()
