"""One seeded frequency test of the draw: empirical frequencies match the kept distribution.

Deterministic (fixed seed, exact integer draw), so it cannot flake; the chi-square bound is the
0.1% critical value, loose enough to hold for any correct sampler and tight enough to catch an
off-by-one bucket or a wrong renormalization.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from imagine_edge.kernels import Backend, SamplingConfig, SequenceState

# logits log([1, 2, 3, 4]) + 5: probabilities 0.1, 0.2, 0.3, 0.4
_LOGITS = np.log(np.array([1, 2, 3, 4], dtype=np.float64)).astype(np.float32) + 5
_CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27}  # 0.1% critical values by degrees of freedom


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (SamplingConfig(), [0.1, 0.2, 0.3, 0.4]),
        (SamplingConfig(temperature=0.5), [1 / 30, 4 / 30, 9 / 30, 16 / 30]),
        (SamplingConfig(top_k=2), [0, 0, 3 / 7, 4 / 7]),
        (SamplingConfig(top_p=0.8), [0, 2 / 9, 3 / 9, 4 / 9]),
    ],
)
def test_draw_frequencies_match_the_distribution(
    backend: Backend, config: SamplingConfig, expected: list[float]
) -> None:
    draws = 6000
    rng = np.random.default_rng(20240611)  # a request's seeded generator
    state = SequenceState(4)
    counts = np.zeros(4, dtype=np.int64)
    for uniform in rng.random(draws):
        counts[backend.sample(_LOGITS.copy(), config, state, float(uniform))] += 1
    probs = np.array(expected)
    support = probs > 0
    assert counts[~support].sum() == 0
    chi2 = float((((counts - draws * probs) ** 2)[support] / (draws * probs[support])).sum())
    assert chi2 < _CHI2_999[int(support.sum()) - 1], (counts, chi2)
    assert math.isclose(counts.sum(), draws)
