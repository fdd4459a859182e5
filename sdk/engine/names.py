"""Model names: which card serves a request for a name, and what /models lists.

A name is a card's name or alias (case-insensitive), or the official client's default name of a
type (docs/contract.md, Transport), which means that type's local default: the card marked
``default``, else
the first card of the type. An unknown name is a 404 (:class:`ModelNotFoundError`); a type with no
model at all is a 409 (:class:`ModelUnavailableError`) that says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from imagine_edge.models.base import ModelCard
from imagine_edge.sdk.errors import InvalidRequestError, ModelNotFoundError, ModelUnavailableError
from imagine_edge.sdk.types import ModelType

__all__ = ["CLIENT_DEFAULT_NAMES", "ModelIndex", "client_alias"]

# The names the official client sends when the caller gives no model (docs/contract.md, Transport).
CLIENT_DEFAULT_NAMES: Final[Mapping[ModelType, str]] = {
    ModelType.LLM: "Llama-3.1-8B",
    ModelType.EMBEDDING: "BAAI/bge-large-en-v1.5",
    ModelType.RERANKER: "BAAI/bge-reranker-base",
    ModelType.TEXT_TO_IMAGE: "sdxl-turbo",
    ModelType.TRANSCRIBE: "whisper-tiny",
    ModelType.TRANSLATE: "Helsinki-NLP/opus-mt-en-es",
}


# A translate model is a language pair: the client's default (English to Spanish) must not
# silently answer in another language, so it is never an alias.
_NOT_ALIASED: Final = frozenset({ModelType.TRANSLATE})


def client_alias(model_type: ModelType) -> str | None:
    """The official client's default name that means this type's local default, if any."""
    return None if model_type in _NOT_ALIASED else CLIENT_DEFAULT_NAMES[model_type]


class ModelIndex:
    """The cards of an engine, by name, alias and type."""

    def __init__(self, cards: Sequence[ModelCard]) -> None:
        self._cards = {card.name: card for card in cards}
        if len(self._cards) != len(cards):
            raise ValueError(f"model names must be unique, got {[c.name for c in cards]}")
        self._defaults = {t: self._pick_default(t) for t in ModelType}
        self._index = self._build_index()

    def _pick_default(self, model_type: ModelType) -> ModelCard | None:
        of_type = [c for c in self._cards.values() if c.model_type == model_type]
        return next((c for c in of_type if c.default), of_type[0] if of_type else None)

    def _build_index(self) -> dict[str, str]:
        index: dict[str, str] = {}
        for card in self._cards.values():
            for key in (card.name, *card.aliases):
                if index.setdefault(key.lower(), card.name) != card.name:
                    raise ValueError(f"name {key!r} is used by {index[key.lower()]!r} too")
        for model_type, default in self._defaults.items():
            alias = client_alias(model_type)
            if default is not None and alias is not None:
                index.setdefault(alias.lower(), default.name)
        return index

    @property
    def cards(self) -> tuple[ModelCard, ...]:
        """Every model this engine can serve."""
        return tuple(self._cards.values())

    def default_card(self, model_type: ModelType) -> ModelCard | None:
        """The model used for ``model_type`` when a request names its client default."""
        return self._defaults[model_type]

    def aliases(self) -> dict[str, str]:
        """Every alias (card aliases and the client's default names) -> the model it means."""
        return {alias: card.name for card in self._cards.values() for alias in card.aliases} | {
            alias: card.name
            for t, card in self._defaults.items()
            if card and (alias := client_alias(t)) is not None
        }

    def lookup(self, name: str) -> ModelCard | None:
        """The card called ``name`` or aliased so, of any type."""
        found = self._index.get(name.strip().lower())
        return None if found is None else self._cards[found]

    def lookup_strict(self, name: str) -> ModelCard:
        """Like :meth:`lookup`, raising 404 with the known names."""
        card = self.lookup(name)
        if card is None:
            known = ", ".join(self._cards) or "none"
            raise ModelNotFoundError(f"unknown model {name!r}; the models here are: {known}")
        return card

    def resolve(self, name: str, model_type: ModelType) -> ModelCard:
        """The card that serves a request for ``name`` with a model of ``model_type``."""
        if self._defaults[model_type] is None:
            served = sorted({c.model_type.value for c in self._cards.values()})
            raise ModelUnavailableError(
                f"no {model_type.value} model is available here (requested {name!r}); this "
                f"build serves: {', '.join(served) or 'no models'}"
            )
        card = self.lookup(name)
        if card is None:
            names = ", ".join(c.name for c in self._cards.values() if c.model_type == model_type)
            raise ModelNotFoundError(
                f"unknown {model_type.value} model {name!r}; available: {names} (or "
                f"{CLIENT_DEFAULT_NAMES[model_type]!r} for the default)"
            )
        if card.model_type != model_type:
            default = self._defaults[model_type]
            assert default is not None  # checked above
            raise InvalidRequestError(
                f"model {name!r} is of type {card.model_type.value!r}; this request needs a "
                f"model of type {model_type.value!r}, such as {default.name!r}"
            )
        return card

    def models(self, model_type: ModelType | None = None) -> dict[ModelType, list[str]]:
        """Model names by type; every type is present, with [] when it has no model."""
        types = list(ModelType) if model_type is None else [model_type]
        return {t: [c.name for c in self._cards.values() if c.model_type == t] for t in types}
