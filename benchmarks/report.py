"""The benchmark report: a terminal table, a JSON file (``schema.json``) and a PNG chart."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_PATH", "render_table", "write_chart", "write_json"]

SCHEMA_PATH = Path(__file__).with_name("schema.json")

# The metric whose percentiles a scenario's table rows and chart show first.
_HEADLINE = ("ttft_s", "latency_s", "seconds_per_image", "e2e_s")


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    if value >= 1e-3:
        return f"{value * 1e3:.1f}m"
    return f"{value * 1e6:.0f}u"


def render_table(report: Mapping[str, Any]) -> str:
    """A plain-text table of every point: headline latency percentiles and throughput."""
    lines = []
    machine = report["machine"]
    lines.append(
        f"{machine['cpu_model']} ({machine['cores']} cores), {machine['system']}, "
        f"kernels {machine['kernels_backend']}, QNN {machine['qnn']}"
    )
    load = machine.get("load_average")
    if load:
        end = report.get("load_average_end") or ["?"]
        end_1 = f"{end[0]:.2f}" if isinstance(end[0], float) else end[0]
        lines.append(f"load average (1 min) {load[0]:.2f} at start, {end_1} at the end")
    for scenario in report["scenarios"]:
        lines.append("")
        lines.append(
            f"== {scenario['model_type']}: {scenario['model']} [{scenario['transport']}] "
            f"on {scenario['execution_provider']}"
        )
        if scenario.get("error"):
            lines.append(f"   failed: {scenario['error']}")
            continue
        sources = [{"name": "imagine-edge", "points": scenario["points"]}, *scenario["peers"]]
        lines.extend(
            f"   {source['name']:>17} | {point['label']:<32} | {_point_row(point)}"
            for source in sources
            for point in source["points"]
        )
        lines.extend(
            f"   {source['name']:>17} | {source[key]}"
            for source in sources
            for key in ("note", "error")
            if source.get(key)
        )
        ratios = scenario.get("ratios", {})
        if ratios:
            lines.append("   ratios, ours / the peer's (p50 for latencies):")
            lines.extend(f"   {name}: {ratio:.2f}x" for name, ratio in ratios.items())
    return "\n".join(lines)


def _point_row(point: Mapping[str, Any]) -> str:
    cells = []
    metrics = point["metrics"]
    for name in _HEADLINE:
        m = metrics.get(name)
        if m and m.get("n"):
            tail = "".join(f" {q} {_fmt(m[q])}" for q in ("p95", "p99") if q in m)
            few = f" (n={m['n']}: too few for p95/p99)" if "p95" not in m else ""
            extremes = f" min {_fmt(m['min'])} max {_fmt(m['max'])}"
            cells.append(f"{name} p50 {_fmt(m['p50'])}{tail}{extremes}{few}")
            break
    for name in ("tpot_s", "rtf"):
        m = metrics.get(name)
        if m and m.get("n"):
            cells.append(f"{name} p50 {_fmt(m['p50'])}")
    cells.extend(f"{k} {v:.1f}" for k, v in point["throughput"].items())
    if point.get("errors"):
        cells.append(f"errors {point['errors']}")
    return " | ".join(cells)


def write_json(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def write_chart(report: Mapping[str, Any], path: Path) -> None:
    """One row per scenario, ours and the --compare peers side by side (chart.py)."""
    from imagine_edge.benchmarks.chart import draw

    draw(report, path)
