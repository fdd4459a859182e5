"""Summaries of latency samples: percentiles with min and max, warm-up already excluded."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["summarize"]


def summarize(samples: Sequence[float]) -> dict[str, float | int]:
    """p50/p95/p99/min/max/mean of ``samples`` (linear interpolation between ranks)."""
    if not samples:
        return {"n": 0}
    values = np.asarray(samples, dtype=np.float64)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "n": len(values),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
    }
