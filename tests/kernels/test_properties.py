"""Properties of the sampling chain (hypothesis), on every backend and native instruction set."""

from __future__ import annotations

from dataclasses import dataclass, replace

import hypothesis.strategies as st
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.extra.numpy import arrays

from imagine_edge import kernels
from imagine_edge.kernels import Backend, SamplingConfig, SequenceState, get_backend

PROPERTY_SETTINGS = settings(
    derandomize=True,  # failures reproduce in CI
    deadline=None,  # the numpy reference is slow by design
    max_examples=80,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # the backend fixtures hold no per-example state
    ],
)
NEG_INF = np.float32(-np.inf)


@dataclass
class Case:
    logits: npt.NDArray[np.float32]
    config: SamplingConfig
    prompt: list[int]
    generated: list[int]
    uniform: float
    eos: tuple[int, ...]
    allowed: npt.NDArray[np.uint32] | None = None

    def state(self) -> SequenceState:
        state = SequenceState(self.logits.shape[0], self.prompt)
        for token in self.generated:
            state.accept(token)
        return state

    def run(self, backend: Backend) -> tuple[int | str, npt.NDArray[np.float32]]:
        row = self.logits.copy()
        try:
            token: int | str = backend.sample(
                row,
                self.config,
                self.state(),
                self.uniform,
                eos_token_ids=self.eos,
                allowed_mask=self.allowed,
            )
        except ValueError as e:
            token = f"ValueError: {e}"
        return token, row


@st.composite
def logit_rows(draw: st.DrawFn, max_vocab: int = 512) -> npt.NDArray[np.float32]:
    vocab = draw(st.integers(1, max_vocab))
    shape = st.sampled_from(["uniform", "levels", "spiky"])
    kind = draw(shape)
    if kind == "uniform":
        row = draw(arrays(np.float32, vocab, elements=st.floats(-50, 50, width=32)))
    elif kind == "levels":  # few distinct values: many exact ties
        row = draw(arrays(np.float32, vocab, elements=st.sampled_from([-3.0, 0.0, 0.5, 2.0])))
    else:  # a flat bulk with a few spikes, like real logits
        row = np.full(vocab, draw(st.floats(-20, 0, width=32)), dtype=np.float32)
        spikes = draw(st.lists(st.integers(0, vocab - 1), max_size=5))
        row[spikes] = draw(st.floats(0, 30, width=32))
    if vocab > 1 and draw(st.booleans()):
        masked = draw(st.lists(st.integers(0, vocab - 1), max_size=vocab - 1, unique=True))
        row[masked] = NEG_INF
    return row


def mask_of(allowed_ids: list[int] | npt.NDArray[np.integer], vocab: int) -> npt.NDArray[np.uint32]:
    """The llguidance-layout bitmask (bit i % 32 of word i // 32) allowing exactly these ids."""
    bits = np.zeros(kernels.mask_words(vocab) * 32, dtype=np.uint8)
    bits[np.asarray(allowed_ids, dtype=np.int64)] = 1
    return np.packbits(bits, bitorder="little").view("<u4").astype(np.uint32)


@st.composite
def allowed_masks(draw: st.DrawFn, vocab: int) -> npt.NDArray[np.uint32]:
    """Bitmasks of every shape a grammar produces, with garbage in the bits past the vocab."""
    words = kernels.mask_words(vocab)
    kind = draw(st.sampled_from(["few", "most", "words", "random"]))
    if kind == "few":  # a JSON grammar at a structural point: a handful of tokens
        ids = draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=8))
        mask = mask_of(ids, vocab)
    elif kind == "most":  # inside a string: nearly everything but a few tokens
        banned = draw(st.lists(st.integers(0, vocab - 1), max_size=8))
        mask = mask_of(np.setdiff1d(np.arange(vocab), banned), vocab)
    elif kind == "words":  # whole words of all ones or zeros, the C fast paths
        mask = np.array(
            draw(st.lists(st.sampled_from([0, 0xFFFFFFFF]), min_size=words, max_size=words)),
            dtype=np.uint32,
        )
    else:
        mask = draw(arrays(np.uint32, words, elements=st.integers(0, 2**32 - 1)))
    tail = vocab % 32
    if tail and draw(st.booleans()):  # bits at or past the vocab must be ignored
        mask[-1] |= np.uint32(0xFFFFFFFF ^ ((1 << tail) - 1))
    return mask


