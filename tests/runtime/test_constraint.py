"""Constrained decoding (runtime/constraint.py) on the real SmolLM2 tokenizer, and driving the real
model through the generation loop with a grammar."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import numpy as np
import pytest
from tokenizers import Tokenizer

from imagine_edge import kernels
from imagine_edge.models.catalog import prepared
from imagine_edge.models.llm import SMOLLM2, ChatModel
from imagine_edge.models.store import Manifest
from imagine_edge.runtime.constraint import (
    Constraint,
    ConstraintCompiler,
    ConstraintLimits,
    Grammar,
)
from imagine_edge.runtime.generate import GenerationPlan
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import ChatCompletionRequest, ChatMessage

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return prepared(SMOLLM2, ["cpu"])


@pytest.fixture(scope="module")
def tokenizer(manifest: Manifest) -> Tokenizer:
    return Tokenizer.from_file(str(manifest.tokenizer))


@pytest.fixture(scope="module")
def compiler(tokenizer: Tokenizer, manifest: Manifest) -> ConstraintCompiler:
    return ConstraintCompiler(
        tokenizer, tokenizer.get_vocab_size(), manifest.special_tokens.eos_token_ids[0]
    )


def _allowed(constraint: Constraint) -> set[int]:
    words = constraint.fill().view(np.uint32)
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")
    return set(np.flatnonzero(bits).tolist())


def _walk(constraint: Constraint, tokenizer: Tokenizer, text: str) -> None:
    """Feed `text`'s tokens, checking that the mask allowed each one before it was consumed."""
    for token in tokenizer.encode(text, add_special_tokens=False).ids:
        assert token in _allowed(constraint), tokenizer.id_to_token(token)
        constraint.consume(token)


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


# --------------------------------------------------------------------------- compile and step


def test_a_valid_document_is_allowed_token_by_token_and_completes(compiler, tokenizer):
    constraint = compiler.compile("json_schema", PERSON).start()
    assert _allowed(constraint) <= {
        t for t in range(tokenizer.get_vocab_size()) if tokenizer.id_to_token(t).startswith("{")
    }
    _walk(constraint, tokenizer, '{"name": "Ada", "age": 36}')
    assert constraint.accepting
    assert constraint.done
    assert _allowed(constraint) == {compiler.eos_token_id}  # complete: only EOS remains


def test_the_mask_is_what_the_kernel_reads(compiler, tokenizer):
    constraint = compiler.compile("regex", "(yes|no)").start()
    allowed = _allowed(constraint)
    logits = np.zeros(compiler.vocab_size, dtype=np.float32)
    token = kernels.sample(
        logits, kernels.SamplingConfig(), kernels.SequenceState(compiler.vocab_size), 0.5,
        allowed_mask=constraint.fill(),
    )  # fmt: skip
    assert token in allowed
    assert set(np.flatnonzero(np.isfinite(logits)).tolist()) == allowed
    assert all(re.fullmatch("(y|ye|yes|n|no)", tokenizer.decode([t])) for t in allowed)


def test_schema_keys_are_forced(compiler, tokenizer):
    constraint = compiler.compile("json_schema", PERSON).start()
    forced = tokenizer.decode(constraint.forced_tokens())
    assert forced
    assert '{"name": '.startswith(forced)
    for token in constraint.forced_tokens():
        constraint.consume(token)
    assert not constraint.done


def test_a_token_outside_the_grammar_is_refused(compiler, tokenizer):
    constraint = compiler.compile("json_schema", PERSON).start()
    bad = tokenizer.encode("Hello", add_special_tokens=False).ids[0]
    assert bad not in _allowed(constraint)
    with pytest.raises(InvalidRequestError, match=f"token {bad} breaks the grammar"):
        constraint.consume(bad)


@pytest.mark.parametrize(
    ("kind", "source", "text"),
    [
        ("json_object", None, '{"anything": [1, 2.5, true, null, {"x": "y"}]}'),
        ("regex", r"[0-9]{3}-[0-9]{4}", "555-1234"),
        ("lark", 'start: "The answer is " NUMBER\nNUMBER: /[0-9]+/', "The answer is 42"),
        ("gbnf", 'root ::= "color: " ("red" | "green" | "blue")', "color: green"),
    ],
)
def test_each_kind_compiles_and_matches(compiler, tokenizer, kind, source, text):
    constraint = compiler.compile(kind, source).start()
    _walk(constraint, tokenizer, text)
    assert constraint.accepting


