"""The bench report's PNG: one row per scenario, ours and the --compare peers side by side.

- Scenarios over client counts (the LLM): time to first token (log scale), time per output
  token, and throughput against the number of clients, one line per engine, each peer's
  throughput labelled with the ratio ours / peer at each count.
- Other scenarios: the headline latency (log scale) and the throughput per point, one bar per
  engine, each peer's throughput bar labelled with the ratio ours / peer.

Markers are p50; the error bars reach p95 where there were enough samples for one
(benchmarks/stats.py). Axes start at what the data needs (no empty half) and legends go where
they cover no data (``loc="best"``), or below the axes when there are many entries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["draw"]

_HEADLINE = ("ttft_s", "latency_s", "seconds_per_image", "e2e_s")
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _sources(scenario: Mapping[str, Any]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    ours = [("imagine-edge", list(scenario["points"]))]
    return ours + [(p["name"], list(p["points"])) for p in scenario.get("peers", []) if p["points"]]


def _throughput_key(points: Sequence[Mapping[str, Any]]) -> str | None:
    for p in points:
        for key in p["throughput"]:
            if key != "finished_requests":
                return str(key)
    return None


def _ms(metric: Mapping[str, Any] | None, key: str) -> float | None:
    if not metric or key not in metric:
        return None
    return float(metric[key]) * 1e3


def _legend(ax: Any, entries: int) -> None:
    if entries > 4:  # many lines: below the axes, never over the data
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3)
    elif entries:
        ax.legend(fontsize=7, loc="best", framealpha=0.85)


def _by_clients(fig: Any, grid: Any, row: int, scenario: Mapping[str, Any]) -> None:
    axes = [fig.add_subplot(grid[row, 2 * i : 2 * i + 2]) for i in range(3)]
    ttft, tpot, thr = axes
    lines: list[tuple[str, list[Mapping[str, Any]]]] = []
    for name, points in _sources(scenario):
        groups: dict[Any, list[Mapping[str, Any]]] = {}
        for p in points:
            groups.setdefault(p["params"].get("prompt_tokens"), []).append(p)
        for prompt, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
            label = name if len(groups) == 1 else f"{name}, prompt {prompt}"
            lines.append((label, sorted(group, key=lambda p: p["params"]["concurrency"])))
    key = _throughput_key(scenario["points"])
    ours_thr = {}
    for i, (label, group) in enumerate(lines):
        color = _COLORS[i % len(_COLORS)]
        xs = [p["params"]["concurrency"] for p in group]
        for ax, metric in ((ttft, "ttft_s"), (tpot, "tpot_s")):
            pairs = [
                (x, _ms(p["metrics"].get(metric), "p50"), _ms(p["metrics"].get(metric), "p95"))
                for x, p in zip(xs, group, strict=True)
            ]
            pairs = [(x, m, t) for x, m, t in pairs if m is not None]
            if pairs:
                px, med, tail = zip(*pairs, strict=True)
                upper = [max(0.0, (t or m) - m) for m, t in zip(med, tail, strict=True)]
                ax.errorbar(
                    px,
                    med,
                    yerr=[[0] * len(med), upper],
                    marker="o",
                    color=color,
                    label=label,
                    capsize=3,
                )
        if key is not None:
            ys = [p["throughput"].get(key, 0.0) for p in group]
            thr.plot(xs, ys, marker="o", color=color, label=label)
            if i == 0:
                ours_thr = dict(zip(xs, ys, strict=True))
            else:  # the ratio ours / this peer at each client count, in a band at the top
                band = 0.97 - 0.06 * (i - 1)
                for x, y in zip(xs, ys, strict=True):
                    if y and ours_thr.get(x):
                        thr.text(
                            x,
                            band,
                            f"ours x{ours_thr[x] / y:.2f}",
                            transform=thr.get_xaxis_transform(),
                            ha="center",
                            va="top",
                            fontsize=7,
                            color=color,
                        )
    ttft.set_yscale("log")
    _plain_log_ticks(ttft)
    ttft.set_ylabel("time to first token (ms, log)")
    tpot.set_ylabel("time per output token (ms)")
    tpot.set_ylim(bottom=0)
    thr.set_ylabel((key or "throughput").replace("_", " "))
    top = max((max(ln.get_ydata(), default=0.0) for ln in thr.get_lines()), default=0.0)
    if top > 0:  # the ratio band above the highest line
        thr.set_ylim(0, top * (1.12 + 0.08 * max(0, len(lines) - 1)))
    for ax in axes:
        clients = sorted({p["params"]["concurrency"] for _, g in lines for p in g})
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.set_xlabel("concurrent clients")
        ax.margins(x=0.1)  # room for the ratio labels at the first and last count
        _legend(ax, len(lines))
    title = _title(scenario)
    ttft.set_title(f"{title}: TTFT (p50, bar to p95)", fontsize=9)
    tpot.set_title("TPOT (p50, bar to p95)", fontsize=9)
    thr.set_title("throughput; labels: ratio ours / peer", fontsize=9)


def _per_point(fig: Any, grid: Any, row: int, scenario: Mapping[str, Any]) -> None:
    import numpy as np

    left = fig.add_subplot(grid[row, 0:3])
    right = fig.add_subplot(grid[row, 3:6])
    sources = _sources(scenario)
    labels = [p["label"] for p in scenario["points"]]
    metric = next(
        (n for n in _HEADLINE if any(n in p["metrics"] for p in scenario["points"])), None
    )
    key = _throughput_key(scenario["points"])
    width = 0.8 / max(1, len(sources))
    xs = np.arange(len(labels))
    ours_thr = {p["label"]: p["throughput"].get(key or "", 0.0) for p in scenario["points"]}
    for i, (name, points) in enumerate(sources):
        by_label = {p["label"]: p for p in points}
        offset = (i - (len(sources) - 1) / 2) * width
        color = _COLORS[i % len(_COLORS)]
        if metric is not None:
            med = [_ms(by_label.get(lb, {}).get("metrics", {}).get(metric), "p50") for lb in labels]
            tail = [
                _ms(by_label.get(lb, {}).get("metrics", {}).get(metric), "p95") for lb in labels
            ]
            heights = [m or 0.0 for m in med]
            upper = [max(0.0, (t or m or 0.0) - (m or 0.0)) for m, t in zip(med, tail, strict=True)]
            left.bar(
                xs + offset,
                heights,
                width,
                color=color,
                label=name,
                yerr=[[0] * len(upper), upper],
                capsize=2,
            )
        if key is not None:
            values = [by_label.get(lb, {}).get("throughput", {}).get(key, 0.0) for lb in labels]
            bars = right.bar(xs + offset, values, width, color=color, label=name)
            if i > 0:
                for bar, lb, v in zip(bars, labels, values, strict=True):
                    if v and ours_thr.get(lb):
                        right.annotate(
                            f"ours x{ours_thr[lb] / v:.2f}",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            textcoords="offset points",
                            xytext=(0, 2),
                            ha="center",
                            fontsize=7,
                        )
    for ax in (left, right):
        ax.set_xticks(xs, labels, rotation=20, ha="right", fontsize=7)
        _legend(ax, len(sources))
    if metric is not None:
        left.set_yscale("log")
        _plain_log_ticks(left)
        left.set_ylabel(f"{metric.removesuffix('_s')} (ms, log)")
    right.set_ylabel((key or "throughput").replace("_", " "))
    top = max((b.get_height() for b in right.patches), default=0.0)
    if top > 0:
        right.set_ylim(0, top * 1.18)  # room for the ratio labels, no more
    left.set_title(f"{_title(scenario)}: latency (p50, bar to p95)", fontsize=9)
    right.set_title("throughput; labels: ratio ours / peer", fontsize=9)


def _plain_log_ticks(ax: Any) -> None:
    """Log-scale ticks read as plain numbers (200, not 2x10^2)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


def _title(scenario: Mapping[str, Any]) -> str:
    return f"{scenario['model_type']} {scenario['model']} [{scenario['transport']}]"


def draw(report: Mapping[str, Any], path: Path) -> None:
    """Write the chart of ``report`` to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = [s for s in report["scenarios"] if s["points"]]
    rows = max(1, len(scenarios))
    fig = plt.figure(figsize=(15, 4.4 * rows))
    grid = fig.add_gridspec(rows, 6)
    for row, scenario in enumerate(scenarios):
        if any("concurrency" in p["params"] for p in scenario["points"]):
            _by_clients(fig, grid, row, scenario)
        else:
            _per_point(fig, grid, row, scenario)
    load = report["machine"].get("load_average") or ["?"]
    load_1 = f"{load[0]:.2f}" if isinstance(load[0], float) else load[0]
    fig.suptitle(
        f"imagine-edge bench, {report['created']} on {report['machine']['cpu_model']} "
        f"({report['machine']['cores']} cores, load average {load_1} at start)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