@st.composite
def cases(draw: st.DrawFn, /, max_vocab: int = 512, fixed: dict[str, object] | None = None) -> Case:
    row = draw(logit_rows(max_vocab))
    vocab = row.shape[0]
    ids = st.integers(0, vocab - 1)
    params: dict[str, object] = {
        "temperature": draw(st.one_of(st.just(0.0), st.floats(0.05, 3.0))),
        "top_k": draw(st.one_of(st.just(-1), st.integers(0, vocab + 2))),
        "top_p": draw(st.one_of(st.just(1.0), st.floats(0.01, 1.0))),
        "repetition_penalty": draw(st.one_of(st.just(1.0), st.floats(0.5, 2.0))),
        "presence_penalty": draw(st.one_of(st.just(0.0), st.floats(-2.0, 2.0))),
        "frequency_penalty": draw(st.one_of(st.just(0.0), st.floats(-2.0, 2.0))),
        "min_tokens": draw(st.integers(0, 3)),
    }
    params.update(fixed or {})
    return Case(
        logits=row,
        config=SamplingConfig(**params),  # type: ignore[arg-type]
        prompt=draw(st.lists(ids, max_size=20)),
        generated=draw(st.lists(ids, max_size=10)),
        uniform=draw(st.floats(0.0, 1.0, exclude_max=True)),
        eos=tuple(draw(st.lists(ids, max_size=2))),
        allowed=draw(st.one_of(st.none(), allowed_masks(vocab))),
    )


def _neutral(**overrides: object) -> st.SearchStrategy[Case]:
    neutral: dict[str, object] = {
        "temperature": 1.0, "top_k": -1, "top_p": 1.0, "repetition_penalty": 1.0,
        "presence_penalty": 0.0, "frequency_penalty": 0.0, "min_tokens": 0,
    }  # fmt: skip
    neutral.update(overrides)
    return cases(fixed=neutral).map(lambda case: replace(case, allowed=None))


@settings(PROPERTY_SETTINGS, max_examples=200)
@given(case=cases())
def test_native_equals_reference(native_isa: Backend, case: Case) -> None:
    expected_token, expected_row = case.run(get_backend("reference"))
    token, row = case.run(native_isa)
    assert token == expected_token
    if not isinstance(token, str):  # after an error the row is only partly processed
        np.testing.assert_array_equal(row, expected_row)  # bit-identical, -inf included


@PROPERTY_SETTINGS
@given(case=cases(max_vocab=4096), data=st.data())
def test_batch_equals_rows(native_isa: Backend, case: Case, data: st.DataObject) -> None:
    rows = np.stack([case.logits, np.roll(case.logits, 1), case.logits[::-1]])
    configs = [case.config, SamplingConfig(top_k=3, top_p=0.7), SamplingConfig(temperature=0)]
    uniforms = np.array([case.uniform, data.draw(st.floats(0, 0.999)), 0.5])
    vocab = rows.shape[1]
    masks = None
    if case.allowed is not None:  # one constrained row, one free row (all ones), one other mask
        free = np.full(kernels.mask_words(vocab), 0xFFFFFFFF, dtype=np.uint32)
        masks = np.stack([case.allowed, free, data.draw(allowed_masks(vocab))])
    for backend in (get_backend("reference"), native_isa):
        try:
            tokens = backend.sample_batch(
                rows.copy(), configs, [case.state()] * 3, uniforms, allowed_masks=masks
            )
        except ValueError:
            continue
        for i in range(3):
            row = rows[i].copy()
            mask = None if masks is None else masks[i]
            token = backend.sample(
                row, configs[i], case.state(), float(uniforms[i]), allowed_mask=mask
            )
            assert tokens[i] == token


