"""The generation loop: stops, budgets, UTF-8 streaming, cancellation, seeding and prefix reuse.

Exact behaviour is checked with a scripted decoder (its greedy continuation is a given token
script) and a byte-level tokenizer, so multi-byte characters always span several tokens;
sampling and KV reuse run on the tiny GQA graph.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest

from imagine_edge.runtime.generate import (
    TextGenerationLoop,
)
from imagine_edge.runtime.kv_cache import DecoderSpec
from imagine_edge.runtime.results import GenerationChunk
from imagine_edge.runtime.sampling import GenerationPlan, SamplingDefaults
from imagine_edge.runtime.shared_buffer_decoder import SharedBufferDecoder
from imagine_edge.sdk.errors import ContextLengthError, InvalidRequestError
from imagine_edge.sdk.types import CompletionRequest

EOS = 256
GREEDY = SamplingDefaults(temperature=0.0)


def _plan(**params) -> GenerationPlan:
    request = CompletionRequest(prompt="", model="tiny", stream=False, **params)
    return GenerationPlan.from_params(request, GREEDY)


def _collect(deltas) -> tuple[str, GenerationChunk]:
    items = list(deltas)
    assert all(d.finish_reason is None for d in items[:-1])
    assert items[-1].finish_reason is not None
    return "".join(d.text for d in items), items[-1]


def _loop(scripted, tokenizer, text: str, prompt: list[int], **kwargs) -> TextGenerationLoop:
    script = tokenizer.encode(text, add_special_tokens=False).ids
    decoder = scripted(script, len(prompt), **kwargs)
    return TextGenerationLoop(decoder, tokenizer, eos_token_ids=[EOS])


PROMPT = [10, 11, 12, 13, 14]


def test_greedy_text_follows_the_script_and_ends_at_eos(scripted, byte_tokenizer):
    loop = _loop(scripted, byte_tokenizer, "Paris.", PROMPT)
    text, last = _collect(loop.run(PROMPT, _plan()))
    assert text == "Paris."
    assert last.finish_reason == "stop"
    assert last.stats is not None
    # Six characters, then the end-of-sequence token, which is counted but not shown.
    assert last.stats.completion_tokens == 7
    assert last.stats.token_ids[-1] == EOS
    assert last.stats.prompt_tokens == len(PROMPT)
    assert last.stats.cached_prompt_tokens == 0


def test_multibyte_characters_are_streamed_whole(scripted, byte_tokenizer):
    text = "héllo 日本語 🎉 ok"
    loop = _loop(scripted, byte_tokenizer, text, PROMPT)
    deltas = list(loop.run(PROMPT, _plan()))
    pieces = [d.text for d in deltas if d.text]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # Each character is one delta, although "🎉" took four tokens.
    assert pieces == list(text)


def test_ignore_eos_generates_through_the_end_of_sequence(scripted, byte_tokenizer):
    loop = _loop(scripted, byte_tokenizer, "ab", PROMPT)
    text, last = _collect(loop.run(PROMPT, _plan(ignore_eos=True, max_tokens=5)))
    # After the script the decoder keeps proposing <eos>; it is special, so skipped in text.
    assert text == "ab"
    assert last.finish_reason == "length"
    assert last.stats.completion_tokens == 5
    text, _ = _collect(
        loop.run(PROMPT, _plan(ignore_eos=True, max_tokens=4, skip_special_tokens=False))
    )
    assert text == "ab<eos><eos>"


def test_max_tokens_ends_with_length(scripted, byte_tokenizer):
    loop = _loop(scripted, byte_tokenizer, "abcdefgh", PROMPT)
    text, last = _collect(loop.run(PROMPT, _plan(max_tokens=3)))
    assert (text, last.finish_reason, last.stats.completion_tokens) == ("abc", "length", 3)


def test_stop_string_is_included_and_ends_generation(scripted, byte_tokenizer):
    loop = _loop(scripted, byte_tokenizer, "one, two. three", PROMPT)
    text, last = _collect(loop.run(PROMPT, _plan(stop=["two."])))
    assert text == "one, two."
    assert last.finish_reason == "stop"


def test_held_back_stop_prefix_is_flushed_when_generation_ends(scripted, byte_tokenizer):
    loop = _loop(scripted, byte_tokenizer, "say tw", PROMPT)
    text, last = _collect(loop.run(PROMPT, _plan(stop=["two"])))
    assert text == "say tw"
    assert last.finish_reason == "stop"


def test_stop_token_ids_end_generation(scripted, byte_tokenizer):
    loop = _loop(scripted, byte_tokenizer, "abcabd", PROMPT)
    ids = byte_tokenizer.encode("bd", add_special_tokens=False).ids
    text, last = _collect(loop.run(PROMPT, _plan(stop_token_ids=[ids])))
    assert text == "abcabd"
    assert last.finish_reason == "stop"


def test_context_overflow_is_a_clear_client_error(scripted, byte_tokenizer):
    loop = _loop(scripted, byte_tokenizer, "abc", PROMPT, max_length=16)
    with pytest.raises(ContextLengthError, match=r"max_tokens \(12\).*context of 16") as info:
        list(loop.run(PROMPT, _plan(max_tokens=12)))
    assert info.value.status_code == 400
    with pytest.raises(ContextLengthError, match="no room"):
        list(loop.run(list(range(16)), _plan()))
    # Without max_tokens the default is clipped to the room left.
    loop.decoder.script = list(b"x" * 20)
    _, last = _collect(loop.run(PROMPT, _plan(ignore_eos=True)))
    assert last.stats.completion_tokens == 16 - len(PROMPT)


def test_a_text_longer_than_the_context_can_hold_is_refused_before_tokenizing(
    scripted, byte_tokenizer, monkeypatch
):
    loop = _loop(scripted, byte_tokenizer, "abc", PROMPT, max_length=16)
    longest = max(len(t) for t in byte_tokenizer.get_vocab())
    assert len(loop.encode("a" * (16 * longest))) > 0  # may still fit: tokenized

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized a text that cannot fit")

    monkeypatch.setattr(loop, "tokenizer", type("T", (), {"encode": no_tokenizing})())
    with pytest.raises(ContextLengthError, match="characters, more than the model's context of 16"):
        loop.encode("a" * (16 * longest + 1))


def test_empty_prompt_is_rejected(scripted, byte_tokenizer):
    loop = _loop(scripted, byte_tokenizer, "abc", PROMPT)
    with pytest.raises(InvalidRequestError, match="empty"):
        list(loop.run([], _plan()))


def test_prefill_runs_in_chunks_of_the_decoder_size(scripted, byte_tokenizer):
    prompt = list(range(20, 40))
    loop = _loop(scripted, byte_tokenizer, "a", prompt, prefill_chunk=8)
    _collect(loop.run(prompt, _plan()))
    assert loop.decoder.calls[:3] == [8, 8, 4]


def test_max_seconds_ends_a_long_generation_on_budget(scripted, byte_tokenizer):
    # 20 ms a step without burning CPU; the budget of 1 s allows about 50 of 1,000 tokens.
    loop = _loop(scripted, byte_tokenizer, "z" * 1000, PROMPT, max_length=2048, delay=0.02)
    start = time.perf_counter()
    _, last = _collect(loop.run(PROMPT, _plan(max_seconds=1, max_tokens=1000)))
    elapsed = time.perf_counter() - start
    assert last.finish_reason == "length"
    assert 1.0 <= elapsed <= 1.1
    assert 10 < last.stats.completion_tokens < 1000


def test_cancel_stops_promptly_and_releases_the_slot(scripted, byte_tokenizer):
    loop = _loop(scripted, byte_tokenizer, "abcdefghijklmnop", PROMPT)
    cancel = threading.Event()
    seen = []
    for delta in loop.run(PROMPT, _plan(), cancel):
        seen.append(delta)
        if len(seen) == 3:
            cancel.set()
    assert [d.text for d in seen] == ["a", "b", "c"]
    assert all(not s.leased for s in loop.decoder.pool.slots)


def test_abandoned_generator_releases_its_slot(scripted, byte_tokenizer):
    loop = _loop(scripted, byte_tokenizer, "abcdef", PROMPT, num_slots=1)
    deltas = loop.run(PROMPT, _plan())
    next(deltas)
    assert loop.decoder.pool.slots[0].leased
    deltas.close()
    assert not loop.decoder.pool.slots[0].leased


# --------------------------------------------------------------------------- on the tiny graph


@pytest.fixture
def tiny_loop(tiny_decoder, byte_tokenizer) -> TextGenerationLoop:
    session = ort.InferenceSession(str(tiny_decoder), providers=["CPUExecutionProvider"])
    spec = DecoderSpec.from_session(session, max_length=128, prefill_chunk=16)
    return TextGenerationLoop(SharedBufferDecoder(session, spec), byte_tokenizer, [EOS])


SAMPLED = {"temperature": 1.0, "top_k": 40, "top_p": 0.95, "repetition_penalty": 1.1}


def test_sampling_is_reproducible_per_seed(tiny_loop):
    prompt = list(range(40, 60))
    runs = [
        _collect(tiny_loop.run(prompt, _plan(max_tokens=24, seed=11, **SAMPLED)))[1]
        for _ in range(2)
    ]
    assert runs[0].stats.token_ids == runs[1].stats.token_ids
    # The repeat ran no prompt token: the slot kept the prompt's K/V and last logits.
    assert (runs[0].stats.cached_prompt_tokens, runs[1].stats.cached_prompt_tokens) == (0, 20)
    tiny_loop.decoder.pool.forget()
    cold = _collect(tiny_loop.run(prompt, _plan(max_tokens=24, seed=11, **SAMPLED)))[1]
    assert cold.stats.cached_prompt_tokens == 0
    assert cold.stats.token_ids == runs[0].stats.token_ids
    other = _collect(tiny_loop.run(prompt, _plan(max_tokens=24, seed=12, **SAMPLED)))[1]
    assert other.stats.token_ids != runs[0].stats.token_ids


def test_without_a_seed_each_request_draws_a_fresh_one(tiny_loop):
    plans = [_plan(max_tokens=24, **SAMPLED) for _ in range(3)]
    assert len({p.seed for p in plans}) == 3
    prompt = list(range(40, 60))
    outputs = {tuple(_collect(tiny_loop.run(prompt, p))[1].stats.token_ids) for p in plans}
    assert len(outputs) > 1  # "regenerate" gives another answer
    again = GenerationPlan.from_params(
        CompletionRequest(prompt="", model="t", stream=False, seed=plans[0].seed, **SAMPLED)
    )
    assert again.seed == plans[0].seed


def test_next_turn_prefills_only_its_new_tokens(tiny_loop, tiny_decoder, byte_tokenizer):
    first = list(range(60, 90))
    _, done = _collect(tiny_loop.run(first, _plan(max_tokens=6, ignore_eos=True)))
    answer = done.stats.token_ids
    second = [*first, *answer, 100, 101, 102]
    _, reused = _collect(tiny_loop.run(second, _plan(max_tokens=8, ignore_eos=True)))
    # Every token of the first turn that went through the model is reused: the prompt and
    # all answer tokens but the last, which was sampled and never run.
    assert reused.stats.cached_prompt_tokens == len(first) + len(answer) - 1

    session = ort.InferenceSession(str(tiny_decoder), providers=["CPUExecutionProvider"])
    spec = DecoderSpec.from_session(session, max_length=128, prefill_chunk=16)
    fresh = TextGenerationLoop(SharedBufferDecoder(session, spec), byte_tokenizer, [EOS])
    _, recomputed = _collect(fresh.run(second, _plan(max_tokens=8, ignore_eos=True)))
    assert recomputed.stats.cached_prompt_tokens == 0
    assert recomputed.stats.token_ids == reused.stats.token_ids


def test_stats_time_prefill_and_decode(tiny_loop):
    _, last = _collect(tiny_loop.run(list(range(1, 30)), _plan(max_tokens=5, ignore_eos=True)))
    assert last.stats.prefill_seconds > 0
    assert last.stats.decode_seconds > 0
    assert np.isfinite(last.stats.prefill_seconds + last.stats.decode_seconds)


class _FixedLogits:
    """A decoder whose logits are the same every step: 'a' 20, 'b' 19, everything else 0."""

    def __init__(self, scripted_factory, tokenizer) -> None:
        self._inner = scripted_factory([], 0)
        self.a, self.b = (tokenizer.token_to_id(c) for c in "ab")
        self.row = np.zeros(self._inner.spec.vocab_size, np.float32)
        self.spec, self.pool, self.provider = self._inner.spec, self._inner.pool, "fixed"

    def forward(self, slot, count):
        slot.length += count
        self.row[:] = 0.0
        self.row[self.a], self.row[self.b] = 20.0, 19.0
        return self.row


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, "aaaaaa"),
        # a: 20, 18, 18, 16, 16, 14 against b: 19, 19, 17, 17, 15, 15 as each is generated.
        ({"frequency_penalty": 2.0}, "ababab"),
        ({"presence_penalty": 1.5}, "abaaaa"),
        # The prompt holds 'a' (20 / 2 = 10 < 19); once 'b' is generated, 19 / 2 < 10.
        ({"repetition_penalty": 2.0}, "baaaaa"),
        # At temperature 1.5 'a' has p = 0.66 and 'b' 0.34: sampled unless cut.
        ({"temperature": 1.5, "top_k": 1}, "aaaaaa"),
        ({"temperature": 1.5, "top_p": 0.6}, "aaaaaa"),
    ],
)
def test_every_sampling_parameter_reaches_the_sampler(scripted, byte_tokenizer, params, expected):
    decoder = _FixedLogits(scripted, byte_tokenizer)
    loop = TextGenerationLoop(decoder, byte_tokenizer, [EOS])
    prompt = byte_tokenizer.encode("a prompt", add_special_tokens=False).ids
    text, _ = _collect(loop.run(prompt, _plan(max_tokens=6, **params)))
    assert text == expected


def test_temperature_draws_from_the_distribution(scripted, byte_tokenizer):
    loop = TextGenerationLoop(_FixedLogits(scripted, byte_tokenizer), byte_tokenizer, [EOS])
    text, _ = _collect(loop.run([1, 2, 3], _plan(max_tokens=60, temperature=1.5)))
    # p(b) = 0.34 at this temperature: about 20 of 60 (the draw is seeded, so this is exact).
    assert set(text) == {"a", "b"}
    assert 10 <= text.count("b") <= 30
