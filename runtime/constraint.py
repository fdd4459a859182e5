"""Constrained decoding: a grammar turned into the sampler's allowed-token bitmask, token by token.

One job: compile a JSON schema, "any JSON object", a regex, a Lark grammar (llguidance's dialect)
or a GBNF grammar for one tokenizer with llguidance, then, per generated token, fill the
bitmask that `kernels.sample(..., allowed_mask=)` applies first, consume the sampled token, and
say when the grammar is complete or which tokens it forces. See `docs/constrained.md`.

- `ConstraintCompiler` is built once per tokenizer (building llguidance's token trie takes about a
  second) and is safe to share between threads; `compile` validates a request's grammar and
  raises `GrammarError` (an `InvalidRequestError` with status 400) naming what is wrong.
- `Grammar` is a compiled grammar; `start()` gives each sequence its own `Constraint`.
- `Constraint` is one sequence's matcher state: `fill()`, `consume(token)`, `done`,
  `accepting`, `forced_tokens()`. Not thread-safe; one per sequence.

Compilation is bounded: the source is capped in size and llguidance's own fuel and size limits
(`ConstraintLimits`) refuse a grammar that would take too long to build or step, with a message
rather than a hang. Nothing here loads anything from a hub: the tokenizer is the model's own.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import llguidance
import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from imagine_edge import kernels
from imagine_edge.sdk.errors import InvalidRequestError

if TYPE_CHECKING:  # a TypedDict of llguidance's stub only
    from llguidance._lib import JsonCompileOptions

__all__ = [
    "ANY_JSON_OBJECT",
    "Constraint",
    "ConstraintCompiler",
    "ConstraintKind",
    "ConstraintLimits",
    "Grammar",
    "GrammarCache",
    "GrammarError",
]

ConstraintKind = Literal["json_schema", "json_object", "regex", "lark", "gbnf"]

ANY_JSON_OBJECT: Final[Mapping[str, Any]] = {"type": "object"}
"""The schema behind ``json_object``: any JSON object."""

# JSON comes out in Python's json.dumps layout (", " and ": ", no other whitespace): a model
# cannot pad it with runaway whitespace, and the text is canonical.
# Strict: a keyword llguidance cannot enforce is an error ("lenient" off), never ignored.
_JSON_OPTIONS: Final[JsonCompileOptions] = {
    "item_separator": ", ",
    "key_separator": ": ",
    "whitespace_flexible": False,
    "lenient": False,
}


class GrammarError(InvalidRequestError):
    """A schema or grammar that cannot be compiled or followed: a 400 that says what is wrong.

    An `InvalidRequestError`, so callers and the server treat it as a bad request.
    """

    status_code = 400


@dataclass(frozen=True, slots=True)
class ConstraintLimits:
    """Bounds on compiling and stepping one grammar (llguidance's `LLParserLimits`, plus a cap on
    the source). The defaults keep a compile well under a second on a 2-core machine; anything
    beyond them is refused with a message, never left running."""

    max_source_chars: int = 100_000
    """Longest schema or grammar text accepted (characters of its JSON or grammar source)."""
    max_grammar_size: int = 200_000
    """Symbols in the compiled grammar's productions (llguidance's default is 500,000)."""
    initial_lexer_fuel: int = 1_000_000
    """Work allowed to build the lexer's regexes (about 50,000 per millisecond)."""
    step_lexer_fuel: int = 200_000
    """Lexer work allowed for one token's mask (about 14,000 per millisecond)."""
    step_max_items: int = 50_000
    """Earley items allowed for one token's mask (about 20,000 per millisecond)."""
    max_lexer_states: int = 20_000
    """Lexer states one sequence may build (each costs 1-2 kB of memory)."""

    def _llguidance(self) -> llguidance.LLParserLimits:
        return llguidance.LLParserLimits(
            max_grammar_size=self.max_grammar_size,
            initial_lexer_fuel=self.initial_lexer_fuel,
            step_lexer_fuel=self.step_lexer_fuel,
            step_max_items=self.step_max_items,
            max_lexer_states=self.max_lexer_states,
            verbose_errors=False,  # short messages for a 400, without parser state dumps
        )