@PROPERTY_SETTINGS
@given(case=_neutral(), top_k=st.integers(1, 600))
def test_top_k_keeps_min_k_finite_largest(backend: Backend, case: Case, top_k: int) -> None:
    config = SamplingConfig(top_k=top_k)
    row = case.logits.copy()
    backend.sample(row, config, case.state(), case.uniform)
    finite = np.isfinite(case.logits)
    kept = np.isfinite(row)
    assert kept.sum() == min(top_k, finite.sum())
    dropped = finite & ~kept
    if dropped.any():
        low = case.logits[kept].min()
        assert low >= case.logits[dropped].max()
        # the tie rule: at the boundary value, kept ids come before dropped ones
        assert np.flatnonzero(kept & (case.logits == low)).max() < np.flatnonzero(
            dropped & (case.logits == low)
        ).min(initial=row.shape[0])


@PROPERTY_SETTINGS
@given(case=_neutral(), top_p=st.floats(0.01, 1.0))
def test_top_p_keeps_smallest_prefix_with_enough_mass(
    backend: Backend, case: Case, top_p: float
) -> None:
    row = case.logits.copy()
    backend.sample(row, SamplingConfig(top_p=top_p), case.state(), case.uniform)
    x = case.logits.astype(np.float64)
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    kept = np.isfinite(row)
    assert kept.any()
    mass = probs[kept].sum()
    assert mass >= top_p - 1e-6
    assert mass - probs[kept].min() < top_p + 1e-6  # dropping the least likely falls short
    if (~kept).any():  # a prefix of the order by probability
        assert probs[kept].min() >= probs[~kept].max() - 1e-8


@PROPERTY_SETTINGS
@given(case=_neutral(), temperature=st.floats(0.0, 1e-5))
def test_temperature_to_zero_is_argmax(backend: Backend, case: Case, temperature: float) -> None:
    row = case.logits.copy()
    token = backend.sample(row, SamplingConfig(temperature=temperature), case.state(), case.uniform)
    assert token == int(np.argmax(case.logits))
    np.testing.assert_array_equal(row, case.logits)


@PROPERTY_SETTINGS
@given(case=_neutral())
def test_neutral_parameters_are_the_identity(backend: Backend, case: Case) -> None:
    token, row = case.run(backend)  # with a history: neutral penalties must not touch it
    np.testing.assert_array_equal(row, case.logits)
    assert isinstance(token, int)
    assert np.isfinite(case.logits[token])


@PROPERTY_SETTINGS
@given(
    case=_neutral(temperature=0.0),
    repetition=st.floats(1.0, 3.0),
    presence=st.floats(0.0, 2.0),
    frequency=st.floats(0.0, 2.0),
)
def test_penalties_never_raise_a_seen_token(
    backend: Backend, case: Case, repetition: float, presence: float, frequency: float
) -> None:
    config = SamplingConfig(
        temperature=0.0,
        repetition_penalty=repetition,
        presence_penalty=presence,
        frequency_penalty=frequency,
    )
    row = case.logits.copy()
    backend.sample(row, config, case.state(), case.uniform)
    seen = np.zeros(row.shape[0], dtype=bool)
    seen[case.prompt + case.generated] = True
    assert np.all(row[seen] <= case.logits[seen])
    np.testing.assert_array_equal(row[~seen], case.logits[~seen])


@PROPERTY_SETTINGS
@given(case=cases())
def test_drawn_token_is_in_the_kept_set(backend: Backend, case: Case) -> None:
    token, row = case.run(backend)
    masked = case.logits.copy()
    if case.allowed is not None:
        allowed = _allowed_ids(case.allowed, masked.shape[0])
        if allowed.size == 0:
            assert token == "ValueError: the allowed-token mask allows no token"
            return
        masked[np.setdiff1d(np.arange(masked.shape[0]), allowed)] = NEG_INF
    if len(case.generated) < case.config.min_tokens:
        masked[list(case.eos)] = NEG_INF
    if not np.isfinite(masked).any():  # the only way to make a row unsampleable here
        assert isinstance(token, str)
        assert "-inf" in token
        return
    assert isinstance(token, int)
    assert np.isfinite(row[token])
    assert np.isfinite(masked[token])  # never a token the mask or min_tokens ruled out
    if case.config.is_greedy:
        assert row[token] == row.max()


