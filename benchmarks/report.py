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
            cells.append(
                f"{name} p50 {_fmt(m['p50'])} p95 {_fmt(m['p95'])} p99 {_fmt(m['p99'])} "
                f"min {_fmt(m['min'])} max {_fmt(m['max'])}"
            )
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
    """Latency percentiles per point, and throughput against concurrency where measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [s for s in report["scenarios"] if s["points"]]
    rows = max(1, len(scenarios))
    fig, axes = plt.subplots(rows, 2, figsize=(13, 3.6 * rows), squeeze=False)
    for (left, right), scenario in zip(axes, scenarios, strict=False):
        points = scenario["points"]
        name = next((n for n in _HEADLINE if any(n in p["metrics"] for p in points)), None)
        labels = [p["label"] for p in points]
        if name is not None:
            xs = range(len(points))
            for offset, pct in zip((-0.25, 0.0, 0.25), ("p50", "p95", "p99"), strict=True):
                values = [p["metrics"].get(name, {}).get(pct, 0.0) * 1e3 for p in points]
                left.bar([x + offset for x in xs], values, width=0.25, label=pct)
            left.set_xticks(list(xs), labels, rotation=30, ha="right", fontsize=7)
            left.set_ylabel(f"{name.removesuffix('_s')} (ms)")
            left.legend(fontsize=7)
        left.set_title(
            f"{scenario['model_type']}: {scenario['model']} [{scenario['transport']}]", fontsize=9
        )
        concurrency = [p for p in points if "concurrency" in p["params"]]
        if concurrency:
            by_prompt: dict[Any, list[Mapping[str, Any]]] = {}
            for p in concurrency:
                by_prompt.setdefault(p["params"].get("prompt_tokens"), []).append(p)
            for prompt, group in sorted(by_prompt.items()):
                right.plot(
                    [p["params"]["concurrency"] for p in group],
                    [p["throughput"].get("output_tokens_per_s", 0.0) for p in group],
                    marker="o",
                    label=f"prompt {prompt}",
                )
            right.set_xlabel("concurrency")
            right.set_ylabel("output tokens/s")
            right.legend(fontsize=7)
            right.set_title("throughput against concurrency", fontsize=9)
        else:
            key = next(iter(points[0]["throughput"]), None)
            if key:
                right.bar(labels, [p["throughput"].get(key, 0.0) for p in points])
                right.set_ylabel(key)
                right.tick_params(axis="x", labelrotation=30, labelsize=7)
            right.set_title("throughput", fontsize=9)
    fig.suptitle(
        f"imagine-edge bench, {report['created']} on {report['machine']['cpu_model']}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
