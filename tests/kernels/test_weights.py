"""The fixed-point weights both backends share: exp32 accuracy, monotonicity and the zero cutoff."""

from __future__ import annotations

import numpy as np

from imagine_edge.kernels._reference import WEIGHT_BITS, exp32, weights

# Every float32 in [-87, 0] would be 1.1e9 values; a strided sweep plus every float near the
# points that matter keeps this fast while covering each binade densely.
_SWEEP = np.linspace(-87.0, 0.0, 1_000_001, dtype=np.float32)


def _negatives(low: float, high: float) -> np.ndarray:
    """Every float32 in [low, high], for low <= high < 0 (keep the range to a few binades)."""
    a = int(np.float32(-high).view(np.int32))
    b = int(np.float32(-low).view(np.int32))
    assert 0 < a <= b
    assert b - a < 1 << 22
    return -np.arange(a, b + 1, dtype=np.int32).view(np.float32)


def test_exp32_is_accurate() -> None:
    rel = np.abs(exp32(_SWEEP).astype(np.float64) / np.exp(_SWEEP.astype(np.float64)) - 1)
    assert rel.max() < 2e-7


def test_exp32_is_monotone() -> None:
    # top-p orders by weight and top-k by logit; monotone weights keep the two orders consistent
    # around every range-reduction boundary d = -(k + 1/2) ln 2, where n steps
    seams = [
        _negatives(-(k + 0.5) * np.log(2) * 1.0001, -(k + 0.5) * np.log(2) * 0.9999)
        for k in range(32)
    ]
    for d in (_SWEEP, _negatives(-22.0, -21.0), *seams):
        assert np.all(np.diff(exp32(np.sort(d))) >= 0)


def test_top_token_weighs_exactly_two_to_the_30() -> None:
    x = np.array([3.0, 1.0, -np.inf], dtype=np.float32)
    assert weights(x, np.float32(3.0)).tolist()[0] == 1 << WEIGHT_BITS
    assert weights(x, np.float32(3.0)).tolist()[2] == 0


def test_weights_are_zero_below_the_skip_cutoff() -> None:
    # The C code skips exp for vectors entirely below d = -21.5, writing weight 0: check every
    # float from -21.5 down to -22 (the largest weights there) and a sweep below.
    d = np.concatenate([_negatives(-22.0, -21.5), _SWEEP[_SWEEP < -21.5]])
    assert not np.any(weights(d, np.float32(0.0)))