class ConstraintCompiler:
    """Compiles grammars for one tokenizer and one model vocabulary.

    `vocab_size` is the width of the model's logits (at least the tokenizer's vocabulary; ids
    past the tokenizer's are never allowed). `eos_token_id` is the token the grammar allows once
    it is complete. Building takes about a second (llguidance indexes every token); build one per
    model and share it.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        vocab_size: int,
        eos_token_id: int,
        *,
        limits: ConstraintLimits | None = None,
    ) -> None:
        tokenizer_vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        if vocab_size < tokenizer_vocab:
            raise ValueError(
                f"vocab_size {vocab_size} is smaller than the tokenizer's {tokenizer_vocab} tokens"
            )
        if not 0 <= eos_token_id < vocab_size:
            raise ValueError(f"eos_token_id must be in [0, {vocab_size}), got {eos_token_id}")
        self.vocab_size: Final = vocab_size
        self.eos_token_id: Final = eos_token_id
        self.limits: Final = limits or ConstraintLimits()
        self._limits = self.limits._llguidance()
        self._tokenizer = llguidance.LLTokenizer(
            tokenizer.to_str(), n_vocab=vocab_size, eos_token=eos_token_id
        )

    def compile(
        self, kind: ConstraintKind, source: str | Mapping[str, Any] | None = None
    ) -> Grammar:
        """Compile one constraint; raises GrammarError saying what is wrong with it.

        - ``json_schema``: `source` is the schema (a mapping or its JSON text). Strict: a
          keyword llguidance cannot enforce is an error, never silently ignored.
        - ``json_object``: any JSON object; `source` must be None.
        - ``regex``: the whole output matches the pattern (Rust `regex` syntax).
        - ``lark``: a grammar in llguidance's Lark dialect (``start:`` is the top rule).
        - ``gbnf``: a llama.cpp GBNF grammar (``root ::=``), converted to Lark by llguidance.
        """
        text = self._grammar_text(kind, source)
        matcher = llguidance.LLMatcher(self._tokenizer, text, log_level=0, limits=self._limits)
        if matcher.is_error():
            raise GrammarError(f"invalid {_NAMES[kind]}: {matcher.get_error().strip()}")
        return Grammar(kind, matcher, self.vocab_size)

    def _grammar_text(self, kind: ConstraintKind, source: str | Mapping[str, Any] | None) -> str:
        if kind == "json_object":
            if source is not None:
                raise GrammarError("json_object takes no schema; use json_schema for one")
            source = ANY_JSON_OBJECT
        elif source is None:
            raise GrammarError(f"a {_NAMES[kind]} constraint needs its source")
        if kind in ("json_schema", "json_object"):
            return self._json_grammar(source)
        if not isinstance(source, str):
            raise GrammarError(f"a {_NAMES[kind]} must be a string")
        self._check_size(kind, source)
        if kind == "regex":
            return llguidance.LLMatcher.grammar_from_regex(source)
        if kind == "lark":
            return llguidance.LLMatcher.grammar_from_lark(source)
        if kind == "gbnf":
            try:
                return llguidance.grammar_from("gbnf", source)
            except ValueError as exc:
                raise GrammarError(f"invalid GBNF grammar: {exc}") from exc
        raise GrammarError(f"unknown constraint kind {kind!r}; use one of {', '.join(_NAMES)}")

    def _json_grammar(self, source: str | Mapping[str, Any]) -> str:
        if isinstance(source, str):
            self._check_size("json_schema", source)
            try:
                schema = json.loads(source)
            except json.JSONDecodeError as exc:
                raise GrammarError(f"the JSON schema is not valid JSON: {exc}") from exc
        else:
            schema = source
        if not isinstance(schema, Mapping):
            raise GrammarError(f"a JSON schema must be a JSON object, got {type(schema).__name__}")
        try:
            text = json.dumps(schema)
        except (TypeError, ValueError) as exc:
            raise GrammarError(f"the JSON schema cannot be serialized: {exc}") from exc
        self._check_size("json_schema", text)
        try:
            return llguidance.LLMatcher.grammar_from_json_schema(text, overrides=_JSON_OPTIONS)
        except ValueError as exc:
            raise GrammarError(f"invalid JSON schema: {exc}") from exc

    def _check_size(self, kind: ConstraintKind, text: str) -> None:
        if len(text) > self.limits.max_source_chars:
            raise GrammarError(
                f"the {_NAMES[kind]} has {len(text)} characters; at most "
                f"{self.limits.max_source_chars} are accepted"
            )


class GrammarCache:
    """A model's compiler, built on first use, and its most recently compiled grammars.

    Requests with the same tools or schema (an agent's every turn) compile once. Thread-safe.
    ``build`` makes the compiler (about a second: llguidance indexes the vocabulary).
    """

    def __init__(self, build: Callable[[], ConstraintCompiler], size: int = 32) -> None:
        self._build, self._size = build, size
        self._compiler: ConstraintCompiler | None = None
        self._grammars: OrderedDict[tuple[str, str], Grammar] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, kind: ConstraintKind, source: str | Mapping[str, Any] | None) -> Grammar:
        """`ConstraintCompiler.compile`, cached by kind and source text."""
        text = source if isinstance(source, str) or source is None else _canonical(source)
        key = (kind, "" if text is None else text)
        with self._lock:
            if (hit := self._grammars.get(key)) is not None:
                self._grammars.move_to_end(key)
                return hit
            if self._compiler is None:
                self._compiler = self._build()
            compiler = self._compiler
        grammar = compiler.compile(kind, source)
        with self._lock:
            self._grammars[key] = grammar
            while len(self._grammars) > self._size:
                self._grammars.popitem(last=False)
        return grammar


def _canonical(source: Mapping[str, Any]) -> str:
    try:
        return json.dumps(source, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise GrammarError(f"the JSON schema cannot be serialized: {exc}") from exc


class Grammar:
    """A compiled, validated grammar; `start()` gives each sequence its own `Constraint`."""

    def __init__(self, kind: ConstraintKind, matcher: llguidance.LLMatcher, vocab_size: int):
        self.kind: Final = kind
        self.vocab_size: Final = vocab_size
        self._matcher = matcher

    def start(self) -> Constraint:
        """A fresh matcher state at the start of the output."""
        return Constraint(self._matcher.deep_copy(), self.vocab_size)


class Constraint:
    """One sequence's position in its grammar, stepped once per generated token.

    Per token: `fill()` writes the allowed-token bitmask (``kernels.mask_words(vocab_size)``
    int32 words, llguidance's layout, which `kernels.sample` reads as ``allowed_mask``), the
    sampler draws among allowed tokens, `consume(token)` advances the grammar. `done` says the
    grammar allows nothing more (only EOS): the caller stops. `forced_tokens()` lists tokens
    the grammar fixes from here, whatever the model would pick.
    """

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self.mask: Final[npt.NDArray[np.int32]] = np.full(
            kernels.mask_words(vocab_size), -1, dtype=np.int32
        )
        self._mask_address = self.mask.ctypes.data
        self._mask_bytes = self.mask.nbytes

    def fill(self) -> npt.NDArray[np.int32]:
        """Compute the mask of tokens allowed next into `mask` and return it.

        Raises GrammarError when the grammar cannot go on (a step limit was hit).
        """
        self._matcher.unsafe_compute_mask_ptr(self._mask_address, self._mask_bytes)
        if self._matcher.is_error():
            raise GrammarError(f"the grammar cannot continue: {self._matcher.get_error()}")
        return self.mask

    def consume(self, token_id: int) -> None:
        """Advance past a sampled token. A token the mask did not allow is an error."""
        if not self._matcher.consume_token(int(token_id)):
            raise GrammarError(f"token {token_id} breaks the grammar: {self._matcher.get_error()}")

    @property
    def done(self) -> bool:
        """The grammar is complete and allows no more tokens (only EOS)."""
        return bool(self._matcher.is_stopped())

    @property
    def accepting(self) -> bool:
        """The output so far is a complete match (it may still go on)."""
        return bool(self._matcher.is_accepting())

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar fixes from the current position (empty when the model chooses)."""
        return [int(t) for t in self._matcher.compute_ff_tokens()]


_NAMES: Final[dict[str, str]] = {
    "json_schema": "JSON schema",
    "json_object": "JSON object constraint",
    "regex": "regular expression",
    "lark": "Lark grammar",
    "gbnf": "GBNF grammar",
}
