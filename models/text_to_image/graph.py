"""One ONNX graph of the pipeline, with the facts about its inputs the pipeline adapts to.

Exports differ in input dtypes (float16, int32 ids), timestep rank (a scalar or one per batch
row) and static shapes (QNN graphs take batch 1): the pipeline reads them here rather than
assuming one exporter's choices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imagine_edge.runtime.graph_session import LoadedSession
from imagine_edge.runtime.session import shared_factory
from imagine_edge.runtime.targets import Target

__all__ = ["PipelineGraph"]

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class PipelineGraph:
    """A session with the facts about its inputs the pipeline adapts to."""

    loaded: LoadedSession
    dtypes: Mapping[str, Any]
    ranks: Mapping[str, int]
    static: Mapping[str, tuple[int, ...]]  # inputs whose every dimension is fixed
    output: str

    @classmethod
    def open(cls, path: Path, target: Target, output: str) -> PipelineGraph:
        """A session of ``path`` on ``target`` that returns ``output`` (else its first output)."""
        # No CPU arena: the working memory grows with the image size (~500 MiB at 1024x1024 for
        # tiny-sd), and an arena would keep that peak for good.
        loaded = shared_factory().create(path, target=target, cpu_arena=False)
        inputs = loaded.inputs
        names = loaded.output_names
        return cls(
            loaded=loaded,
            # An input of a type the dtype table lacks is fed float32.
            dtypes={i.name: i.dtype or np.float32 for i in inputs},
            ranks={i.name: len(i.shape) for i in inputs},
            static={
                i.name: tuple(d for d in i.shape if isinstance(d, int)) for i in inputs if i.static
            },
            output=output if output in names else names[0],
        )

    def batch_size(self, name: str) -> int | None:
        """The static batch dimension of input ``name``; None when it is dynamic."""
        shape = self.static.get(name)
        return shape[0] if shape else None

    def run(self, feeds: Mapping[str, npt.NDArray[Any]], batched: Sequence[str]) -> F32:
        """Run, splitting the ``batched`` inputs into chunks a static batch dimension takes."""
        feeds = {k: np.asarray(v, dtype=self.dtypes.get(k, np.float32)) for k, v in feeds.items()}
        n = feeds[batched[0]].shape[0]
        size = self.batch_size(batched[0]) or n
        outs = []
        for start in range(0, n, size):
            part = dict(feeds)
            for name in batched:
                chunk = feeds[name][start : start + size]
                if len(chunk) < size:  # pad the last chunk of a static batch with its first row
                    chunk = np.concatenate([chunk, np.repeat(chunk[:1], size - len(chunk), 0)])
                part[name] = chunk
            result = self.loaded.run(part, [self.output])[0]
            outs.append(result[: min(size, n - start)])
        return np.concatenate(outs).astype(np.float32, copy=False)
