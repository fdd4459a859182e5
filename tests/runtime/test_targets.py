"""The one target parser and the decision of ``auto``, with fake openers (no graph runs)."""

from __future__ import annotations

import logging

import pytest

from imagine_edge.runtime.targets import (
    NO_QNN_GRAPHS,
    TARGETS,
    Placed,
    parse_target,
    place,
    target_from_env,
    target_variable,
)
from imagine_edge.sdk.errors import InvalidRequestError, ModelRunError, ModelUnavailableError
from imagine_edge.sdk.types import ModelType


@pytest.mark.parametrize("raw", ["cpu", "qnn", "auto"])
def test_every_target_parses_as_itself(raw: str) -> None:
    assert parse_target(raw) == raw


@pytest.mark.parametrize("raw", ["", "CPU", "gpu", "npu", " cpu", "qnn,cpu"])
def test_anything_else_is_refused_with_the_valid_values(raw: str) -> None:
    with pytest.raises(ValueError, match=rf"^SRC must be cpu, qnn or auto, got {raw!r}$"):
        parse_target(raw, source="SRC")


def test_the_variable_of_each_model_type_follows_one_rule() -> None:
    names = {t: target_variable(t) for t in ModelType}
    assert names == {
        ModelType.EMBEDDING: "IMAGINE_EDGE_EMBEDDING_TARGET",
        ModelType.LLM: "IMAGINE_EDGE_LLM_TARGET",
        ModelType.RERANKER: "IMAGINE_EDGE_RERANKER_TARGET",
        ModelType.TEXT_TO_IMAGE: "IMAGINE_EDGE_TEXT_TO_IMAGE_TARGET",
        ModelType.TRANSCRIBE: "IMAGINE_EDGE_TRANSCRIBE_TARGET",
        ModelType.TRANSLATE: "IMAGINE_EDGE_TRANSLATE_TARGET",
    }


@pytest.mark.parametrize("model_type", list(ModelType))
def test_every_model_type_reads_its_target_from_the_environment(
    model_type: ModelType, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = target_variable(model_type)
    monkeypatch.delenv(name, raising=False)
    assert target_from_env(model_type) == "cpu"
    for target in TARGETS:
        monkeypatch.setenv(name, target)
        assert target_from_env(model_type) == target
    monkeypatch.setenv(name, "gpu")
    with pytest.raises(ValueError, match=f"^{name} must be cpu, qnn or auto, got 'gpu'$"):
        target_from_env(model_type)


class _Openers:
    """Fake openers that record which ran."""

    def __init__(self, qnn_error: Exception | None = None) -> None:
        self.ran: list[str] = []
        self.qnn_error = qnn_error

    def qnn(self) -> str:
        self.ran.append("qnn")
        if self.qnn_error is not None:
            raise self.qnn_error
        return "on qnn"

    def cpu(self) -> str:
        self.ran.append("cpu")
        return "on cpu"


def test_cpu_never_tries_qnn() -> None:
    o = _Openers()
    assert place("cpu", "m", qnn=o.qnn, cpu=o.cpu) == Placed("on cpu")
    assert o.ran == ["cpu"]


def test_qnn_and_auto_run_on_qnn_when_it_places_the_graphs() -> None:
    for target in ("qnn", "auto"):
        o = _Openers()
        assert place(target, "m", qnn=o.qnn, cpu=o.cpu) == Placed("on qnn")
        assert o.ran == ["qnn"]


def test_qnn_without_qnn_graphs_is_unavailable() -> None:
    o = _Openers()
    with pytest.raises(ModelUnavailableError, match=f"m has {NO_QNN_GRAPHS}"):
        place("qnn", "m", qnn=None, cpu=o.cpu)
    assert o.ran == []


def test_qnn_that_cannot_place_the_graphs_fails() -> None:
    o = _Openers(ModelRunError("a node runs elsewhere", phase="load"))
    with pytest.raises(ModelRunError, match="a node runs elsewhere"):
        place("qnn", "m", qnn=o.qnn, cpu=o.cpu)
    assert o.ran == ["qnn"]


def test_auto_falls_back_to_the_cpu_with_its_reason_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    o = _Openers(ModelRunError("a node runs elsewhere", phase="load"))
    with caplog.at_level(logging.WARNING, logger="imagine_edge.runtime.targets"):
        placed = place("auto", "m", qnn=o.qnn, cpu=o.cpu)
    assert placed == Placed("on cpu", fallback="load: a node runs elsewhere")
    assert o.ran == ["qnn", "cpu"]
    assert "m: running on the CPU EP: load: a node runs elsewhere" in caplog.text
    assert placed.describe("CPUExecutionProvider") == (
        "CPUExecutionProvider (fallback: load: a node runs elsewhere)"
    )
    missing = place("auto", "m", qnn=None, cpu=o.cpu)
    assert missing == Placed("on cpu", fallback=NO_QNN_GRAPHS)
    assert Placed("x").describe("CPUExecutionProvider") == "CPUExecutionProvider"


def test_auto_does_not_swallow_other_errors() -> None:
    o = _Openers(InvalidRequestError("not a placement problem"))
    with pytest.raises(InvalidRequestError):
        place("auto", "m", qnn=o.qnn, cpu=o.cpu)
    assert o.ran == ["qnn"]
