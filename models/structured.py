"""Structured output: a request's response format and tool choice as one grammar for the decoder.

One job: turn ``response_format`` (OpenAI's ``text``, ``json_object``, ``json_schema``; our
``regex``, ``lark``, ``gbnf``) and ``tools`` + ``tool_choice`` (``none``, ``auto``,
``required``, a named function) into the (kind, source) that
:class:`~imagine_edge.runtime.constraint.ConstraintCompiler` compiles, or into nothing when the
output is free. A bad format, tool or tool choice is a 400 naming what is
wrong (a :class:`~imagine_edge.runtime.constraint.GrammarError`, status 400); the compiler refuses a
bad or too costly schema the same way.

Tool calls use the model's tool-call markup (``models/chat_format.py``:
``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``), so the text parses back with
the same :func:`~imagine_edge.models.chat_format.parse_tool_calls` as an unconstrained answer:

- ``required`` / named: the whole output is one call block whose JSON is
  ``{"name": <one of the tools>, "arguments": <that tool's parameters schema>}``;
- ``auto``: a Lark alternation, either an answer (free text that does not start with the call
  marker, or, with a JSON ``response_format``, that JSON) or one call block as above;
- ``none``: the tools are not offered (the prompt leaves them out) and the answer is free.

A JSON ``response_format`` also adds one sentence naming the schema to the system turn
(:func:`format_instruction`), as the tools' schemas are in the prompt too.

One call per answer: the grammar ends after the first call block (``parallel_tool_calls`` is
accepted and not used). See docs/structured.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from imagine_edge.models.chat_format import TOOL_CLOSE, TOOL_OPEN
from imagine_edge.runtime.constraint import ConstraintKind, GrammarError
from imagine_edge.sdk.types import Tools

__all__ = [
    "GRAMMAR_KINDS",
    "JSON_OPTIONS",
    "StructuredSpec",
    "ToolChoice",
    "format_instruction",
    "parse_response_format",
    "parse_tool_choice",
    "structured_spec",
]

ToolChoice = Literal["none", "auto", "required"] | str
"""'none', 'auto', 'required', or the name of the function that must be called."""

GRAMMAR_KINDS: Final = ("regex", "lark", "gbnf")
"""Response format types beyond OpenAI's: ``{"type": "regex", "regex": ...}``, ``{"type": "lark" or
"gbnf", "grammar": ...}``."""

# The JSON layout inside a Lark grammar: the one the compiler uses for a plain JSON schema
# (runtime/constraint.py), given to llguidance's %json through the schema's x-guidance key.
JSON_OPTIONS: Final[Mapping[str, Any]] = {
    "item_separator": ", ",
    "key_separator": ": ",
    "whitespace_flexible": False,
    "lenient": False,
}
_ANY_OBJECT: Final[Mapping[str, Any]] = {"type": "object"}
# Free text that is not a tool call: anything, except text starting with the call marker.
_ANSWER_TEXT: Final = f"/(?s:.+)/ & ~/{TOOL_OPEN}(?s:.*)/"


@dataclass(frozen=True, slots=True)
class StructuredSpec:
    """What constrains one request's output: a grammar to compile, and whether it forces a call."""

    kind: ConstraintKind
    source: str | Mapping[str, Any] | None
    forces_call: bool = False