@PROPERTY_SETTINGS
@given(case=cases(fixed={"min_tokens": 3}))
def test_stop_ids_are_masked_until_min_tokens(backend: Backend, case: Case) -> None:
    token, row = case.run(backend)
    if len(case.generated) >= 3 or not case.eos:
        return
    assert np.all(row[list(case.eos)] == NEG_INF)
    assert token not in case.eos


def _allowed_ids(mask: npt.NDArray[np.uint32], vocab: int) -> npt.NDArray[np.intp]:
    """Ids a bitmask allows, decoded independently of the kernels (plain bit tests)."""
    return np.array(
        [i for i in range(vocab) if (int(mask[i // 32]) >> (i % 32)) & 1], dtype=np.intp
    )


@PROPERTY_SETTINGS
@given(case=cases())
def test_mask_sets_exactly_the_disallowed_logits_to_minus_inf(backend: Backend, case: Case) -> None:
    if case.allowed is None:
        return
    vocab = case.logits.shape[0]
    allowed = _allowed_ids(case.allowed, vocab)
    # greedy without penalties or min_tokens leaves the row as the mask made it
    config = SamplingConfig(temperature=0.0)
    row = case.logits.copy()
    if allowed.size == 0 or not np.isfinite(case.logits[allowed]).any():
        with pytest.raises(ValueError, match=r"allows no token|every logit is -inf"):
            backend.sample(row, config, SequenceState(vocab), 0.5, allowed_mask=case.allowed)
        return
    token = backend.sample(row, config, SequenceState(vocab), 0.5, allowed_mask=case.allowed)
    expected = np.full(vocab, NEG_INF, dtype=np.float32)
    expected[allowed] = case.logits[allowed]
    np.testing.assert_array_equal(row, expected)
    assert token in allowed.tolist()


@PROPERTY_SETTINGS
@given(case=cases())
def test_an_all_allowed_mask_equals_no_mask(backend: Backend, case: Case) -> None:
    vocab = case.logits.shape[0]
    for words in (np.uint32(0xFFFFFFFF), np.int32(-1)):  # llguidance allocates int32 -1
        full = np.full(kernels.mask_words(vocab), words)
        with_mask = replace(case, allowed=full).run(backend)
        without = replace(case, allowed=None).run(backend)
        assert with_mask[0] == without[0]
        np.testing.assert_array_equal(with_mask[1], without[1])


@PROPERTY_SETTINGS
@given(case=cases(), data=st.data())
def test_a_single_allowed_token_is_always_chosen(
    backend: Backend, case: Case, data: st.DataObject
) -> None:
    vocab = case.logits.shape[0]
    only = data.draw(st.integers(0, vocab - 1))
    row = case.logits.copy()
    row[only] = data.draw(st.floats(-50, 50, width=32))  # finite: a grammar's token can be unlikely
    case = replace(case, logits=row, eos=(), allowed=mask_of([only], vocab))
    token, out = case.run(backend)
    assert token == only
    assert np.flatnonzero(np.isfinite(out)).tolist() == [only]


@PROPERTY_SETTINGS
@given(case=cases())
def test_an_empty_mask_is_an_error(backend: Backend, case: Case) -> None:
    vocab = case.logits.shape[0]
    empty = np.zeros(kernels.mask_words(vocab), dtype=np.uint32)
    if vocab % 32:  # bits past the vocab do not count as allowed
        empty[-1] = np.uint32(0xFFFFFFFF ^ ((1 << (vocab % 32)) - 1))
    token, _ = replace(case, allowed=empty).run(backend)
    assert token == "ValueError: the allowed-token mask allows no token"
