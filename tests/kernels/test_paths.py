"""Native == reference on larger rows built to drive each internal path of the C code.

The C code picks among algorithms (sorted candidates after top-k, the heavy-token list for
top-p, the whole-row radix cut when light tokens hold the mass, buffered top-k selection), and
all of them must give the reference's token and bit-identical logits on every instruction set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from imagine_edge import kernels
from imagine_edge.kernels import Backend, SamplingConfig, SequenceState, get_backend

Row = npt.NDArray[np.float32]


def _gaussian(vocab: int) -> Row:
    return (np.random.default_rng(vocab).standard_normal(vocab) * 3).astype(np.float32)


def _spike_on_flat_bulk(vocab: int) -> Row:
    row = np.full(vocab, -10.0, dtype=np.float32)  # each bulk token weighs below the heavy cutoff
    row[vocab // 3] = 0.0
    return row


def _sample_trap(vocab: int) -> Row:
    # The top-k scan seeds its threshold from every (vocab // 1024)-th token; make exactly those
    # few tokens huge so the seed is too high and the scan must start over.
    row = _gaussian(vocab)
    row[: 10 * (vocab // 1024) : vocab // 1024] = 100.0
    return row


ROWS: dict[str, Callable[[], Row]] = {
    "sample-trap": lambda: _sample_trap(20000),
    "gaussian-odd-size": lambda: _gaussian(20011),
    "gaussian-qwen-size": lambda: _gaussian(151936),
    "flat-bulk": lambda: _spike_on_flat_bulk(20000),
    "ascending": lambda: np.linspace(-20, 20, 30000, dtype=np.float32),
    "descending": lambda: np.linspace(20, -20, 30001, dtype=np.float32),
    "all-ties": lambda: np.zeros(10007, dtype=np.float32),
    "two-levels": lambda: np.where(np.arange(9000) % 7 == 0, 1.0, 0.0).astype(np.float32),
}
CONFIGS = {
    "top-p": SamplingConfig(temperature=0.7, top_p=0.9),
    "top-p-low": SamplingConfig(top_p=0.5),
    "top-p-high": SamplingConfig(temperature=1.3, top_p=0.99),
    "temperature": SamplingConfig(temperature=1.3),
    "greedy": SamplingConfig(temperature=0.0),
    "top-k": SamplingConfig(temperature=0.7, top_k=50, top_p=0.9),
    "top-k-many": SamplingConfig(top_k=3000, top_p=0.8),
    "top-k-many-no-p": SamplingConfig(top_k=2500),
    "full-chain": SamplingConfig(
        temperature=0.7,
        top_k=40,
        top_p=0.9,
        repetition_penalty=1.2,
        presence_penalty=0.5,
        frequency_penalty=0.5,
    ),
}


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("row_name", ROWS)
def test_native_path_equals_reference(native_isa: Backend, row_name: str, config_name: str) -> None:
    base = ROWS[row_name]()
    config = CONFIGS[config_name]
    rng = np.random.default_rng(7)
    vocab = base.shape[0]
    state = SequenceState(vocab, rng.integers(0, vocab, 300))
    for token in rng.integers(0, vocab, 100):
        state.accept(int(token))
    for uniform in (0.0, 0.37, 0.999999):
        expected, got = base.copy(), base.copy()
        token = get_backend("reference").sample(expected, config, state, uniform)
        assert native_isa.sample(got, config, state, uniform) == token
        np.testing.assert_array_equal(got, expected)


def _grammar_like_masks(vocab: int) -> dict[str, npt.NDArray[np.uint32]]:
    """Masks like a JSON grammar's: a few structural tokens, or all but a few (inside a string)."""
    rng = np.random.default_rng(vocab + 1)
    bits = np.zeros(kernels.mask_words(vocab) * 32, dtype=np.uint8)
    bits[rng.choice(vocab, 12, replace=False)] = 1
    few = np.packbits(bits, bitorder="little").view("<u4").astype(np.uint32)
    bits[:vocab] = 1
    bits[rng.choice(vocab, 300, replace=False)] = 0
    most = np.packbits(bits, bitorder="little").view("<u4").astype(np.uint32)
    return {"few": few, "most": most}


@pytest.mark.parametrize("config_name", ["top-p", "greedy", "top-k", "full-chain"])
@pytest.mark.parametrize("row_name", ["gaussian-odd-size", "gaussian-qwen-size", "flat-bulk"])
def test_native_masked_path_equals_reference(
    native_isa: Backend, row_name: str, config_name: str
) -> None:
    base = ROWS[row_name]()
    config = CONFIGS[config_name]
    vocab = base.shape[0]
    state = SequenceState(vocab, np.random.default_rng(3).integers(0, vocab, 300))
    for name, mask in _grammar_like_masks(vocab).items():
        for uniform in (0.0, 0.37, 0.999999):
            expected, got = base.copy(), base.copy()
            token = get_backend("reference").sample(
                expected, config, state, uniform, allowed_mask=mask
            )
            assert native_isa.sample(got, config, state, uniform, allowed_mask=mask) == token, name
            np.testing.assert_array_equal(got, expected)
            assert (int(mask[token // 32]) >> (token % 32)) & 1