def test_each_sequence_has_its_own_state(compiler, tokenizer):
    grammar = compiler.compile("json_schema", PERSON)
    first, second = grammar.start(), grammar.start()
    _walk(first, tokenizer, '{"name": "A')
    assert _allowed(second) != _allowed(first)
    _walk(second, tokenizer, '{"name": "B", "age": 1}')
    assert second.done
    assert not first.done


@pytest.mark.parametrize(
    ("kind", "source", "message"),
    [
        ("json_schema", {"type": "foo"}, "invalid JSON schema: Invalid type: foo"),
        ("json_schema", "{nope", "the JSON schema is not valid JSON"),
        ("json_schema", "[1, 2]", "a JSON schema must be a JSON object, got list"),
        ("json_schema", {"type": "string", "format": "nonsense"}, "Unknown format: nonsense"),
        ("json_schema", {"$ref": "#/definitions/missing"}, "does not exist"),
        ("json_schema", None, "needs its source"),
        ("json_object", {"type": "object"}, "json_object takes no schema"),
        ("regex", "[a-", "(?s)invalid regular expression: .*unclosed character class"),
        ("lark", "start: foo", '(?s)invalid Lark grammar: .*unknown name: "foo"'),
        ("gbnf", 'root ::= "a" missing', "(?s)invalid GBNF grammar: .*'missing' not found"),
        ("regex", 42, "a regular expression must be a string"),
        ("xml", "<a/>", "unknown constraint kind 'xml'"),
    ],
)
def test_bad_grammars_are_a_clear_400(compiler, kind, source, message):
    with pytest.raises(InvalidRequestError, match=message) as caught:
        compiler.compile(kind, source)
    assert caught.value.http_status == 400


def test_an_oversized_source_is_refused_before_compiling(compiler):
    huge = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5000)}}
    with pytest.raises(InvalidRequestError, match=r"at most 100000 are accepted"):
        compiler.compile("json_schema", huge)
    with pytest.raises(InvalidRequestError, match=r"regular expression has 100001 characters"):
        compiler.compile("regex", "a" * 100_001)


def test_a_grammar_beyond_the_limits_is_refused_not_left_running(tokenizer):
    tight = ConstraintCompiler(
        tokenizer, tokenizer.get_vocab_size(), 2, limits=ConstraintLimits(max_grammar_size=2000)
    )
    wide = {
        "anyOf": [
            {"type": "object", "properties": {f"k{i}_{j}": {"type": "integer"} for j in range(10)}}
            for i in range(50)
        ]
    }
    with pytest.raises(
        InvalidRequestError,
        match=r"invalid JSON schema: grammar size .* too big \(limit for this grammar: 2000\)",
    ):
        tight.compile("json_schema", wide)


def test_the_model_vocabulary_may_be_wider_than_the_tokenizer(tokenizer):
    padded = ConstraintCompiler(tokenizer, tokenizer.get_vocab_size() + 64, 2)
    constraint = padded.compile("json_object").start()
    assert constraint.fill().shape == (kernels.mask_words(tokenizer.get_vocab_size() + 64),)
    assert max(_allowed(constraint)) < tokenizer.get_vocab_size()
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        ConstraintCompiler(tokenizer, 100, 2)


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def model(manifest: Manifest) -> Iterator[ChatModel]:
    m = ChatModel(manifest, max_length=1024)
    yield m
    m.close()


def _prompt(model: ChatModel, system: str, user: str) -> list[int]:
    request = ChatCompletionRequest(
        messages=[
            ChatMessage(role="system", content=system),
            ChatMessage(role="user", content=user),
        ],
        model=SMOLLM2,
        stream=False,
    )
    return model.chat_prompt(request)


def _generate(
    model: ChatModel,
    grammar: Grammar,
    system: str,
    user: str,
    seed: int,
    max_tokens: int = 256,
    temperature: float = 0.8,
) -> tuple[str, str | None]:
    plan = GenerationPlan(
        sampling=kernels.SamplingConfig(temperature=temperature, top_p=0.95),
        max_tokens=max_tokens,
        seed=seed,
    )
    deltas = list(model.loop.run(_prompt(model, system, user), plan, constraint=grammar.start()))
    return "".join(d.text for d in deltas), deltas[-1].finish_reason


