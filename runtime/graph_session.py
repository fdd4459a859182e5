"""The session contract: an open graph as models see it, without onnxruntime's API.

Owns :class:`LoadedSession`, what the session factory (runtime/session.py) returns: the graph's
inputs and outputs (:class:`TensorInfo`, numpy dtypes), ``run`` and ``close``, and the facts of
where it runs that health and benchmarks report (:func:`session_summary`). Models run graphs
only through it; the onnxruntime session inside (``session``) is for the runtime's own decoders,
which bind buffers to it.

Invariants: ``run`` returns the outputs in the order asked (all outputs, in graph order, for
None) as numpy arrays, and passes onnxruntime's errors through unchanged; after ``close`` the
session is gone (``session`` is None) and ``run`` raises ModelRunError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from imagine_edge.runtime.ort_names import numpy_dtype
from imagine_edge.sdk.errors import ModelRunError

if TYPE_CHECKING:
    import onnxruntime as ort

__all__ = ["LoadedSession", "TensorInfo", "session_summary"]

# A dimension: its size, or its symbolic name (or None) when the graph leaves it open.
Dim = int | str | None


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One input or output of a graph."""

    name: str
    shape: tuple[Dim, ...]
    # The numpy dtype of its element type; None for a type numpy has no match for here.
    dtype: type[np.generic] | None

    @property
    def static(self) -> bool:
        """Whether every dimension is a fixed size."""
        return all(isinstance(d, int) for d in self.shape)


def _infos(args: Sequence[Any]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(a.name, tuple(a.shape), numpy_dtype(a.type)) for a in args)


@dataclass(slots=True)
class LoadedSession:
    """An open session and the facts about where it runs."""

    session: ort.InferenceSession | None
    provider: str
    path: Path
    fallback_reason: str | None = None
    node_assignment: dict[str, int] = field(default_factory=dict)
    # True when the session was loaded from the EPContext cache instead of compiled.
    from_epcontext_cache: bool = False
    # The optimized copy with memory-mapped pre-packed weights it runs, if any (runtime/prepacked).
    prepacked: Path | None = None

    def _open(self) -> ort.InferenceSession:
        if self.session is None:
            raise ModelRunError(f"the session of {self.path.name} is closed")
        return self.session

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return _infos(self._open().get_inputs())

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return _infos(self._open().get_outputs())

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def run(
        self, feeds: Mapping[str, npt.NDArray[Any]], outputs: Sequence[str] | None = None
    ) -> list[npt.NDArray[Any]]:
        """The ``outputs`` (default: all) of the graph run on ``feeds``."""
        result: list[npt.NDArray[Any]] = self._open().run(
            None if outputs is None else list(outputs), dict(feeds)
        )
        return result

    def describe(self) -> str:
        """One line for health and bench: the EP, and why not QNN when it fell back."""
        if self.fallback_reason:
            return f"{self.provider} (fallback: {self.fallback_reason})"
        return self.provider

    def close(self) -> None:
        # Dropping the last reference frees the session's weights and arenas.
        self.session = None


def session_summary(loaded: LoadedSession) -> dict[str, Any]:
    """A JSON-ready description of a session, for health and benchmark reports."""
    return {
        "file": loaded.path.name,
        "provider": loaded.provider,
        "fallback_reason": loaded.fallback_reason,
        "node_assignment": loaded.node_assignment,
        "from_epcontext_cache": loaded.from_epcontext_cache,
        "prepacked_weights": str(loaded.prepacked) if loaded.prepacked else None,
    }
