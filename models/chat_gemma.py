"""Gemma's turn format: conversations and completions as Gemma 3 prompts.

``<bos>`` starts every prompt (Gemma conditions on it; completions get it too). Each message is
``<start_of_turn>{role}\\n{content}<end_of_turn>\\n`` with the assistant's role named ``model``;
a leading system message has no turn of its own and is prepended to the first user turn; the
generation prompt is ``<start_of_turn>model\\n``. This matches the manifest's Jinja template
(``models/prepare/gguf_gemma3.CHAT_TEMPLATE``, checked in ``tests/models``). Gemma 3 has no
tool-calling convention, so requests with tools are refused with a 400.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from imagine_edge.models.chat_format import message_text
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import ChatMessage, Tools

__all__ = ["BOS", "GemmaFormat"]

BOS: Final = "<bos>"
_ROLES: Final = {"user": "user", "assistant": "model"}


@dataclass(frozen=True, slots=True)
class GemmaFormat:
    """Renders conversations (and completion prompts) for a Gemma model."""

    @staticmethod
    def matches(template: str | None) -> bool:
        """Whether a manifest's chat template is Gemma's turn format."""
        return template is not None and "<start_of_turn>" in template

    def completion(self, prompt: str) -> str:
        """A completion prompt as the model expects it: after ``<bos>``."""
        return prompt if prompt.startswith(BOS) else BOS + prompt

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
        if tools:
            raise InvalidRequestError("this model (Gemma 3) has no tool-calling format: omit tools")
        rest = list(messages)
        prefix = ""
        if rest[0].role == "system":
            prefix = message_text(rest.pop(0)) + "\n\n"
        parts = [BOS]
        for i, message in enumerate(rest):
            role = _ROLES.get(message.role)
            if role is None:
                raise InvalidRequestError(
                    f"messages[{i}]: role {message.role!r} is not supported by Gemma's format "
                    "(system first, then user and assistant)"
                )
            text = (prefix if i == 0 else "") + message_text(message)
            parts.append(f"<start_of_turn>{role}\n{text}<end_of_turn>\n")
        if add_generation_prompt:
            parts.append("<start_of_turn>model\n")
        return "".join(parts)
