"""The process's memory in health: the whole proportional set size, split into named parts.

Parts (MiB, proportional: a page shared by several mappings or processes counts once, split):

- ``models``: how much the process grew while each loaded model loaded (measured around the
  load, one model at a time: sessions, weights, pre-packed buffers);
- ``runtime libraries``: shared libraries mapped (onnxruntime, numpy, tokenizers, Python's
  extensions), from ``/proc/self/smaps``;
- ``arenas, tensors and caches``: anonymous memory and mapped model files beyond the models'
  load growth and beyond what the process held when the engine started: onnxruntime's arenas,
  KV caches, request buffers;
- ``Python at start``: the anonymous memory the process held when the engine was created;
- ``the rest``: stacks and other mappings, and what the parts above do not explain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from imagine_edge.runtime.memory import memory_parts, process_resident_bytes
from imagine_edge.sdk.engine.worker import ModelState

__all__ = ["memory_accounting", "memory_summary"]

_MIB = 2**20


def memory_accounting(
    states: Sequence[ModelState], at_start: Mapping[str, int] | None
) -> dict[str, int] | None:
    """The named parts of the process's memory now (bytes); None where /proc is missing."""
    total, parts = process_resident_bytes(), memory_parts()
    if total is None or parts is None:
        return None
    start_heap = 0 if at_start is None else at_start.get("heap", 0)
    held = parts["heap"] + parts["model files"]
    models = min(held, sum(s.load_rss_bytes or 0 for s in states))
    start = min(held - models, start_heap)
    out = {
        "models": models,
        "runtime libraries": parts["libraries"],
        "arenas, tensors and caches": held - models - start,
        "Python at start": start,
    }
    out["the rest"] = max(0, total - sum(out.values()))
    return out


def memory_summary(states: Sequence[ModelState], at_start: Mapping[str, int] | None) -> str:
    """One health line: the process's total and its parts, in MiB."""
    parts = memory_accounting(states, at_start)
    total = process_resident_bytes()
    if parts is None or total is None:
        return "process memory: not measured (no /proc)"
    named = ", ".join(f"{name} {value / _MIB:.1f}" for name, value in parts.items())
    return f"process memory {total / _MIB:.1f} MiB (proportional): {named}"