def parse_response_format(value: Mapping[str, Any] | None) -> StructuredSpec | None:
    """The constraint of a ``response_format``; None for free text (absent or ``text``)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise GrammarError("response_format must be an object with a 'type'")
    kind = value.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredSpec("json_object", None)
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping):
            raise GrammarError(
                "response_format json_schema needs 'json_schema': {'name': ..., 'schema': {...}}"
            )
        schema = spec.get("schema")
        if schema is None:
            return StructuredSpec("json_object", None)  # OpenAI: no schema, any JSON object
        if not isinstance(schema, Mapping):
            raise GrammarError("response_format json_schema.schema must be a JSON object")
        return StructuredSpec("json_schema", dict(schema))
    if kind in GRAMMAR_KINDS:
        field = "regex" if kind == "regex" else "grammar"
        source = value.get(field)
        if not isinstance(source, str) or not source:
            raise GrammarError(f"response_format {kind} needs '{field}': a non-empty string")
        return StructuredSpec(kind, source)
    raise GrammarError(
        f"response_format type must be one of text, json_object, json_schema, "
        f"{', '.join(GRAMMAR_KINDS)}; got {kind!r}"
    )


def parse_tool_choice(choice: str | Mapping[str, Any] | None, tools: Sequence[Tools]) -> ToolChoice:
    """The tool choice of a request with ``tools``: 'none', 'auto', 'required' or a name."""
    if choice is None:
        return "auto" if tools else "none"
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise GrammarError(
                f"tool_choice must be 'none', 'auto', 'required' or "
                f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}"
            )
        if choice == "required" and not tools:
            raise GrammarError("tool_choice 'required' needs at least one tool in tools")
        return choice
    function = choice.get("function") if isinstance(choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str):
        raise GrammarError(
            "a named tool_choice must be {'type': 'function', 'function': {'name': ...}}"
        )
    if name not in {t.function.name for t in tools}:
        offered = ", ".join(repr(t.function.name) for t in tools) or "none"
        raise GrammarError(f"tool_choice names {name!r}, which is not in tools ({offered})")
    return name


def _check_tools(tools: Sequence[Tools]) -> None:
    for tool in tools:
        if tool.type != "function":
            raise GrammarError(f"tool type must be 'function', got {tool.type!r}")
        if not tool.function.name:
            raise GrammarError("every tool's function needs a name")
        params = tool.function.parameters
        if params is not None and not isinstance(params, Mapping):
            raise GrammarError(
                f"the parameters of tool {tool.function.name!r} must be a JSON schema object"
            )


def call_schema(tools: Sequence[Tools]) -> dict[str, Any]:
    """The JSON schema of one call of any of ``tools``: ``{"name": ..., "arguments": ...}``."""
    options = []
    for tool in tools:
        params = tool.function.parameters
        arguments = dict(params) if params else dict(_ANY_OBJECT)
        if arguments.get("type") == "object" and "properties" in arguments:
            arguments.setdefault("additionalProperties", False)
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": tool.function.name}, "arguments": arguments},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    return options[0] if len(options) == 1 else {"anyOf": options}


def _json_rule(schema: Mapping[str, Any]) -> str:
    return "%json " + json.dumps({**schema, "x-guidance": dict(JSON_OPTIONS)})


def _lark_string(text: str) -> str:
    return json.dumps(text)  # a Lark string literal is a JSON string


def tool_grammar(
    tools: Sequence[Tools], choice: ToolChoice, answer: StructuredSpec | None = None
) -> str:
    """The Lark grammar of a tool choice ('auto', 'required' or a name; not 'none')."""
    called = (
        tools if choice in ("auto", "required") else [t for t in tools if t.function.name == choice]
    )
    lines = [
        f"call: {_lark_string(TOOL_OPEN + chr(10))} call_json {_lark_string(chr(10) + TOOL_CLOSE)}",
        f"call_json: {_json_rule(call_schema(called))}",
    ]
    if choice != "auto":
        return "\n".join(["start: call", *lines]) + "\n"
    if answer is None:
        answer_rule = f"answer: ANSWER\nANSWER: {_ANSWER_TEXT}"
    elif answer.kind in ("json_schema", "json_object"):
        schema = answer.source if answer.kind == "json_schema" else _ANY_OBJECT
        assert isinstance(schema, Mapping)
        answer_rule = f"answer: {_json_rule(schema)}"
    else:
        raise GrammarError(
            f"response_format {answer.kind} cannot be combined with tools; use json_schema, "
            "json_object or text"
        )
    return "\n".join(["start: answer | call", answer_rule, *lines]) + "\n"


def format_instruction(response_format: Mapping[str, Any] | None) -> str | None:
    """The sentence added to the system turn for a JSON ``response_format`` (None otherwise):
    the grammar makes the output valid, the instruction makes it meaningful for a small model,
    which otherwise does not know which values the schema asks for."""
    spec = parse_response_format(response_format)
    if spec is None or spec.kind not in ("json_schema", "json_object"):
        return None
    if spec.kind == "json_object":
        return "Answer with a JSON object."
    return f"Answer with a JSON object that matches this JSON schema: {json.dumps(spec.source)}"


def structured_spec(
    response_format: Mapping[str, Any] | None,
    tools: Sequence[Tools] | None,
    tool_choice: str | Mapping[str, Any] | None,
) -> tuple[StructuredSpec | None, bool]:
    """The constraint of a chat request, and whether its tools are offered at all.

    Returns (None, offered) when the output is free; tools are offered unless tool_choice is
    'none' (or there are none).
    """
    answer = parse_response_format(response_format)
    tools = list(tools or ())
    _check_tools(tools)
    choice = parse_tool_choice(tool_choice, tools)
    if choice == "none" or not tools:
        return answer, False
    if choice != "auto" and answer is not None:
        raise GrammarError(
            "response_format cannot apply when a tool call is required: the answer is the call"
        )
    grammar = tool_grammar(tools, choice, answer)
    return StructuredSpec("lark", grammar, forces_call=choice != "auto"), True
