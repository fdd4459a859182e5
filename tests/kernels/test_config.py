"""SamplingConfig validation and flags; SequenceState history bookkeeping."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imagine_edge.kernels import MAX_VOCAB_SIZE, SamplingConfig, SequenceState


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -0.1}, "temperature must be >= 0, got -0.1"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"top_k": -2}, "top_k must be an integer >= -1"),
        ({"top_k": 2.5}, "top_k must be an integer"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
        ({"repetition_penalty": 0.0}, "repetition_penalty must be > 0"),
        ({"presence_penalty": 2.5}, r"presence_penalty must be in \[-2, 2\], got 2.5"),
        ({"frequency_penalty": -3.0}, r"frequency_penalty must be in \[-2, 2\]"),
        ({"min_tokens": -1}, "min_tokens must be an integer >= 0"),
        ({"temperature": True}, "temperature must be a finite number"),
    ],
)
def test_config_rejects_out_of_range_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)  # type: ignore[arg-type]


def test_config_flags_are_precomputed() -> None:
    neutral = SamplingConfig()
    flags = ("is_greedy", "has_penalties", "has_top_k", "has_top_p")
    assert [getattr(neutral, f) for f in flags] == [False] * 4
    config = SamplingConfig(
        temperature=1e-5, top_k=0, top_p=0.9, repetition_penalty=1.1, frequency_penalty=0.1
    )
    assert [getattr(config, f) for f in flags] == [True, True, False, True]
    assert config.has_repetition_penalty
    assert config.has_presence_frequency
    assert SamplingConfig(top_k=5).has_top_k
    assert not SamplingConfig(temperature=1.1e-5).is_greedy


def test_config_is_frozen_and_compares_by_parameters() -> None:
    config = SamplingConfig(top_k=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.top_k = 4  # type: ignore[misc]
    assert config == SamplingConfig(top_k=3)
    assert hash(config) == hash(SamplingConfig(top_k=3))


def test_state_tracks_distinct_history_and_counts() -> None:
    state = SequenceState(10, [3, 1, 3])
    assert sorted(state.repetition_ids.tolist()) == [1, 3]
    for token in (5, 1, 5, 5):
        state.accept(token)
    assert state.num_generated == 4
    assert sorted(state.repetition_ids.tolist()) == [1, 3, 5]
    assert state.generated_ids.tolist() == [5, 1]
    assert state.generated_counts.tolist() == [3, 1]
    assert not state.generated_ids.flags.writeable


def test_state_grows_past_its_initial_capacity() -> None:
    state = SequenceState(1000)
    for token in range(300):
        state.accept(token)
        state.accept(token)
    assert state.generated_ids.tolist() == list(range(300))
    assert set(state.generated_counts.tolist()) == {2}
    assert len(state.repetition_ids) == 300


@pytest.mark.parametrize(
    ("vocab", "prompt", "message"),
    [
        (0, [], "vocab_size must be an integer in"),
        (MAX_VOCAB_SIZE + 1, [], "vocab_size must be an integer in"),
        (5, [5], r"prompt_ids must be token ids in \[0, 5\), got 5"),
        (5, [-1], r"got -1"),
        (5, np.array([[1]]), "1-D"),
        (5, np.array([1.5]), "integers"),
    ],
)
def test_state_rejects_bad_arguments(vocab: int, prompt: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SequenceState(vocab, prompt)  # type: ignore[arg-type]


def test_state_rejects_out_of_range_tokens() -> None:
    state = SequenceState(4)
    with pytest.raises(ValueError, match=r"token_id must be in \[0, 4\), got 4"):
        state.accept(4)
    assert state.num_generated == 0
