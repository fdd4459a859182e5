"""Gemma 3 270M from its Q4_K_M GGUF: quality against its float weights, chat format, serving.

The float reference is the GGUF dequantized to float32 by transformers and run in torch (the
store's ``hf/`` folder); the CPU graph is the builder's Gemma 3 graph with every weight
re-encoded from the GGUF's blocks, run token by token through its KV cache.
"""

from __future__ import annotations

import threading

import jinja2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from imagine_edge.models.catalog import get_entry, prepared
from imagine_edge.models.chat_gemma import GemmaFormat
from imagine_edge.models.llm import ChatModel
from imagine_edge.models.store import Manifest
from imagine_edge.runtime.generate import GenerationPlan
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    FinishReason,
)

from .perplexity import float_logits, perplexity

pytestmark = pytest.mark.model

GEMMA = "gemma3-270m"
PROSE = """\
The village sat in a shallow valley between two low hills, and a small river ran through the \
middle of it. In the mornings a thin mist lay over the water, and the farmers walked down to \
the fields before the sun had climbed above the trees. Most of the houses were built of grey \
stone, with red tiled roofs and wooden shutters that were painted blue or green every few years.

On market days the square in front of the church filled with stalls. People came from the \
nearby towns to buy cheese, honey, bread and vegetables, and to sell the things they had made \
over the winter. The baker opened his shop at six o'clock, and by seven there was usually a \
line of customers waiting outside the door, talking about the weather and the price of grain.

In the summer the children swam in the river and played in the orchards until it was dark. \
Their parents sat outside in the evenings, drinking coffee and watching the swallows circle \
above the rooftops. Visitors sometimes said that nothing ever happened in the village, and \
the people who lived there agreed with them, because that was exactly what they liked about it.

When the old school closed, the building was turned into a library and a small museum. The \
museum kept photographs of the village as it had looked a hundred years before, and many of \
the streets in those pictures had hardly changed at all.
"""


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return prepared(GEMMA, ["cpu"])


@pytest.fixture(scope="module")
def model(manifest: Manifest) -> ChatModel:
    m = ChatModel(manifest, max_length=1024)
    yield m
    m.close()


def _ids(manifest: Manifest) -> list[int]:
    tokenizer = Tokenizer.from_file(str(manifest.tokenizer))
    bos = manifest.special_tokens.bos_token_id
    assert bos is not None
    return [bos, *tokenizer.encode(PROSE, add_special_tokens=False).ids]


