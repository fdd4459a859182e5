"""ChatML prompts with tools, and the tool calls parsed back out of generated text.

Owns the conversation -> prompt text rendering of ChatML models (SmolLM2's template) and the
Hermes/Qwen tool-call convention on top of it, without a Jinja dependency at run time:

- Plain conversations render exactly as the model's own template does (``tests/models`` checks
  this against the manifest's Jinja template): a default system turn when the conversation has
  none, then ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, then the generation
  prompt ``<|im_start|>assistant\\n``.
- Tools: their JSON definitions go into the system turn inside ``<tools></tools>`` with the
  instruction to answer ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; an
  assistant turn's tool calls are rendered back in that form, and ``tool`` messages become a user
  turn of ``<tool_response>`` blocks (the Qwen2.5 template's convention).
- :func:`parse_tool_calls` finds those blocks in generated text; :class:`ToolCallFilter` streams
  the text before the first ``<tool_call>`` and holds back the rest for parsing at the end.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import ChatMessage, ChatMessageToolCall, Function, Tools

__all__ = [
    "ChatMLFormat",
    "ParsedOutput",
    "ToolCallFilter",
    "message_text",
    "parse_tool_calls",
]

TOOL_OPEN: Final = "<tool_call>"
TOOL_CLOSE: Final = "</tool_call>"
_TOOL_BLOCK: Final = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.DOTALL)
_DEFAULT_SYSTEM: Final = re.compile(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", re.DOTALL)

_TOOLS_PREAMBLE: Final = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_INSTRUCTION: Final = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def message_text(message: ChatMessage) -> str:
    """A message's content as text: a string, or the text parts of an OpenAI-style list."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidRequestError(
                f"content part of type {part.get('type')!r} is not supported: this model "
                "accepts only text parts ({'type': 'text', 'text': ...})"
            )
        texts.append(part["text"])
    return "".join(texts)


def _arguments_json(arguments: str | None) -> str:
    """Call arguments as JSON text: the contract's JSON string, parsed when it is valid JSON."""
    if not arguments:
        return "{}"
    try:
        return json.dumps(json.loads(arguments), ensure_ascii=False)
    except json.JSONDecodeError:
        return json.dumps(arguments, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ChatMLFormat:
    """Renders conversations for a ChatML model with the given default system prompt."""

    default_system: str | None = None

    @classmethod
    def from_template(cls, template: str | None) -> ChatMLFormat:
        """The format of a ChatML Jinja template (the default system prompt is read from it)."""
        if template is not None and "<|im_start|>" not in template:
            raise ValueError("the chat template is not ChatML (no <|im_start|> markup)")
        match = _DEFAULT_SYSTEM.search(template or "")
        system = match.group(1).replace("\\n", "\n") if match else None
        return cls(default_system=system)

    def render(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Tools] | None = None,
        *,
        add_generation_prompt: bool = True,
    ) -> str:
        """The prompt text of a conversation; special-token markup is left as text."""
        if not messages:
            raise InvalidRequestError("messages must contain at least one message")
        parts: list[str] = []
        rest = list(messages)
        system: str | None = self.default_system
        if rest[0].role == "system":
            system = message_text(rest.pop(0))
        if tools:
            system = (system or "") + self._tools_block(tools)
        if system is not None:
            parts.append(f"<|im_start|>system\n{system}<|im_end|>\n")
        for i, message in enumerate(rest):
            if message.role == "tool":
                first = i == 0 or rest[i - 1].role != "tool"
                last = i == len(rest) - 1 or rest[i + 1].role != "tool"
                parts.append("<|im_start|>user" if first else "")
                parts.append(f"\n<tool_response>\n{message_text(message)}\n</tool_response>")
                parts.append("<|im_end|>\n" if last else "")
            elif message.role == "assistant" and message.tool_calls:
                parts.append(self._assistant_calls(message))
            else:
                parts.append(f"<|im_start|>{message.role}\n{message_text(message)}<|im_end|>\n")
        if add_generation_prompt:
            parts.append("<|im_start|>assistant\n")
        return "".join(parts)

    @staticmethod
    def _tools_block(tools: Sequence[Tools]) -> str:
        lines = [json.dumps(t.model_dump(exclude_none=True), ensure_ascii=False) for t in tools]
        return _TOOLS_PREAMBLE + "".join("\n" + line for line in lines) + _TOOLS_INSTRUCTION

    @staticmethod
    def _assistant_calls(message: ChatMessage) -> str:
        text = message_text(message)
        out = ["<|im_start|>assistant", f"\n{text}" if text else ""]
        for call in message.tool_calls or ():
            fn = call.function or Function()
            name = json.dumps(fn.name or "", ensure_ascii=False)
            args = _arguments_json(fn.arguments)
            out.append(f'\n<tool_call>\n{{"name": {name}, "arguments": {args}}}\n</tool_call>')
        out.append("<|im_end|>\n")
        return "".join(out)


@dataclass(frozen=True, slots=True)
class ParsedOutput:
    """Generated text split into its plain text and its tool calls."""

    text: str
    tool_calls: list[ChatMessageToolCall]


def _call_from_json(body: str) -> ChatMessageToolCall | None:
    try:
        data: Any = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return ChatMessageToolCall(
        id=f"call_{uuid.uuid4().hex[:24]}",
        type="function",
        function=Function(name=data["name"], arguments=arguments),
    )


def parse_tool_calls(text: str) -> ParsedOutput:
    """Split ``text`` at the first ``<tool_call>``: the text before it, and the calls parsed
    from every block (a last block cut short without its closing tag is parsed too).

    When no block holds a valid call (JSON object with a string ``name``), the whole text is
    returned as text with no calls.
    """
    at = text.find(TOOL_OPEN)
    if at < 0:
        return ParsedOutput(text, [])
    calls = [c for m in _TOOL_BLOCK.finditer(text, at) if (c := _call_from_json(m.group(1)))]
    if not calls:
        return ParsedOutput(text, [])
    return ParsedOutput(text[:at].rstrip("\n"), calls)


class ToolCallFilter:
    """Streams text up to a ``<tool_call>`` tag and holds everything from the tag on.

    ``push`` returns the text safe to stream now; a suffix that could be the start of the tag is
    held until the next push. ``finish`` parses the held text: it returns the text still to
    stream (all of it when no valid call was found) and the calls.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._held: list[str] | None = None

    def push(self, text: str) -> str:
        if self._held is not None:
            self._held.append(text)
            return ""
        pending = self._pending + text
        at = pending.find(TOOL_OPEN)
        if at >= 0:
            self._held = [pending[at:]]
            self._pending = ""
            return pending[:at]
        keep = _partial_tag_suffix(pending)
        self._pending = pending[len(pending) - keep :] if keep else ""
        return pending[: len(pending) - keep]

    def finish(self) -> ParsedOutput:
        if self._held is None:
            text, self._pending = self._pending, ""
            return ParsedOutput(text, [])
        held = "".join(self._held)
        self._held = None
        parsed = parse_tool_calls(held)
        return ParsedOutput("", parsed.tool_calls) if parsed.tool_calls else parsed


def _partial_tag_suffix(text: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``<tool_call>``."""
    for n in range(min(len(TOOL_OPEN) - 1, len(text)), 0, -1):
        if TOOL_OPEN.startswith(text[-n:]):
            return n
    return 0
