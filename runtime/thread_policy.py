"""Choosing, step by step, which of several equivalent sessions runs the next decode step.

Why: a decode step is ~700 small kernels, and how onnxruntime's intra-op workers wait between
them decides its speed. Measured on the 2-core development machine, SmolLM2, same graph, side by
side:
- idle cores: workers that spin during a run (and stop when it returns) 110 tok/s, sleeping 80;
- one other busy process: spinning 54 tok/s, sleeping 74.
Neither wins everywhere, and the load on a device changes while it runs. So the LLM keeps one
session of each kind (they share memory-mapped pre-packed weights: ~5 MiB for the second) and
:class:`AdaptivePolicy` picks between them from measured step times: it runs the faster, and
re-measures the others every ``period`` steps, or at once when the current one slows markedly.
The sessions compute the same numbers, so switching never changes the output.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["AdaptivePolicy", "FixedPolicy", "StepPolicy"]


class StepPolicy(Protocol):
    """Which session (an index, "arm") runs the next step; fed each step's measured time."""

    @property
    def preferred(self) -> int:
        """The arm for work that is not measured (a prompt's prefill)."""
        ...

    def choose(self) -> int: ...

    def record(self, arm: int, seconds: float) -> None: ...

    def describe(self) -> str: ...

    def stats(self) -> dict[str, Any]: ...


class FixedPolicy:
    """Always the same arm."""

    def __init__(self, name: str, arm: int = 0) -> None:
        self._name = name
        self._arm = arm

    @property
    def preferred(self) -> int:
        return self._arm

    def choose(self) -> int:
        return self._arm

    def record(self, arm: int, seconds: float) -> None:
        pass

    def describe(self) -> str:
        return self._name

    def stats(self) -> dict[str, Any]:
        return {"policy": "fixed", "current": self._name}


class AdaptivePolicy:
    """Explore-then-exploit over ``names`` (one per session), re-probing as the load changes.

    - A probe runs ``probe`` measured steps on each arm in turn. The first step after a switch
      is not measured: its workers are waking up (or still spinning down).
    - After a probe the arm with the lowest median step time becomes current, if it beats the
      current one by more than ``margin`` (hysteresis, so noise does not flip it back and forth:
      beside a busy process, 4-step probes with a 5% margin switched 4 times in 700 steps).
    - The next probe comes after ``period`` steps on the current arm, or as soon as its median
      over the last ``probe`` steps exceeds ``slowdown`` times what it was at the decision.
      Each probe that confirms the choice doubles the period, up to ``max_backoff`` times; a
      switch or a slowdown resets it. A probe spends 7 steps on the slower arm: with the arms
      30% apart that costs ~2% of the speed at the base period and ~0.5% when backed off.

    Not thread-safe: one decoder steps one sequence at a time.
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        period: int = 96,
        probe: int = 6,
        margin: float = 0.10,
        slowdown: float = 1.3,
        max_backoff: int = 4,
    ) -> None:
        if len(names) < 2:
            raise ValueError("an adaptive policy needs at least two arms")
        if probe < 1 or period < 1:
            raise ValueError("probe and period must be positive")
        self.names = tuple(names)
        self.period = period
        self.probe = probe
        self.margin = margin
        self.slowdown = slowdown
        self.max_backoff = max_backoff
        self._backoff = 1  # the period's multiple: doubles while probes confirm the choice
        self._samples: list[deque[float]] = [deque(maxlen=probe) for _ in names]
        self._current = 0
        self._baseline = 0.0
        self._since_decision = 0
        self._last_arm = -1
        self._plan: deque[int] = deque()
        self._measured: dict[int, float] = {}  # median step time per arm at the last decision
        self.switches = 0
        self.probes = 0
        self._schedule_probe()

    @property
    def preferred(self) -> int:
        return self._current

    def choose(self) -> int:
        return self._plan[0] if self._plan else self._current

    def record(self, arm: int, seconds: float) -> None:
        probing = bool(self._plan)
        if probing and arm == self._plan[0]:
            self._plan.popleft()
        warming = arm != self._last_arm
        self._last_arm = arm
        if not warming:
            self._samples[arm].append(seconds)
        if probing:
            if not self._plan:
                self._decide()
            return
        self._since_decision += 1
        recent = self._samples[self._current]
        slowed = (
            len(recent) == self.probe
            and self._baseline > 0
            and statistics.median(recent) > self.slowdown * self._baseline
        )
        if self._since_decision >= self.period * self._backoff or slowed:
            if slowed:
                self._backoff = 1
            self._schedule_probe()

    def _schedule_probe(self) -> None:
        """Measure every other arm afresh, then the current one again (its samples may be old)."""
        self.probes += 1
        others = [a for a in range(len(self.names)) if a != self._current]
        for arm in [*others, self._current]:
            self._samples[arm].clear()
            self._plan.extend([arm] * (self.probe + 1))  # +1: the unmeasured warm-up step

    def _decide(self) -> None:
        medians = {a: statistics.median(s) for a, s in enumerate(self._samples) if s}
        self._measured = medians
        if self._current in medians:
            best = min(medians, key=medians.__getitem__)
            if best != self._current and medians[best] < (1 - self.margin) * medians[self._current]:
                self._current = best
                self.switches += 1
                self._backoff = 1
            else:
                self._backoff = min(2 * self._backoff, self.max_backoff)
        self._baseline = medians.get(self._current, 0.0)
        self._since_decision = 0

    def describe(self) -> str:
        measured = sorted(self._measured.items())
        timing = ", ".join(f"{self.names[a]} {m * 1e3:.1f} ms" for a, m in measured)
        return f"adaptive, {self.names[self._current]} now" + (
            f" ({timing} per step)" if timing else ""
        )

    def stats(self) -> dict[str, Any]:
        return {
            "policy": "adaptive",
            "current": self.names[self._current],
            "median_step_ms": {self.names[a]: m * 1e3 for a, m in self._measured.items()},
            "probes": self.probes,
            "switches": self.switches,
        }
