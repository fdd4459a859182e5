"""Golden files and a cross-check against the official client pin the DTO contract.

For every DTO: its JSON schema (names, types, defaults, descriptions) and a fully populated
example must equal ``golden/<Name>.json`` exactly (rewrite with ``pytest --update-goldens`` after a
deliberate change), and the example's JSON must validate as the official client's class of the
same name and come back unchanged through ours.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from enum import Enum
from pathlib import Path
from typing import Any

import imagine.types
import pytest
from pydantic import BaseModel

from imagine_edge.sdk import types as ours

from .dto_examples import EXAMPLES

GOLDEN = Path(__file__).parent / "golden"
ENUMS = ["ModelType", "FinishReason"]
# Ours only, with the client's shape they stand for (docs/contract.md, Endpoints: translate is
# completion).
CLIENT_SHAPE = {"TranslateRequest": "CompletionRequest"}
# Documented extension fields (docs/server.md, Timings; docs/sampling.md, min_tokens;
# docs/structured.md): ours only, ignored by the client's DTOs.
_SAMPLING_EXTENSIONS = {"min_tokens", "seed", "logprobs", "top_logprobs"}
EXTENSIONS = {
    "UsageInfo": {"timings", "seed"},
    "LLMSamplingParams": _SAMPLING_EXTENSIONS,
    "CompletionRequest": _SAMPLING_EXTENSIONS,
    "TranslateRequest": _SAMPLING_EXTENSIONS,
    "ChatCompletionRequest": _SAMPLING_EXTENSIONS | {"tool_choice", "response_format"},
    "ChatCompletionResponseChoice": {"logprobs"},
    "CompletionResponseChoice": {"logprobs"},
}
# Ours only, with no client counterpart: the extension fields' own DTOs.
OURS_ONLY = {"UsageTimings", "TopLogprob", "TokenLogprob", "ChoiceLogprobs"}


def _without_extensions(data: Any) -> Any:
    """``data`` (a DTO's JSON) without the extension fields, at any depth."""
    if isinstance(data, dict):
        dropped = set().union(*EXTENSIONS.values())
        return {k: _without_extensions(v) for k, v in data.items() if k not in dropped}
    if isinstance(data, list):
        return [_without_extensions(v) for v in data]
    return data


def _client_classes() -> dict[str, type]:
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(imagine.types.__path__):
        module = importlib.import_module(f"imagine.types.{info.name}")
        found.update(
            (name, cls)
            for name, cls in inspect.getmembers(module, inspect.isclass)
            # common.py holds a stale ModelType without RERANKER; models.py has the real one.
            if cls.__module__ == module.__name__
            and not (name == "ModelType" and info.name == "common")
        )
    return found


CLIENT = _client_classes()


def _check_golden(name: str, payload: dict[str, Any], update: bool) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if update:
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"no golden for {name}: run pytest --update-goldens and review it"
    assert path.read_text(encoding="utf-8") == text, f"{name} differs from {path.name}"


def test_every_public_dto_has_an_example() -> None:
    public = {n for n in ours.__all__ if isinstance(getattr(ours, n), type)}
    assert public - set(ENUMS) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_dto_matches_golden(name: str, update_goldens: bool) -> None:
    cls = getattr(ours, name)
    example = EXAMPLES[name]
    assert type(example) is cls
    payload = {
        "schema": cls.model_json_schema(),
        "example": example.model_dump(mode="json"),
    }
    _check_golden(name, payload, update_goldens)


@pytest.mark.parametrize("name", ENUMS)
def test_enum_matches_golden_and_client(name: str, update_goldens: bool) -> None:
    enum: type[Enum] = getattr(ours, name)
    members = {m.name: m.value for m in enum}
    _check_golden(name, {"members": members}, update_goldens)
    assert members == {m.name: m.value for m in CLIENT[name]}


@pytest.mark.parametrize("name", sorted(set(EXAMPLES) - OURS_ONLY))
def test_dto_round_trips_through_the_official_client(name: str) -> None:
    cls: type[BaseModel] = getattr(ours, name)
    theirs: type[BaseModel] = CLIENT[CLIENT_SHAPE.get(name, name)]
    wire = EXAMPLES[name].model_dump(mode="json")
    parsed = theirs.model_validate(wire)  # extension fields included: the client ignores them
    back = cls.model_validate(parsed.model_dump(mode="json"))
    assert _without_extensions(back.model_dump(mode="json")) == _without_extensions(wire)


def test_extension_fields_reach_the_client_as_extra_keys_only() -> None:
    """A response with usage timings parses as the client's DTO, which keeps its own fields."""
    wire = EXAMPLES["ChatCompletionResponse"].model_dump(mode="json")
    assert wire["usage"]["timings"]["tokens_per_s"] == 100.0
    parsed = CLIENT["ChatCompletionResponse"].model_validate(wire)
    assert parsed.model_dump(mode="json")["usage"] == _without_extensions(wire["usage"])


@pytest.mark.parametrize("name", sorted(n for n in CLIENT if n not in ENUMS))
def test_client_field_names_and_requiredness_match(name: str) -> None:
    theirs = CLIENT[name]
    if not issubclass(theirs, BaseModel):
        pytest.skip(f"{name} is not a model")
    cls: type[BaseModel] = getattr(ours, name)
    assert set(cls.model_fields) - EXTENSIONS.get(name, set()) == set(theirs.model_fields)
    for field, info in theirs.model_fields.items():
        mine = cls.model_fields[field]
        # Deliberate, documented deviation: EmbeddingRequest.id may be omitted (clients never
        # send it).
        if (name, field) == ("EmbeddingRequest", "id"):
            continue
        assert mine.is_required() == info.is_required(), f"{name}.{field} requiredness"
        if not info.is_required():
            assert mine.default == info.default, f"{name}.{field} default"
