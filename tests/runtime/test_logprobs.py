"""runtime/logprobs.py: log-probabilities from the processed distribution, alternatives sorted."""

from __future__ import annotations

import math

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from imagine_edge import kernels
from imagine_edge.runtime.logprobs import LogprobRecorder, choice_logprobs


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    peak = x[finite].max()
    return x - (peak + np.log(np.exp(x[finite] - peak).sum()))


def test_entries_follow_the_processed_distribution():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, 300).astype(np.float32)
    config = kernels.SamplingConfig(temperature=0.6, top_k=5, repetition_penalty=1.3)
    state = kernels.SequenceState(300, [7, 8, 9])
    recorder = LogprobRecorder(300, top_n=20)
    recorder.observe(logits, config, state)
    before = logits.copy()
    token = kernels.sample(logits, config, state, 0.42)
    recorder.chosen(token)
    (entry,) = recorder.entries

    processed = before.copy()
    kernels.process_logits(processed, config, state)
    expected = _log_softmax(processed)
    assert entry.token_id == token
    assert entry.logprob == pytest.approx(expected[token], abs=1e-12)
    # Before top-k: the alternatives are the 20 most likely, though top-k keeps only 5.
    ids = [i for i, _ in entry.top]
    assert ids == list(np.argsort(-expected, kind="stable")[:20])
    values = [lp for _, lp in entry.top]
    assert values == sorted(values, reverse=True)
    assert sum(math.exp(v) for v in values) <= 1.0
    assert dict(entry.top)[token] == entry.logprob  # the chosen token's entry, exactly


def test_forbidden_tokens_are_never_listed_and_ties_go_to_the_lower_id():
    logits = np.zeros(64, dtype=np.float32)  # all tied
    allowed = np.zeros(kernels.mask_words(64), dtype=np.uint32)
    allowed[0] = (1 << 3) | (1 << 5)
    allowed[1] = 1 << 1  # token 33
    recorder = LogprobRecorder(64, top_n=5)
    config, state = kernels.SamplingConfig(temperature=1.0), kernels.SequenceState(64, [])
    recorder.observe(logits, config, state, allowed_mask=allowed)
    recorder.chosen(5)
    (entry,) = recorder.entries
    assert [i for i, _ in entry.top] == [3, 5, 33]
    assert entry.logprob == pytest.approx(math.log(1 / 3))
    assert sum(math.exp(lp) for _, lp in entry.top) == pytest.approx(1.0)


def test_greedy_is_taken_at_temperature_one_and_logits_are_left_unchanged():
    logits = np.array([0.0, math.log(3.0)], dtype=np.float32)
    recorder = LogprobRecorder(2, top_n=0)
    recorder.observe(logits, kernels.SamplingConfig(temperature=0.0), kernels.SequenceState(2, []))
    assert logits.tolist() == [0.0, pytest.approx(math.log(3.0))]
    recorder.chosen(1)
    assert recorder.entries[0].logprob == pytest.approx(math.log(0.75), abs=1e-6)
    assert recorder.entries[0].top == ()


def test_top_n_is_bounded():
    with pytest.raises(ValueError, match="top_n"):
        LogprobRecorder(4, top_n=5)


def test_the_response_shape_names_tokens_by_text():
    vocab = {"a": 0, "b": 1, "[UNK]": 2}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    recorder = LogprobRecorder(3, top_n=2)
    recorder.observe(
        np.array([1.0, 2.0, 0.0], np.float32),
        kernels.SamplingConfig(temperature=1.0),
        kernels.SequenceState(3, []),
    )
    recorder.chosen(0)
    shaped = choice_logprobs(recorder.entries, tokenizer)
    (token,) = shaped.content
    assert (token.token, token.bytes) == ("a", [97])
    assert [t.token for t in token.top_logprobs] == ["b", "a"]
    assert token.top_logprobs[1].logprob == token.logprob


@pytest.mark.model
def test_byte_level_tokens_carry_their_exact_bytes():
    from imagine_edge.models.catalog import prepared
    from imagine_edge.models.llm import SMOLLM2
    from imagine_edge.runtime.logprobs import TokenLogprobs

    tokenizer = Tokenizer.from_file(str(prepared(SMOLLM2, ["cpu"]).tokenizer))
    text = "é 🍵 the"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    shaped = choice_logprobs([TokenLogprobs(i, -1.0, ()) for i in ids], tokenizer)
    assert any("\ufffd" in t.token for t in shaped.content)  # the emoji spans tokens
    assert bytes(b for t in shaped.content for b in t.bytes or []).decode() == text
