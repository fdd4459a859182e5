"""Where a model runs: the one target parser (cpu | qnn | auto), its environment variables, and
the decision ``auto`` makes.

Every model type reads its target from ``IMAGINE_EDGE_<MODEL TYPE>_TARGET`` (the contract's
``ModelType`` value in capitals: ``IMAGINE_EDGE_LLM_TARGET``, ``IMAGINE_EDGE_EMBEDDING_TARGET``,
``IMAGINE_EDGE_RERANKER_TARGET``, ``IMAGINE_EDGE_TEXT_TO_IMAGE_TARGET``,
``IMAGINE_EDGE_TRANSCRIBE_TARGET``, ``IMAGINE_EDGE_TRANSLATE_TARGET``); unset means ``cpu``, since
on x86-64 the QNN HTP is a simulator far slower than the CPU EP. The values mean the same for
every model:

- ``cpu``: the model's CPU graphs on the CPU EP.
- ``qnn``: the model's QNN graphs with every node on the HTP; a model without prepared QNN
  graphs is a :class:`ModelUnavailableError`, a graph QNN cannot place a :class:`ModelRunError`.
- ``auto``: the QNN graphs when the model has them prepared and QNN places every node, else the
  CPU graphs, as a logged decision whose reason the model shows in its execution provider.
  ``auto`` never prepares QNN graphs (that takes minutes); ``qnn`` may.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, Literal, TypeVar

from imagine_edge.sdk.errors import ModelRunError, ModelUnavailableError
from imagine_edge.sdk.types import ModelType

__all__ = [
    "NO_QNN_GRAPHS",
    "TARGETS",
    "Placed",
    "Target",
    "parse_target",
    "place",
    "target_from_env",
    "target_variable",
]

log = logging.getLogger(__name__)

Target = Literal["cpu", "qnn", "auto"]
TARGETS: Final[tuple[Target, ...]] = ("cpu", "qnn", "auto")
# The fallback reason of ``auto`` for a model without QNN graphs.
NO_QNN_GRAPHS: Final = "no prepared QNN graphs"

T = TypeVar("T")


def parse_target(raw: str, *, source: str = "target") -> Target:
    """``raw`` as a :data:`Target`; a ValueError naming ``source`` and the valid values."""
    for target in TARGETS:
        if raw == target:
            return target
    raise ValueError(f"{source} must be cpu, qnn or auto, got {raw!r}")


def target_variable(model_type: ModelType) -> str:
    """The environment variable that holds the target of ``model_type``'s models."""
    return f"IMAGINE_EDGE_{model_type.value.upper()}_TARGET"


def target_from_env(model_type: ModelType) -> Target:
    """The target of ``model_type``'s models from the environment (default ``cpu``)."""
    name = target_variable(model_type)
    return parse_target(os.environ.get(name, "cpu"), source=name)


@dataclass(frozen=True, slots=True)
class Placed(Generic[T]):
    """What :func:`place` opened, and why it is not on QNN when ``auto`` fell back."""

    value: T
    fallback: str | None = None

    def describe(self, provider: str) -> str:
        """``provider``, followed by the fallback reason when there is one."""
        return provider + (f" (fallback: {self.fallback})" if self.fallback else "")


def place(
    target: Target,
    name: str,
    *,
    qnn: Callable[[], T] | None,
    cpu: Callable[[], T],
) -> Placed[T]:
    """Open model ``name`` on ``target`` with ``qnn`` (None: it has no QNN graphs) or ``cpu``.

    See the module docstring for what each target means. ``qnn`` must raise ModelRunError when
    QNN cannot run its graphs (and release whatever it opened).
    """
    if target == "cpu":
        return Placed(cpu())
    if qnn is None:
        if target == "qnn":
            raise ModelUnavailableError(f"{name} has {NO_QNN_GRAPHS}")
        reason = NO_QNN_GRAPHS
    else:
        try:
            return Placed(qnn())
        except ModelRunError as exc:
            if target == "qnn":
                raise
            reason = exc.message or "QNN failed"
    log.warning("%s: running on the CPU EP: %s", name, reason)
    return Placed(cpu(), fallback=reason)
