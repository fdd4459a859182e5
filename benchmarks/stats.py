"""Summaries of latency samples: percentiles with min and max, warm-up already excluded.

A percentile is given only from enough samples to mean something: p95 from 20, p99 from 100
(below that the tail is one or two samples, i.e. the maximum). A summary with fewer has
``few_samples: true`` and lacks those keys; p50, min, max and mean are always given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

__all__ = ["MIN_SAMPLES", "summarize"]

# The fewest samples a percentile is computed from.
MIN_SAMPLES: Final = {"p95": 20, "p99": 100}


def summarize(samples: Sequence[float]) -> dict[str, float | int | bool]:
    """p50/p95/p99/min/max/mean of ``samples`` (linear interpolation between ranks)."""
    if not samples:
        return {"n": 0}
    values = np.asarray(samples, dtype=np.float64)
    out: dict[str, float | int | bool] = {"n": len(values), "p50": float(np.median(values))}
    for name, fewest in MIN_SAMPLES.items():
        if len(values) >= fewest:
            out[name] = float(np.percentile(values, float(name[1:])))
    if len(values) < max(MIN_SAMPLES.values()):
        out["few_samples"] = True
    out.update(min=float(values.min()), max=float(values.max()), mean=float(values.mean()))
    return out