_S = {"type": "string", "minLength": 1, "maxLength": 40}
SCHEMAS: dict[str, dict[str, Any]] = {
    "person": PERSON,
    "product": {
        "type": "object",
        "properties": {
            "name": _S,
            "price": {"type": "number", "minimum": 0},
            "in_stock": {"type": "boolean"},
        },
        "required": ["name", "price", "in_stock"],
        "additionalProperties": False,
    },
    "weather": {
        "type": "object",
        "properties": {
            "city": _S,
            "condition": {"enum": ["sunny", "cloudy", "rainy", "snowy"]},
            "temperature_c": {"type": "integer", "minimum": -60, "maximum": 60},
        },
        "required": ["city", "condition", "temperature_c"],
        "additionalProperties": False,
    },
    "book": {
        "type": "object",
        "properties": {
            "title": _S,
            "author": _S,
            "tags": {"type": "array", "items": _S, "minItems": 1, "maxItems": 3},
        },
        "required": ["title", "author", "tags"],
        "additionalProperties": False,
    },
    "call": {
        "type": "object",
        "properties": {
            "name": {"const": "get_weather"},
            "arguments": {
                "type": "object",
                "properties": {"city": _S, "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    },
}
PROMPTS: list[tuple[str, str]] = [
    ("person", "Describe Marie Curie."),
    ("person", "Make up a character for a fantasy novel."),
    ("person", "Who is the oldest person you know of?"),
    ("person", "Tell me about a baby born today."),
    ("product", "What does a cup of coffee cost?"),
    ("product", "Describe a laptop that is sold out."),
    ("product", "Invent a new kind of sandwich for a menu."),
    ("product", "A bicycle for children."),
    ("weather", "What is the weather like in Oslo in January?"),
    ("weather", "Describe a summer day in Cairo."),
    ("weather", "Is it raining in London?"),
    ("weather", "Weather report for Tokyo."),
    ("book", "Recommend a science fiction novel."),
    ("book", "What is a famous book about whales?"),
    ("book", "Suggest a cookbook."),
    ("book", "Name a children's book."),
    ("call", "What's the weather in Paris?"),
    ("call", "Do I need an umbrella in Seattle today? I use Fahrenheit."),
    ("call", "How hot is it in Madrid right now?"),
    ("call", "Check the weather in Sydney for me, in celsius."),
]


def test_twenty_json_schema_generations_parse_and_validate(model, compiler):
    grammars = {name: compiler.compile("json_schema", schema) for name, schema in SCHEMAS.items()}
    outputs = []
    for seed, (name, user) in enumerate(PROMPTS):
        system = f"Answer only with JSON matching this schema: {json.dumps(SCHEMAS[name])}"
        text, reason = _generate(model, grammars[name], system, user, seed)
        assert reason == "stop", (name, user, text)
        document = json.loads(text)
        jsonschema.validate(document, SCHEMAS[name])
        outputs.append(text)
    assert len(set(outputs)) == len(outputs)  # varied prompts give varied answers


def test_json_object_output_parses(model, compiler):
    grammar = compiler.compile("json_object")
    text, reason = _generate(
        model,
        grammar,
        "You answer with one short JSON object.",
        'Give the color of a banana, like {"fruit": "apple", "color": "red"}.',
        seed=1,
        temperature=0.0,
    )
    assert reason == "stop", text
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize(
    ("kind", "source", "pattern"),
    [
        ("regex", r"(yes|no)\.", r"(yes|no)\."),
        ("gbnf", 'root ::= "Answer: " [0-9]+', r"Answer: [0-9]+"),
        (
            "lark",
            'start: "The capital is " CITY "."\nCITY: /[A-Z][a-z]+/',
            r"The capital is [A-Z][a-z]+\.",
        ),
    ],
)
def test_regex_and_grammars_hold_on_the_real_model(model, compiler, kind, source, pattern):
    text, reason = _generate(
        model,
        compiler.compile(kind, source),
        "You are a helpful assistant.",
        "What is the capital of France? Is it a large city? How many people live there?",
        seed=3,
        max_tokens=24,
    )
    assert reason == "stop", text
    assert re.fullmatch(pattern, text), text


def test_unconstrained_generation_is_unchanged_by_the_hook(model, compiler):
    prompt = _prompt(model, "You are a helpful assistant.", "Say hello.")
    plan = GenerationPlan(sampling=kernels.SamplingConfig(temperature=0.0), max_tokens=16)
    free = list(model.loop.run(prompt, plan))
    grammar = compiler.compile("regex", r"(?s:.*)")  # allows every text token and EOS
    anything = list(model.loop.run(prompt, plan, constraint=grammar.start()))
    assert free[-1].stats is not None
    assert anything[-1].stats is not None
    assert anything[-1].stats.token_ids == free[-1].stats.token_ids
