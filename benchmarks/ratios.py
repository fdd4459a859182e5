"""The ratios ``--compare`` reports: ours / the peer's for each measure of a model type, at
each point both measured (a throughput, or a metric's p50)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from imagine_edge.sdk.types import ModelType

__all__ = ["MULTI_CLIENT_RATIOS", "RATIOS", "Ratio", "ratios"]


@dataclass(frozen=True, slots=True)
class Ratio:
    """A measure compared as ours / the peer's: a throughput, or a metric's p50."""

    label: str
    name: str
    higher_is_better: bool
    throughput: bool = False

    def of(self, point: dict[str, Any]) -> float | None:
        if self.throughput:
            value = point["throughput"].get(self.name)
        else:
            value = (point["metrics"].get(self.name) or {}).get("p50")
        return float(value) if value else None

    def key(self, peer: str, label: str) -> str:
        better = "higher" if self.higher_is_better else "lower"
        return f"{self.label} vs {peer} ({label}), {better} is better"


RATIOS: dict[str, tuple[Ratio, ...]] = {
    ModelType.LLM.value: (
        Ratio("decode tokens/s", "decode_tokens_per_s", higher_is_better=True),
        Ratio("TTFT", "ttft_s", higher_is_better=False),
    ),
    ModelType.EMBEDDING.value: (
        Ratio("sentences/s", "sentences_per_s", higher_is_better=True, throughput=True),
    ),
    ModelType.TRANSCRIBE.value: (
        # Seconds of compute per second of audio.
        Ratio("real-time factor", "rtf", higher_is_better=False),
    ),
    ModelType.TRANSLATE.value: (
        Ratio("sentences/s", "sentences_per_s", higher_is_better=True, throughput=True),
        Ratio("output tokens/s", "output_tokens_per_s", higher_is_better=True, throughput=True),
        Ratio("latency", "latency_s", higher_is_better=False),
    ),
}


def ratios(scenario: dict[str, Any], measures: Sequence[Ratio] | None = None) -> dict[str, float]:
    """Ours / the peer's for each measure of the type, at each point both measured (by label)."""
    if measures is None:
        measures = RATIOS.get(scenario["model_type"], ())
    ours = {p["label"]: p for p in scenario["points"]}
    ratios: dict[str, float] = {}
    for peer in scenario["peers"]:
        for theirs in peer["points"]:
            mine = ours.get(theirs["label"])
            if mine is None:
                continue
            for measure in measures:
                a, b = measure.of(mine), measure.of(theirs)
                if a and b:
                    ratios[measure.key(peer["name"], theirs["label"])] = a / b
    return ratios


# The multi-client scenario's measures (benchmarks/multi_client.py).
MULTI_CLIENT_RATIOS: Final = (
    Ratio("aggregate tokens/s", "aggregate_tokens_per_s", higher_is_better=True, throughput=True),
    Ratio("TTFT", "ttft_s", higher_is_better=False),
    Ratio("TPOT", "tpot_s", higher_is_better=False),
)
