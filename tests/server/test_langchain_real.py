"""LangChain's ``with_structured_output`` (both methods) and ``bind_tools`` against /v1 of a real
server on SmolLM2 (``langchain-openai``, the test extra)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from imagine_edge.models.llm import SMOLLM2

from .conftest import serving_smollm2

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    with serving_smollm2(tmp_path_factory.mktemp("langchain")) as url:
        yield url


class Person(BaseModel):
    """A person."""

    name: str = Field(description="The person's name")
    age: int = Field(description="Age in years", ge=0, le=130)


def _chat(root: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=SMOLLM2,
        base_url=root + "/v1",
        api_key="k",  # type: ignore[arg-type]
        max_retries=0,
        temperature=0.3,
        max_tokens=128,  # type: ignore[call-arg]
        seed=3,
    )


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(root, method):
    structured = _chat(root).with_structured_output(Person, method=method)
    person = structured.invoke("Describe Marie Curie.")
    assert isinstance(person, Person)
    assert person.name
    assert 0 <= person.age <= 130


def test_langchain_bind_tools(root):
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        return "sunny"

    model = _chat(root).bind_tools([get_weather], tool_choice="get_weather")
    message = model.invoke("What is the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather"
    assert isinstance(call["args"]["city"], str)
    auto = _chat(root).bind_tools([get_weather]).invoke("What is the weather in Rome?")
    assert auto.tool_calls or auto.content  # the model chooses: a call or an answer
