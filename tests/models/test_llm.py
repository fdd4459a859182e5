"""The LLM model type: chat format, tools, and SmolLM2 end to end on its prepared CPU graph.

The format and tool tests need no graph. The model tests share one loaded SmolLM2 (session
fixture through the model store; the first run prepares it) and compare against
onnxruntime-genai on the same graph folder.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from imagine_edge.models.base import GenerationChunk
from imagine_edge.models.catalog import prepared
from imagine_edge.models.chat_format import ChatMLFormat, ToolCallFilter, parse_tool_calls
from imagine_edge.models.llm import SMOLLM2, ChatModel, load_chat_model
from imagine_edge.models.store import Manifest
from imagine_edge.runtime.generate import TextGenerationLoop
from imagine_edge.runtime.kv_cache import DecoderSpec, KVCachePool, KVSlot
from imagine_edge.runtime.sampling import GenerationPlan
from imagine_edge.sdk.errors import ContextLengthError, InvalidRequestError, ModelUnavailableError
from imagine_edge.sdk.types import (
    ChatCompletionRequest,
    ChatMessage,
    ChatMessageToolCall,
    CompletionRequest,
    FinishReason,
    Function,
    Tools,
)

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
WEATHER = Tools(
    type="function",
    function={
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
)


def _msg(role: str, content: str | None, **kw) -> ChatMessage:
    return ChatMessage(role=role, content=content, **kw)


def _chat(*messages: ChatMessage, tools=None, **params) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        messages=list(messages), model=SMOLLM2, stream=False, tools=tools, **params
    )


# --------------------------------------------------------------------------- chat format


@pytest.mark.parametrize(
    "messages",
    [
        [_msg("user", "What is the capital of France?")],
        [_msg("system", "Be brief."), _msg("user", "Hi")],
        [_msg("user", "Hi"), _msg("assistant", "Hello! How can I help?"), _msg("user", "Bye")],
    ],
)
def test_plain_chat_renders_as_the_models_own_template(messages):
    jinja2 = pytest.importorskip("jinja2")
    expected = (
        jinja2.Environment()
        .from_string(SMOL_TEMPLATE)
        .render(messages=[m.model_dump() for m in messages], add_generation_prompt=True)
    )
    fmt = ChatMLFormat.from_template(SMOL_TEMPLATE)
    assert fmt.default_system == SMOL_SYSTEM
    assert fmt.render(messages) == expected


def test_content_parts_are_joined_and_non_text_parts_rejected():
    fmt = ChatMLFormat(default_system=None)
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    assert fmt.render([_msg("user", parts)], add_generation_prompt=False) == (
        "<|im_start|>user\nHello there<|im_end|>\n"
    )
    with pytest.raises(InvalidRequestError, match="image_url"):
        fmt.render([_msg("user", [{"type": "image_url", "image_url": {"url": "x"}}])])
    with pytest.raises(InvalidRequestError, match="at least one"):
        fmt.render([])


def test_tools_go_into_the_system_turn_and_calls_and_results_render_back():
    fmt = ChatMLFormat(default_system=SMOL_SYSTEM)
    call = ChatMessageToolCall(
        id="call_1",
        type="function",
        function=Function(name="get_weather", arguments='{"city": "Paris"}'),
    )
    prompt = fmt.render(
        [
            _msg("user", "Weather in Paris?"),
            _msg("assistant", None, tool_calls=[call]),
            _msg("tool", "sunny", tool_call_id="call_1"),
            _msg("tool", "22 C", tool_call_id="call_1"),
        ],
        tools=[WEATHER],
    )
    system, rest = prompt.split("<|im_end|>\n", 1)
    assert system.startswith(f"<|im_start|>system\n{SMOL_SYSTEM}\n\n# Tools")
    tools_json = system.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert json.loads(tools_json) == WEATHER.model_dump(exclude_none=True)
    assert '<tool_call>\n{"name": <function-name>' in system
    assert rest == (
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n"
        "<tool_response>\n22 C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_tool_calls_are_parsed_with_json_string_arguments():
    text = (
        "Let me check.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": {"tz": "CET"}}'
    )
    parsed = parse_tool_calls(text)
    assert parsed.text == "Let me check."
    assert [c.function.name for c in parsed.tool_calls] == ["get_weather", "get_time"]
    assert json.loads(parsed.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert json.loads(parsed.tool_calls[1].function.arguments) == {"tz": "CET"}
    assert all(c.type == "function" and c.id.startswith("call_") for c in parsed.tool_calls)
    assert len({c.id for c in parsed.tool_calls}) == 2


@pytest.mark.parametrize(
    "text",
    [
        "no tools here",
        "<tool_call>not json</tool_call>",
        '<tool_call>{"arguments": {}}</tool_call>',
    ],
)
def test_text_without_a_valid_call_stays_text(text):
    parsed = parse_tool_calls(text)
    assert (parsed.text, parsed.tool_calls) == (text, [])


def test_tool_filter_streams_text_before_the_tag_even_when_split():
    f = ToolCallFilter()
    out = [
        f.push(p) for p in ["Sure", " <to", "ol", "_call>", '{"name": "f", ', '"arguments": {}}']
    ]
    assert "".join(out) == "Sure "
    parsed = f.finish()
    assert parsed.text == ""
    assert [c.function.name for c in parsed.tool_calls] == ["f"]
    g = ToolCallFilter()
    assert g.push("a <tool") == "a "
    assert g.push("box>") == "<toolbox>"
    assert g.finish().text == ""


# --------------------------------------------------------------------------- the real model


@pytest.fixture(scope="session")
def manifest() -> Manifest:
    return prepared(SMOLLM2, ["cpu"])


@pytest.fixture(scope="session")
def model(manifest) -> ChatModel:
    m = ChatModel(manifest, max_length=2048)
    yield m
    m.close()


def _run(chunks) -> tuple[str, GenerationChunk]:
    items = list(chunks)
    return "".join(c.text for c in items), items[-1]


# With no system message the template adds SmolLM's own, after which the float model's first
# token is a near tie ("The" 25.33 against "L" 25.24 logits); the int8 activations of the CPU
# graph flip it (onnxruntime-genai on the same graph answers the same), so the question is asked
# with a plain system message, where the margin is real.
SYSTEM = "You are a helpful assistant."


def test_greedy_answer_names_paris(model):
    request = _chat(
        _msg("system", SYSTEM),
        _msg("user", "What is the capital of France?"),
        temperature=0,
        max_tokens=32,
    )
    text, last = _run(model.generate_chat(request, threading.Event()))
    assert "Paris" in text
    assert last.finish_reason == FinishReason.stop
    assert last.stats.prompt_tokens > 10
    assert 0 < last.stats.completion_tokens <= 32


LONG_ANSWER = "Write a detailed essay about the history of the Roman Empire."


def test_greedy_tokens_equal_onnxruntime_genai_for_64_tokens(model, manifest):
    og = pytest.importorskip("onnxruntime_genai")
    request = _chat(_msg("user", LONG_ANSWER), temperature=0, max_tokens=64)
    prompt = model.chat_prompt(request)
    deltas = list(model.loop.run(prompt, GenerationPlan.from_params(request, model.defaults)))
    ours = deltas[-1].stats.token_ids
    assert len(ours) == 64

    reference = og.Model(str(manifest.variant("cpu").dir))
    params = og.GeneratorParams(reference)
    params.set_search_options(do_sample=False, max_length=len(prompt) + 64)
    generator = og.Generator(reference, params)
    generator.append_tokens(np.array(prompt, dtype=np.int32))
    theirs = []
    while not generator.is_done() and len(theirs) < 64:
        generator.generate_next_token()
        theirs.append(int(generator.get_next_tokens()[0]))
    assert ours == theirs


SAMPLED = {"temperature": 0.7, "top_k": 50, "top_p": 0.9, "repetition_penalty": 1.1}


def test_streaming_and_non_streaming_give_the_same_text(model):
    # With the same seed (a request without one draws a fresh seed: docs/sampling.md).
    messages = [_msg("user", "Tell me a short story about a robot.")]
    texts = []
    for stream in (True, False):
        request = ChatCompletionRequest(
            messages=messages, model=SMOLLM2, stream=stream, max_tokens=48, seed=5, **SAMPLED
        )
        texts.append(_run(model.generate_chat(request, threading.Event()))[0])
    assert texts[0] == texts[1]
    assert len(texts[0]) > 20


def test_max_seconds_ends_a_long_generation_within_its_budget(model):
    # 2 s rather than 1: on two busy cores a decode step can take 0.1 s, the budget's 5%.
    request = CompletionRequest(
        prompt="Once upon a time",
        model=SMOLLM2,
        stream=True,
        max_seconds=2,
        max_tokens=1800,
        ignore_eos=True,
        **SAMPLED,
    )
    start = time.perf_counter()
    _, last = _run(model.generate_completion(request, threading.Event()))
    elapsed = time.perf_counter() - start
    assert last.finish_reason == FinishReason.length
    assert last.stats.completion_tokens < 1800
    assert 2.0 <= elapsed <= 2.2


def test_second_chat_turn_prefills_only_its_new_tokens(model):
    first = _chat(_msg("user", "Name three colours."), temperature=0, max_tokens=24)
    prompt_one = model.chat_prompt(first)
    deltas = list(model.loop.run(prompt_one, GenerationPlan.from_params(first, model.defaults)))
    answer, generated = "".join(d.text for d in deltas), deltas[-1].stats.token_ids
    turn_two = _chat(
        *first.messages,
        _msg("assistant", answer),
        _msg("user", "And three fruits?"),
        temperature=0,
        max_tokens=8,
    )
    prompt_two = model.chat_prompt(turn_two)
    _, last = _run(model.generate_chat(turn_two, threading.Event()))
    stats = last.stats
    assert stats.prompt_tokens == len(prompt_two)
    # The cache held the first prompt and every answer token but the last (sampled, never run);
    # all of it that the second prompt starts with is reused, and only the rest is prefilled.
    held = [*prompt_one, *generated[:-1]]
    common = next(
        (i for i, (a, b) in enumerate(zip(held, prompt_two, strict=False)) if a != b), len(held)
    )
    assert stats.cached_prompt_tokens == common
    assert stats.cached_prompt_tokens >= len(prompt_one)


def test_context_overflow_is_a_400(model):
    request = _chat(_msg("user", "Hi"), max_tokens=5000)
    with pytest.raises(ContextLengthError, match="2048") as info:
        list(model.generate_chat(request, threading.Event()))
    assert info.value.status_code == 400


# --------------------------------------------------------------------------- scripted output


class _Scripted:
    """A decoder whose greedy output is ``script`` (token ids), on a real KV pool."""

    def __init__(self, script: list[int], prompt_length: int, vocab: int) -> None:
        self._spec = DecoderSpec(1, 1, 8, vocab, max_length=4096, prefill_chunk=512)
        self._pool = KVCachePool(self._spec, 1)
        self.script, self.prompt_length = script, prompt_length
        self._logits = np.zeros(vocab, np.float32)

    spec = property(lambda self: self._spec)
    pool = property(lambda self: self._pool)
    provider = "scripted"

    def forward(self, slot: KVSlot, count: int) -> np.ndarray:
        slot.length += count
        i = slot.length - self.prompt_length
        self._logits[:] = 0.0
        self._logits[self.script[i] if 0 <= i < len(self.script) else 2] = 30.0
        return self._logits

    def resident_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


def _scripted_model(model: ChatModel, request: ChatCompletionRequest, text: str) -> ChatModel:
    """``model`` with its decoder replaced by one that answers ``text`` to ``request``."""
    prompt = model.chat_prompt(request)
    script = model.loop.encode(text)
    fake = object.__new__(ChatModel)
    fake.__dict__.update(model.__dict__)
    decoder = _Scripted(script, len(prompt), model.loop.decoder.spec.vocab_size)
    fake.loop = TextGenerationLoop(decoder, model.loop.tokenizer, model.loop.eos_token_ids)
    return fake


def test_tool_call_output_becomes_contract_tool_calls(model):
    request = _chat(_msg("user", "Weather in Paris?"), tools=[WEATHER], temperature=0)
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    answer = f"Checking.\n<tool_call>\n{call}\n</tool_call>"
    chunks = list(_scripted_model(model, request, answer).generate_chat(request, threading.Event()))
    last = chunks[-1]
    assert "".join(c.text for c in chunks) == "Checking.\n"
    assert last.finish_reason == FinishReason.tool_calls
    (call,) = last.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}


def test_without_tools_tool_markup_is_plain_text(model):
    request = _chat(_msg("user", "Show me markup"), temperature=0)
    answer = '<tool_call>{"name": "x", "arguments": {}}</tool_call>'
    text, last = _run(
        _scripted_model(model, request, answer).generate_chat(request, threading.Event())
    )
    assert text == answer
    assert last.finish_reason == FinishReason.stop
    assert last.tool_calls is None


def test_multibyte_text_streams_without_broken_characters(model):
    request = _chat(_msg("user", "Say something in several scripts"), temperature=0)
    answer = "Voilà: 日本語, Ελληνικά, emoji 🎉🚀 — done"
    chunks = list(_scripted_model(model, request, answer).generate_chat(request, threading.Event()))
    pieces = [c.text for c in chunks if c.text]
    assert "".join(pieces) == answer
    assert not any("\ufffd" in p for p in pieces)


def test_auto_target_falls_back_to_the_cpu_graph_visibly(manifest):
    if "qnn" in manifest.variants:
        pytest.skip("the QNN graphs are prepared: no fallback to observe")
    with pytest.raises(ModelUnavailableError, match="no prepared QNN graphs"):
        ChatModel(manifest, max_length=256, target="qnn")
    model = ChatModel(manifest, max_length=256, target="auto")
    assert model.execution_provider.startswith("CPUExecutionProvider")
    assert "fallback: no prepared QNN graphs" in model.execution_provider
    assert model.resident_bytes() > 50_000_000
    model.close()
    assert model.resident_bytes() == 0
    with pytest.raises(ModelUnavailableError, match="closed"):
        list(
            model.generate_completion(
                CompletionRequest(prompt="x", model=SMOLLM2, stream=False), threading.Event()
            )
        )


def test_adaptive_decode_threads_switch_sessions_without_changing_the_output(model, manifest):
    # The fixture's model keeps a sleeping and a spinning session of the graph, on one
    # memory-mapped pre-packed copy, and picks one per step; a sleeping-only model is the
    # reference. Probes switch sessions within the first tokens, so 64 tokens cover switches.
    decoder = model.loop.decoder
    assert len(decoder.sessions) == 2
    assert "decode threads: adaptive" in model.execution_provider
    assert ";" not in model.execution_provider  # health separates models with semicolons
    reference = ChatModel(manifest, max_length=256, threads="sleep")
    assert len(reference.loop.decoder.sessions) == 1
    assert reference.execution_provider.endswith("decode threads: workers sleep")
    request = _chat(_msg("user", LONG_ANSWER), temperature=0, max_tokens=64)
    ids = []
    for m in (model, reference):
        plan = GenerationPlan.from_params(request, m.defaults)
        ids.append(list(m.loop.run(m.chat_prompt(request), plan))[-1].stats.token_ids)
    reference.close()
    assert ids[0] == ids[1]
    stats = decoder.policy.stats()
    assert stats["probes"] >= 1
    assert set(stats["median_step_ms"]) == {"sleep", "spin"}


@pytest.mark.parametrize(("raw", "mode"), [("auto", "auto"), ("1", "spin"), ("0", "sleep")])
def test_the_spin_setting_names_a_thread_mode(raw, mode, monkeypatch, manifest):
    seen = {}

    def fake_model(manifest, **kwargs):
        seen.update(kwargs)
        return "model"

    monkeypatch.setattr("imagine_edge.models.llm.ChatModel", fake_model)
    monkeypatch.setenv("IMAGINE_EDGE_LLM_SPIN", raw)
    assert load_chat_model(manifest) == "model"
    assert seen["threads"] == mode


def test_a_bad_spin_setting_is_refused(monkeypatch, manifest):
    monkeypatch.setenv("IMAGINE_EDGE_LLM_SPIN", "yes")
    with pytest.raises(ValueError, match="auto, 1 or 0"):
        load_chat_model(manifest)