def _graph_logits(manifest: Manifest, ids: list[int]) -> npt.NDArray[np.float32]:
    """Every position's logits, one token per call. The sliding-window layers need a KV buffer
    of at least their window (512), so the cache is one shared buffer of 1024 positions that
    each call's present K/V overwrites (the runtime's layout)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    path = manifest.variant("cpu").graphs["decoder"].path
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    arch = manifest.architecture
    assert arch is not None
    past_names = [i.name for i in session.get_inputs() if i.name.startswith("past_")]
    present_names = [n.replace("past_key_values", "present") for n in past_names]
    shape = (1, arch.num_kv_heads, 1024, arch.head_dim)
    past = {n: np.zeros(shape, np.float32) for n in past_names}
    rows = []
    for i, token in enumerate(ids):
        feed = {"input_ids": np.array([[token]], np.int64)}
        feed["attention_mask"] = np.ones((1, i + 1), np.int64)
        logits, *present = session.run(["logits", *present_names], feed | past)
        rows.append(logits[0, -1])
        past = dict(zip(past_names, present, strict=True))
    return np.asarray(rows, np.float32)


def test_cpu_graph_perplexity_is_within_3_percent_of_float(manifest: Manifest) -> None:
    ids = _ids(manifest)
    assert 250 <= len(ids) <= 400
    reference = perplexity(float_logits(manifest, ids), ids)
    graph = perplexity(_graph_logits(manifest, ids), ids)
    # A real model on ordinary prose: far from uniform (262144) and from memorised (1).
    assert 5.0 < reference < 60.0
    assert abs(graph - reference) / reference <= 0.03, (graph, reference)


def test_manifest_describes_gemma(manifest: Manifest) -> None:
    arch = manifest.architecture
    assert arch is not None
    assert (arch.num_layers, arch.hidden_size, arch.vocab_size) == (18, 640, 262144)
    assert (arch.num_attention_heads, arch.num_kv_heads, arch.head_dim) == (4, 1, 256)
    special = manifest.special_tokens
    assert special.bos_token_id == 2
    assert set(special.eos_token_ids) == {1, special.ids["<end_of_turn>"]}
    assert "re-encoded exactly" in manifest.variant("cpu").quantization
    card = get_entry(GEMMA).model_card
    assert "BASE model" in card
    assert "not instruction-tuned" in card


CONVERSATIONS = [
    [ChatMessage(role="user", content="Hello")],
    [
        ChatMessage(role="system", content="Answer briefly."),
        ChatMessage(role="user", content="Name a colour."),
        ChatMessage(role="assistant", content="Blue."),
        ChatMessage(role="user", content="Another one?"),
    ],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_chat_renders_as_the_manifests_template(
    manifest: Manifest, messages: list[ChatMessage]
) -> None:
    assert manifest.chat_template is not None
    template = jinja2.Environment().from_string(manifest.chat_template)
    plain = [{"role": m.role, "content": m.content} for m in messages]
    expected = template.render(messages=plain, bos_token="<bos>", add_generation_prompt=True)
    assert GemmaFormat().render(messages) == expected


def test_tools_and_unknown_roles_are_refused() -> None:
    fmt = GemmaFormat()
    tool = {"type": "function", "function": {"name": "f", "parameters": {}}}
    with pytest.raises(InvalidRequestError, match="tool"):
        fmt.render([ChatMessage(role="user", content="hi")], [tool])  # type: ignore[list-item]
    with pytest.raises(InvalidRequestError, match="role"):
        fmt.render([ChatMessage(role="tool", content="x")])


def test_greedy_completion_continues_the_text(model: ChatModel) -> None:
    request = CompletionRequest(
        model=GEMMA, prompt="One, two, three, four,", temperature=0, max_tokens=8, stream=False
    )
    chunks = list(model.generate_completion(request, threading.Event()))
    text = "".join(c.text for c in chunks)
    assert text.startswith(" five, six, seven")
    assert chunks[-1].stats is not None
    assert chunks[-1].stats.prompt_tokens == 9  # <bos> and eight tokens of text


PROMPTS = (
    "One, two, three, four,",
    "The capital of France is",
    "Once upon a time, there was a little girl who",
)


def _ours(model: ChatModel, prompt: str, n: int) -> list[int]:
    """Our greedy tokens through the runtime's loop (the completions path's prompt)."""
    request = CompletionRequest(
        model=GEMMA, prompt=prompt, temperature=0, max_tokens=n, stream=False,
        repetition_penalty=1.0,
    )  # fmt: skip
    ids = model.loop.encode(GemmaFormat().completion(prompt))
    deltas = list(model.loop.run(ids, GenerationPlan.from_params(request, model.defaults)))
    stats = deltas[-1].stats
    assert stats is not None
    return list(stats.token_ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_greedy_tokens_follow_the_float_model(model: ChatModel, manifest: Manifest) -> None:
    """32 greedy tokens on three prompts against transformers' float model on the same weights:
    measured agreement 32, 13 and 32 tokens (the int8 activations flip near ties)."""
    import torch
    from transformers import AutoModelForCausalLM

    assert manifest.float_weights is not None
    ref = AutoModelForCausalLM.from_pretrained(str(manifest.float_weights), dtype=torch.float32)
    agreed = []
    for prompt in PROMPTS:
        ids = model.loop.encode("<bos>" + prompt)
        with torch.inference_mode():
            out = ref.eval().generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)
        theirs = out[0, len(ids) :].tolist()
        agreed.append(_common_prefix(_ours(model, prompt, 32), theirs))
    assert min(agreed) >= 8, agreed
    assert sum(agreed) >= 64, agreed


def test_greedy_tokens_follow_llama_cpp_on_the_same_file(
    model: ChatModel, manifest: Manifest
) -> None:
    """llama.cpp (an optional peer) on the store's GGUF: most of 32 greedy tokens agree.

    Measured with llama-cpp-python 0.3.36 (2 threads, AVX-512): 32, 11 and 5 agreeing tokens.
    On the third prompt llama.cpp departs from the float model after 5 tokens, where ours follows
    the float model for all 32 (the test above)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    assert manifest.float_weights is not None
    gguf = manifest.float_weights.parent / "gemma-3-270m-q4_k_m.gguf"
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, n_threads=2, verbose=False)
    agreed = []
    for prompt in PROMPTS:
        ids = model.loop.encode("<bos>" + prompt)
        theirs = []
        for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            if token in manifest.special_tokens.eos_token_ids or len(theirs) == 32:
                break
            theirs.append(int(token))
        llm.reset()
        agreed.append(_common_prefix(_ours(model, prompt, 32), theirs))
    assert sum(agreed) >= 48, agreed


def test_chat_answers_in_gemmas_turn_format(model: ChatModel) -> None:
    request = ChatCompletionRequest(
        model=GEMMA,
        messages=[ChatMessage(role="user", content="What is the capital of France?")],
        temperature=0,
        max_tokens=48,
        stream=False,
    )
    prompt = model.chat_prompt(request)
    assert prompt[:2] == [2, model.manifest.special_tokens.ids["<start_of_turn>"]]
    chunks = list(model.generate_chat(request, threading.Event()))
    text = "".join(c.text for c in chunks)
    assert text.strip()
    assert "<start_of_turn>" not in text
    assert chunks[-1].finish_reason in (FinishReason.stop, FinishReason.length)
