"""Hand tables on tiny vocabularies: each stage's exact effect, read as the spec (llama.cpp style).

Every test runs on every backend (the `backend` fixture).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from imagine_edge.kernels import (
    Backend,
    SamplingConfig,
    SequenceState,
)

NEG_INF = float("-inf")


def _f32(values: list[float]) -> npt.NDArray[np.float32]:
    return np.array(values, dtype=np.float32)


def _state(vocab: int, prompt: list[int] = (), generated: list[int] = ()) -> SequenceState:  # type: ignore[assignment]
    state = SequenceState(vocab, prompt)
    for token in generated:
        state.accept(token)
    return state


def _probs(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    x = logits.astype(np.float64)
    e = np.exp(x - x.max())
    probs: npt.NDArray[np.float64] = e / e.sum()
    return probs


def _run(
    backend: Backend,
    logits: list[float],
    uniform: float = 0.5,
    state: SequenceState | None = None,
    eos: tuple[int, ...] = (),
    **config: float,
) -> tuple[int, npt.NDArray[np.float32]]:
    row = _f32(logits)
    state = state or _state(len(logits))
    token = backend.sample(row, SamplingConfig(**config), state, uniform, eos_token_ids=eos)  # type: ignore[arg-type]
    return token, row


def test_greedy_lowest_id_wins_ties(backend: Backend) -> None:
    token, row = _run(backend, [1, 3, 3, 2], temperature=0.0)
    assert token == 1
    np.testing.assert_array_equal(row, _f32([1, 3, 3, 2]))  # greedy leaves logits unscaled


def test_tiny_temperature_is_greedy(backend: Backend) -> None:
    assert _run(backend, [1, 3, 3.5, 2], uniform=0.0, temperature=1e-5)[0] == 2


def test_temperature_scales_in_place(backend: Backend) -> None:
    _, row = _run(backend, [1, 2, -4, 0], temperature=0.5)
    np.testing.assert_array_equal(row, _f32([2, 4, -8, 0]))


@pytest.mark.parametrize(
    ("top_k", "kept"),
    [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (4, [0, 1, 2, 3]), (5, [0, 1, 2, 3, 4]),
     (9, [0, 1, 2, 3, 4]), (0, [0, 1, 2, 3, 4]), (-1, [0, 1, 2, 3, 4])],
)  # fmt: skip
def test_top_k_keeps_largest_lowest_id_on_ties(
    backend: Backend, top_k: int, kept: list[int]
) -> None:
    _, row = _run(backend, [1, 3, 3, 2, -1], top_k=top_k)
    assert np.flatnonzero(np.isfinite(row)).tolist() == kept


_QUARTERS = [math.log(p) for p in (0.1, 0.2, 0.3, 0.4)]


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [(0.35, [0, 0, 0, 1]), (0.65, [0, 0, 3 / 7, 4 / 7]), (0.85, [0, 2 / 9, 3 / 9, 4 / 9]),
     (0.95, [0.1, 0.2, 0.3, 0.4]), (1.0, [0.1, 0.2, 0.3, 0.4])],
)  # fmt: skip
def test_top_p_keeps_smallest_likely_set(
    backend: Backend, top_p: float, expected: list[float]
) -> None:
    _, row = _run(backend, _QUARTERS, top_p=top_p)
    np.testing.assert_allclose(_probs(row), expected, atol=1e-5)


@pytest.mark.parametrize(("top_p", "kept"), [(0.25, [0]), (0.5, [0, 1]), (0.5001, [0, 1, 2])])
def test_top_p_ties_take_lowest_ids(backend: Backend, top_p: float, kept: list[int]) -> None:
    _, row = _run(backend, [0, 0, 0, 0], top_p=top_p)
    assert np.flatnonzero(np.isfinite(row)).tolist() == kept


def test_top_k_runs_before_top_p(backend: Backend) -> None:
    # After top-k 2 the renormalized mass is {3: 4/7, 2: 3/7}, so top-p 0.5 keeps one token.
    # Applied to the full distribution (0.4 < 0.5) it would keep two.
    _, row = _run(backend, _QUARTERS, top_k=2, top_p=0.5)
    assert np.flatnonzero(np.isfinite(row)).tolist() == [3]


def test_temperature_runs_before_top_p(backend: Backend) -> None:
    # At T=1 the probabilities are 1/6, 2/6, 3/6 and top-p 0.6 keeps two tokens. At T=0.5 they are
    # 1/14, 4/14, 9/14 and it keeps one. llama.cpp's default chain (temperature last) keeps two.
    logits = [0.0, math.log(2), math.log(3)]
    assert np.isfinite(_run(backend, logits, top_p=0.6)[1]).sum() == 2
    assert np.isfinite(_run(backend, logits, top_p=0.6, temperature=0.5)[1]).sum() == 1


def test_repetition_penalty_divides_positive_and_multiplies_negative(backend: Backend) -> None:
    state = _state(5, prompt=[0], generated=[1])
    token, row = _run(
        backend, [2, -2, 1, 0.5, 0], state=state, repetition_penalty=2.0, temperature=0
    )
    np.testing.assert_array_equal(row, _f32([1, -4, 1, 0.5, 0]))
    assert token == 0  # 1.0 ties with id 2: lowest id wins


def test_presence_and_frequency_count_generated_tokens_only(backend: Backend) -> None:
    state = _state(4, prompt=[1], generated=[2, 2, 3])
    _, row = _run(
        backend,
        [0, 0, 0, 0],
        state=state,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        temperature=0,
    )
    np.testing.assert_array_equal(row, _f32([0, 0, -1.0, -0.75]))


def test_repetition_runs_before_presence(backend: Backend) -> None:
    state = _state(2, generated=[0])
    _, row = _run(
        backend, [4, 0], state=state, repetition_penalty=2.0, presence_penalty=1.0, temperature=0
    )
    assert row[0] == 1.0  # (4 / 2) - 1, not (4 - 1) / 2


def test_eos_masked_until_min_tokens(backend: Backend) -> None:
    state = _state(3)
    token, row = _run(backend, [0, 5, 1], state=state, eos=(1,), min_tokens=2, temperature=0)
    assert (token, row[1]) == (2, NEG_INF)
    state.accept(2)
    state.accept(2)
    assert _run(backend, [0, 5, 1], state=state, eos=(1,), min_tokens=2, temperature=0)[0] == 1


@pytest.mark.parametrize(
    ("uniform", "token"),
    [(0.0, 0), (0.2499, 0), (0.25, 1), (0.5, 2), (0.7499, 2), (0.75, 3), (0.9999, 3)],
)
def test_draw_is_inverse_cdf_in_id_order(backend: Backend, uniform: float, token: int) -> None:
    assert _run(backend, [0, 0, 0, 0], uniform=uniform)[0] == token


@pytest.mark.parametrize(("uniform", "token"), [(0.0, 1), (0.4999, 1), (0.5, 2), (0.9999, 2)])
def test_draw_walks_only_kept_tokens(backend: Backend, uniform: float, token: int) -> None:
    assert _run(backend, [1, 3, 3, 2], uniform=uniform, top_k=2)[0] == token


def test_masked_tokens_are_never_drawn(backend: Backend) -> None:
    for uniform in (0.0, 0.3, 0.6, 0.9999):
        assert _run(backend, [0, NEG_INF, 0], uniform=uniform)[0] in (0, 2)


@pytest.mark.parametrize(
    ("logits", "message"),
    [
        ([NEG_INF, NEG_INF], "every logit is -inf"),
        ([0.0, float("nan")], "NaN"),
        ([0, float("inf")], "inf"),
    ],
)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_unsampleable_rows_raise(
    backend: Backend, logits: list[float], message: str, temperature: float
) -> None:
    with pytest.raises(ValueError, match=message):
        _run(backend, logits, temperature=temperature)


def test_every_token_masked_raises(backend: Backend) -> None:
    with pytest.raises(ValueError, match="-inf"):
        _run(backend, [1.0], eos=(0,), min_tokens=1)


@pytest.mark.parametrize(
    ("logits", "message"),
    [(np.zeros(3, np.float64), "float32"), (np.zeros((1, 3), np.float32), "1-D"),
     (np.zeros(6, np.float32)[::2], "contiguous"), (np.zeros(4, np.float32), "vocab_size"),
     ([0.0, 0.0, 0.0], "numpy")],
)  # fmt: skip
def test_bad_logits_are_rejected(backend: Backend, logits: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backend.sample(logits, SamplingConfig(), _state(3), 0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(("uniform", "eos"), [(1.0, ()), (-0.1, ()), (0.5, (3,)), (0.5, (-1,))])
def test_bad_uniform_or_eos_is_rejected(
    backend: Backend, uniform: float, eos: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match=r"\[0, "):
        backend.sample(
            _f32([0, 0, 0]), SamplingConfig(min_tokens=1), _state(3), uniform, eos_token_ids=eos
        )


def test_batch_rows_use_their_own_configs_states_and_uniforms(backend: Backend) -> None:
    logits = np.array([[1, 3, 3, 2], [0, 0, 0, 0], [0, 5, 1, 0]], dtype=np.float32)
    configs = [
        SamplingConfig(temperature=0),
        SamplingConfig(top_p=0.5),
        SamplingConfig(min_tokens=1),
    ]
    states = [_state(4), _state(4), _state(4)]
    tokens = backend.sample_batch(
        logits, configs, states, np.array([0.9, 0.75, 0.0]), eos_token_ids=[1]
    )
    assert tokens.dtype == np.int32
    assert tokens.tolist() == [1, 1, 0]
    assert logits[1].tolist() == [0, 0, NEG_INF, NEG_INF]
    assert logits[2][1] == NEG_INF


def test_batch_error_names_the_row(backend: Backend) -> None:
    logits = np.array([[0, 0], [NEG_INF, NEG_INF]], dtype=np.float32)
    with pytest.raises(ValueError, match="row 1"):
        backend.sample_batch(logits, [SamplingConfig()] * 2, [_state(2), _state(2)], [0.1, 0.2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"configs": 1}, "one config"),
        ({"uniforms": [0.1]}, "shape"),
        ({"uniforms": [0.1, 1.0]}, r"\[0, 1\)"),
    ],
)
def test_batch_arguments_are_checked(
    backend: Backend, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {
        "configs": [SamplingConfig()] * 2, "states": [_state(2), _state(2)], "uniforms": [0.1, 0.2]
    }  # fmt: skip
    if kwargs.get("configs") == 1:
        kwargs = {"configs": [SamplingConfig()]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        backend.sample_batch(np.zeros((2, 2), np.float32), **args)  # type: ignore[arg-type]


def test_read_only_logits_are_rejected(backend: Backend) -> None:
    row = _f32([0, 0, 0])
    row.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        backend.sample(row, SamplingConfig(), _state(3), 0.5)


# --------------------------------------------------------------------------- allowed-token mask


def _mask(*words: int) -> npt.NDArray[np.uint32]:
    return np.array(words, dtype=np.uint32)


def test_mask_comes_first_and_only_writes_minus_inf(backend: Backend) -> None:
    row = _f32([1, 3, 3, 2])
    config = SamplingConfig(temperature=0.5)
    # tokens 0 and 3 remain, tempered to 2 and 4: probabilities 0.12 and 0.88, drawn in id order
    assert backend.sample(row, config, _state(4), 0.5, allowed_mask=_mask(0b1001)) == 3
    np.testing.assert_array_equal(row, _f32([2, NEG_INF, NEG_INF, 4]))
    assert backend.sample(_f32([1, 3, 3, 2]), config, _state(4), 0.1, allowed_mask=_mask(9)) == 0


def test_mask_wins_over_the_argmax(backend: Backend) -> None:
    row = _f32([1, 3, 3, 2])
    greedy = SamplingConfig(temperature=0)
    assert backend.sample(row, greedy, _state(4), 0.5, allowed_mask=_mask(0b1001)) == 3
    np.testing.assert_array_equal(row, _f32([1, NEG_INF, NEG_INF, 2]))  # greedy: unscaled


def test_mask_spans_words_and_ignores_bits_past_the_vocab(backend: Backend) -> None:
    vocab = 40  # two words; only 8 bits of the second are inside the vocabulary
    row = np.zeros(vocab, dtype=np.float32)
    row[35] = 5.0
    mask = _mask(0, (1 << 3) | 0xFFFFFF00)  # token 35 and garbage above bit 7
    greedy = SamplingConfig(temperature=0)
    assert backend.sample(row, greedy, _state(vocab), 0.5, allowed_mask=mask) == 35
    assert np.flatnonzero(np.isfinite(row)).tolist() == [35]


def test_mask_and_min_tokens_together_can_leave_nothing(backend: Backend) -> None:
    # the grammar allows only EOS while min_tokens still masks it
    with pytest.raises(ValueError, match="every logit is -inf"):
        backend.sample(
            _f32([0, 0, 0]),
            SamplingConfig(min_tokens=1),
            _state(3),
            0.5,
            eos_token_ids=[2],
            allowed_mask=_mask(0b100),
        )


def test_an_int32_mask_is_read_as_bits(backend: Backend) -> None:
    row = np.zeros(32, dtype=np.float32)
    mask = np.array([np.int32(-(2**31))], dtype=np.int32)  # only bit 31: token 31
    assert backend.sample(row, SamplingConfig(), _state(32), 0.3, allowed_mask=mask) == 31


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros(2, np.uint32), r"shape \(1,\)"),
        (np.zeros((1, 1), np.uint32), r"shape \(1,\)"),
        (np.zeros(1, np.float32), "dtype uint32 or int32"),
        (np.zeros(1, np.int64), "dtype uint32 or int32"),
        ([1], "numpy uint32 or int32 array"),
        (np.zeros(1, np.uint32), "allows no token"),
    ],
)
def test_bad_masks_are_rejected(backend: Backend, mask: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backend.sample(_f32([0, 0, 0]), SamplingConfig(), _state(3), 0.5, allowed_mask=mask)  # type: ignore[arg-type]


def test_batch_masks_are_per_row_and_errors_name_the_row(backend: Backend) -> None:
    logits = np.zeros((3, 4), dtype=np.float32)
    configs = [SamplingConfig(temperature=0)] * 3
    states = [_state(4) for _ in range(3)]
    masks = np.array([[0b0100], [0xFFFFFFFF], [0b1000]], dtype=np.uint32)
    tokens = backend.sample_batch(logits.copy(), configs, states, [0.5] * 3, allowed_masks=masks)
    assert tokens.tolist() == [2, 0, 3]
    masks[1] = 0
    with pytest.raises(ValueError, match="row 1: the allowed-token mask allows no token"):
        backend.sample_batch(logits.copy(), configs, states, [0.5] * 3, allowed_masks=masks)
    with pytest.raises(ValueError, match=r"shape \(3, 1\)"):
        backend.sample_batch(logits.copy(), configs, states, [0.5] * 3, allowed_masks=masks[:2])
