"""models/structured.py: response formats and tool choices into grammars; bad ones are 400s."""

from __future__ import annotations

import pytest

from imagine_edge.models.structured import (
    StructuredSpec,
    call_schema,
    format_instruction,
    parse_response_format,
    parse_tool_choice,
    structured_spec,
)
from imagine_edge.runtime.constraint import GrammarError
from imagine_edge.sdk.types import Tools

WEATHER = Tools(
    type="function",
    function={
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
)
ADD = Tools(type="function", function={"name": "add"})


def test_response_formats():
    assert parse_response_format(None) is None
    assert parse_response_format({"type": "text"}) is None
    assert parse_response_format({"type": "json_object"}) == StructuredSpec("json_object", None)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    spec = parse_response_format(
        {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    )
    assert spec == StructuredSpec("json_schema", schema)
    assert parse_response_format({"type": "regex", "regex": "[0-9]+"}) == StructuredSpec(
        "regex", "[0-9]+"
    )
    assert parse_response_format({"type": "gbnf", "grammar": 'root ::= "a"'}).kind == "gbnf"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"type": "xml"}, "type must be one of"),
        ({"type": "json_schema"}, "needs 'json_schema'"),
        ({"type": "json_schema", "json_schema": {"schema": [1]}}, "must be a JSON object"),
        ({"type": "lark"}, "needs 'grammar'"),
        ({"type": "regex", "regex": ""}, "needs 'regex'"),
    ],
)
def test_bad_response_formats_are_400(value, message):
    with pytest.raises(GrammarError, match=message) as info:
        parse_response_format(value)
    assert info.value.status_code == 400


def test_tool_choices():
    assert parse_tool_choice(None, []) == "none"
    assert parse_tool_choice(None, [WEATHER]) == "auto"
    assert parse_tool_choice("required", [WEATHER]) == "required"
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert parse_tool_choice(named, [WEATHER, ADD]) == "get_weather"
    with pytest.raises(GrammarError, match="not in tools"):
        parse_tool_choice({"type": "function", "function": {"name": "x"}}, [WEATHER])
    with pytest.raises(GrammarError, match="needs at least one tool"):
        parse_tool_choice("required", [])
    with pytest.raises(GrammarError, match="tool_choice must be"):
        parse_tool_choice("always", [WEATHER])
    with pytest.raises(GrammarError, match="named tool_choice"):
        parse_tool_choice({"type": "function"}, [WEATHER])


def test_call_schema_pins_the_name_and_the_parameters():
    one = call_schema([WEATHER])
    assert one["properties"]["name"] == {"const": "get_weather"}
    assert one["properties"]["arguments"]["additionalProperties"] is False
    assert one["required"] == ["name", "arguments"]
    both = call_schema([WEATHER, ADD])
    assert [o["properties"]["name"]["const"] for o in both["anyOf"]] == ["get_weather", "add"]
    assert both["anyOf"][1]["properties"]["arguments"] == {"type": "object"}


def test_structured_specs():
    assert structured_spec(None, None, None) == (None, False)
    spec, offered = structured_spec(None, [WEATHER], "none")
    assert (spec, offered) == (None, False)
    spec, offered = structured_spec(None, [WEATHER], "required")
    assert offered
    assert spec is not None
    assert spec.kind == "lark"
    assert spec.forces_call
    assert str(spec.source).startswith("start: call\n")
    spec, _ = structured_spec({"type": "json_object"}, [WEATHER], "auto")
    assert spec is not None
    assert not spec.forces_call
    assert str(spec.source).startswith("start: answer | call\nanswer: %json")
    with pytest.raises(GrammarError, match="cannot apply when a tool call is required"):
        structured_spec({"type": "json_object"}, [WEATHER], "required")
    with pytest.raises(GrammarError, match="cannot be combined with tools"):
        structured_spec({"type": "regex", "regex": "a"}, [WEATHER], "auto")
    with pytest.raises(GrammarError, match="type must be 'function'"):
        structured_spec(None, [Tools(type="code", function={"name": "f"})], "auto")


def test_format_instruction_names_the_schema():
    assert format_instruction(None) is None
    assert format_instruction({"type": "regex", "regex": "a"}) is None
    assert format_instruction({"type": "json_object"}) == "Answer with a JSON object."
    text = format_instruction(
        {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    )
    assert text is not None
    assert '{"type": "object"}' in text
