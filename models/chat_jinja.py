"""A chat template rendered as it is: the model's own Jinja text, in a sandbox.

For models whose template is neither ChatML (``chat_format.py``) nor Gemma's turn format
(``chat_gemma.py``): a user's onnxruntime-genai folder or GGUF brings its own. The template runs
in jinja2's immutable sandbox (no attribute access to Python internals, no mutation of the
arguments), with the variables Hugging Face templates expect: ``messages``, ``tools``,
``add_generation_prompt``, ``bos_token``, ``eos_token`` and ``raise_exception``. A template that
fails to render is the caller's 400, with the template's own message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from imagine_edge.models.chat_format import message_text
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import ChatMessage, Tools

__all__ = ["JinjaFormat"]


def _raise(message: str) -> None:
    raise InvalidRequestError(f"the model's chat template refused the conversation: {message}")


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["tojson"] = lambda value, indent=None: json.dumps(
        value, ensure_ascii=False, indent=indent
    )
    return env


@dataclass(frozen=True, slots=True)
class JinjaFormat:
    """Renders conversations with the model's own template."""

    template: str
    bos_token: str = ""
    eos_token: str = ""
    _compiled: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            compiled = _environment().from_string(self.template)
        except TemplateError as e:
            raise ValueError(f"the chat template does not compile: {e}") from e
        object.__setattr__(self, "_compiled", compiled)

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
        plain = [{"role": m.role, "content": message_text(m)} for m in messages]
        try:
            return str(
                self._compiled.render(
                    messages=plain,
                    tools=[t.model_dump(exclude_none=True) for t in tools] if tools else None,
                    add_generation_prompt=add_generation_prompt,
                    bos_token=self.bos_token,
                    eos_token=self.eos_token,
                    raise_exception=_raise,
                )
            )
        except InvalidRequestError:
            raise
        except TemplateError as e:
            raise InvalidRequestError(f"the model's chat template failed: {e}") from e
