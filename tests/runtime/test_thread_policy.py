"""The per-step choice between equivalent sessions, driven by synthetic step times."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from imagine_edge.runtime.thread_policy import AdaptivePolicy, FixedPolicy

MS = 1e-3


def _drive(policy: AdaptivePolicy, cost: Callable[[int, int], float], steps: int) -> list[int]:
    """Run ``steps`` decode steps; ``cost(step, arm)`` is the time the arm takes at that step."""
    arms = []
    for step in range(steps):
        arm = policy.choose()
        policy.record(arm, cost(step, arm))
        arms.append(arm)
    return arms


def test_it_probes_every_arm_then_runs_the_faster():
    policy = AdaptivePolicy(["sleep", "spin"], period=50, probe=3)
    arms = _drive(policy, lambda _, arm: (12 if arm == 0 else 8) * MS, steps=40)
    # The first probe: 3 measured steps (+1 warm-up) on the other arm, then on the current one.
    assert arms[:8] == [1] * 4 + [0] * 4
    assert set(arms[8:]) == {1}
    assert policy.preferred == 1
    assert policy.switches == 1
    assert policy.describe() == "adaptive, spin now (sleep 12.0 ms, spin 8.0 ms per step)"


def test_a_difference_within_the_margin_does_not_switch():
    policy = AdaptivePolicy(["sleep", "spin"], period=50, probe=3, margin=0.05)
    _drive(policy, lambda _, arm: (10.0 if arm == 0 else 9.8) * MS, steps=30)
    assert policy.preferred == 0
    assert policy.switches == 0


def test_it_reprobes_every_period_and_follows_a_change_of_load():
    # Spinning wins while the cores are idle; from step 100 another process takes a core.
    def cost(step: int, arm: int) -> float:
        busy = step >= 100
        return {(0, False): 12, (1, False): 8, (0, True): 13, (1, True): 20}[(arm, busy)] * MS

    policy = AdaptivePolicy(["sleep", "spin"], period=20, probe=3, slowdown=10.0, max_backoff=4)
    arms = _drive(policy, cost, steps=300)
    assert arms[99] == 1
    assert policy.preferred == 0
    # A periodic probe found the change within the longest period (plus the probe itself) ...
    settled = next(i for i in range(100, 300) if arms[i : i + 20] == [0] * 20)
    assert settled <= 100 + 4 * 20 + 8
    # ... and from then on the slow arm runs only the probes: 4 steps in every 20 + 8 at most.
    assert arms[settled:].count(1) <= 4 * (300 - settled) // 28 + 4
    assert policy.switches == 2


def test_probes_that_confirm_the_choice_back_off():
    steady = AdaptivePolicy(["sleep", "spin"], period=20, probe=3, max_backoff=4)
    _drive(steady, lambda _, arm: (12 if arm == 0 else 8) * MS, steps=1000)
    eager = AdaptivePolicy(["sleep", "spin"], period=20, probe=3, max_backoff=1)
    _drive(eager, lambda _, arm: (12 if arm == 0 else 8) * MS, steps=1000)
    # Every 20 + 8 steps without backing off; every 80 + 8 once backed off to 4x.
    assert eager.probes >= 1000 // 28
    assert steady.probes <= 3 + 1000 // 88


def test_a_marked_slowdown_probes_before_the_period_ends():
    def cost(step: int, arm: int) -> float:
        if arm == 1:
            return (8 if step < 30 else 30) * MS
        return 12 * MS

    policy = AdaptivePolicy(["sleep", "spin"], period=1000, probe=3, slowdown=1.3)
    arms = _drive(policy, cost, steps=60)
    assert policy.preferred == 0
    # It left the slowed arm a few steps after it slowed, not after the 1000-step period.
    assert arms[40:] == [0] * 20


def test_the_warm_up_step_after_a_switch_is_not_measured():
    # The first step on a newly chosen arm is very slow (its workers wake up); it must not count.
    last = [-1]

    def cost(_: int, arm: int) -> float:
        warm_up = arm != last[0]
        last[0] = arm
        return (100 if warm_up else (12 if arm == 0 else 8)) * MS

    policy = AdaptivePolicy(["sleep", "spin"], period=50, probe=1)
    _drive(policy, cost, steps=20)
    assert policy.preferred == 1
    assert policy.stats()["median_step_ms"] == {"sleep": 12.0, "spin": 8.0}
    # Measured, the first step after the switch would look like a 12x slowdown and probe again.
    assert policy.probes == 1


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="two arms"):
        AdaptivePolicy(["only"])
    with pytest.raises(ValueError, match="positive"):
        AdaptivePolicy(["a", "b"], probe=0)


def test_a_fixed_policy_always_answers_its_arm():
    policy = FixedPolicy("workers sleep", arm=0)
    policy.record(0, 1.0)
    assert (policy.choose(), policy.preferred, policy.describe()) == (0, 0, "workers sleep")
    assert policy.stats() == {"policy": "fixed", "current": "workers sleep"}
