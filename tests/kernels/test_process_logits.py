"""`process_logits`: the chain's stages 1-5 alone (the point log-probabilities are taken from),
bit-equal across backends and instruction sets, and equal to what `sample` leaves before top-k."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given

from imagine_edge import kernels
from imagine_edge.kernels import Backend, SamplingConfig, SequenceState, get_backend

from .test_properties import PROPERTY_SETTINGS, Case, cases, mask_of


def _processed(backend: Backend, case: Case) -> npt.NDArray[np.float32] | str:
    row = case.logits.copy()
    try:
        backend.process_logits(
            row, case.config, case.state(), eos_token_ids=case.eos, allowed_mask=case.allowed
        )
    except ValueError as e:
        return f"ValueError: {e}"
    return row


@PROPERTY_SETTINGS
@given(case=cases())
def test_native_equals_reference(native_isa: Backend, case: Case) -> None:
    expected = _processed(get_backend("reference"), case)
    got = _processed(native_isa, case)
    if isinstance(expected, str):
        assert got == expected
    else:
        np.testing.assert_array_equal(got, expected)  # bit-identical, -inf included


@PROPERTY_SETTINGS
@given(case=cases(fixed={"top_k": -1, "top_p": 1.0, "temperature": 0.7}))
def test_equals_the_row_sample_draws_from_without_top_k_or_top_p(
    backend: Backend, case: Case
) -> None:
    processed = _processed(backend, case)
    token, row = case.run(backend)
    if isinstance(token, str) or isinstance(processed, str):
        return  # errors are covered by the equality above
    np.testing.assert_array_equal(processed, row)


def test_stages_in_order(backend: Backend) -> None:
    logits = np.array([2.0, 1.0, -1.0, 4.0, 0.5], dtype=np.float32)
    config = SamplingConfig(temperature=0.5, repetition_penalty=2.0, min_tokens=1)
    state = SequenceState(5, [0, 2])
    row = logits.copy()
    backend.process_logits(
        row, config, state, eos_token_ids=[4], allowed_mask=mask_of([0, 1, 2, 4], 5)
    )
    # Token 3 is not allowed, token 4 is an EOS before min_tokens; 0 and 2 are penalized (2 / 2,
    # -1 * 2), then everything is divided by the temperature.
    np.testing.assert_array_equal(row, np.array([2.0, 2.0, -4.0, -np.inf, -np.inf], np.float32))


def test_greedy_keeps_the_penalized_logits_unscaled(backend: Backend) -> None:
    row = np.array([1.0, 3.0], dtype=np.float32)
    backend.process_logits(row, SamplingConfig(temperature=0.0), SequenceState(2, []))
    np.testing.assert_array_equal(row, np.array([1.0, 3.0], np.float32))


def test_a_mask_that_allows_nothing_is_an_error(backend: Backend) -> None:
    row = np.zeros(40, dtype=np.float32)
    with pytest.raises(ValueError, match="allows no token"):
        backend.process_logits(
            row, SamplingConfig(), SequenceState(40, []), allowed_mask=mask_of([], 40)
        )


def test_the_public_function_uses_the_active_backend() -> None:
    case_row = np.array([0.0, 1.0, 2.0], dtype=np.float32)
    kernels.process_logits(case_row, SamplingConfig(temperature=2.0), SequenceState(3, []))
    np.testing.assert_array_equal(case_row, np.array([0.0, 0.5, 1.0], np.float32))
