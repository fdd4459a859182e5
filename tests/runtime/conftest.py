"""Fixtures of the runtime tests: a tiny decoder graph shaped like the onnxruntime-genai builder's,
a byte-level tokenizer of the same vocabulary, and a scripted decoder for exact loop tests.

The graph has the builder's interface (``input_ids``, ``attention_mask``,
``past_key_values.N.key/value`` -> ``logits``, ``present.N.key/value``) and its attention: the
``GroupQueryAttention`` contrib op with rotary embeddings inside, ``seqlens_k`` and
``total_sequence_length`` computed from the 2-D attention mask. Weights are random (seeded), so
the logits are arbitrary but position-sensitive: any KV-cache bookkeeping error changes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from imagine_edge.runtime.kv_cache import DecoderSpec, KVCachePool, KVSlot

# 256 byte tokens, then <eos> (256) and <|im_start|> (257).
VOCAB = 258
EOS = 256
HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_SIZE = 16
LAYERS = 2
MAX_POSITIONS = 256
_GQA_EXTRA_INPUTS = ("seqlens_k", "total_len", "cos_cache", "sin_cache")


def _rotary_caches() -> tuple[np.ndarray, np.ndarray]:
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, HEAD_SIZE, 2, dtype=np.float32) / HEAD_SIZE))
    angles = np.outer(np.arange(MAX_POSITIONS, dtype=np.float32), inv_freq)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def build_tiny_decoder(path: Path, *, last_logits_only: bool = False, seed: int = 0) -> Path:
    """Write a 2-layer GQA decoder to ``path``; ``last_logits_only`` prunes the LM head."""
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    cos, sin = _rotary_caches()
    inits = [
        weight("embed", VOCAB, HIDDEN, scale=1.0),
        weight("lm_head", HIDDEN, VOCAB, scale=0.02),
        numpy_helper.from_array(cos, "cos_cache"),
        numpy_helper.from_array(sin, "sin_cache"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
    ]
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["h0"]),
        helper.make_node("ReduceSum", ["attention_mask", "axis1"], ["mask_sum"], keepdims=0),
        helper.make_node("Sub", ["mask_sum", "one"], ["seqlens64"]),
        helper.make_node("Cast", ["seqlens64"], ["seqlens_k"], to=TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], ["mask_shape"]),
        helper.make_node("Gather", ["mask_shape", "one"], ["total64"], axis=0),
        helper.make_node("Cast", ["total64"], ["total_len"], to=TensorProto.INT32),
    ]
    kv_shape = ["batch", KV_HEADS, "past_len", HEAD_SIZE]
    present_shape = ["batch", KV_HEADS, "total_len", HEAD_SIZE]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total"]),
    ]
    outputs = []
    h = "h0"
    for i in range(LAYERS):
        inits += [
            weight(f"wq{i}", HIDDEN, HEADS * HEAD_SIZE),
            weight(f"wk{i}", HIDDEN, KV_HEADS * HEAD_SIZE),
            weight(f"wv{i}", HIDDEN, KV_HEADS * HEAD_SIZE),
            weight(f"wo{i}", HEADS * HEAD_SIZE, HIDDEN),
        ]
        past_k, past_v = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
        inputs += [
            helper.make_tensor_value_info(past_k, TensorProto.FLOAT, kv_shape),
            helper.make_tensor_value_info(past_v, TensorProto.FLOAT, kv_shape),
        ]
        outputs += [
            helper.make_tensor_value_info(f"present.{i}.key", TensorProto.FLOAT, present_shape),
            helper.make_tensor_value_info(f"present.{i}.value", TensorProto.FLOAT, present_shape),
        ]
        nodes += [
            helper.make_node("MatMul", [h, f"wq{i}"], [f"q{i}"]),
            helper.make_node("MatMul", [h, f"wk{i}"], [f"k{i}"]),
            helper.make_node("MatMul", [h, f"wv{i}"], [f"v{i}"]),
            helper.make_node(
                "GroupQueryAttention",
                [f"q{i}", f"k{i}", f"v{i}", past_k, past_v, *_GQA_EXTRA_INPUTS],
                [f"attn{i}", f"present.{i}.key", f"present.{i}.value"],
                domain="com.microsoft",
                num_heads=HEADS,
                kv_num_heads=KV_HEADS,
                do_rotary=1,
            ),
            helper.make_node("MatMul", [f"attn{i}", f"wo{i}"], [f"o{i}"]),
            helper.make_node("Add", [h, f"o{i}"], [f"h{i + 1}"]),
        ]
        h = f"h{i + 1}"
    if last_logits_only:
        inits.append(numpy_helper.from_array(np.array(-1, np.int64), "minus_one"))
        nodes += [
            helper.make_node("Gather", [h, "minus_one"], ["h_last"], axis=1),
            helper.make_node("Unsqueeze", ["h_last", "axis1"], ["h_final"]),
        ]
        h = "h_final"
    nodes.append(helper.make_node("MatMul", [h, "lm_head"], ["logits"]))
    logits_shape = ["batch", 1 if last_logits_only else "seq", VOCAB]
    outputs.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, logits_shape))
    graph = helper.make_graph(nodes, "tiny_gqa_decoder", inputs, outputs, inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny decoder whose logits cover every input position (the builder's default)."""
    return build_tiny_decoder(tmp_path_factory.mktemp("tiny") / "decoder.onnx")


@pytest.fixture(scope="session")
def tiny_decoder_last_logits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same decoder with the LM head pruned to the last position."""
    path = tmp_path_factory.mktemp("tiny_last") / "decoder.onnx"
    return build_tiny_decoder(path, last_logits_only=True)


@pytest.fixture(scope="session")
def byte_tokenizer() -> Tokenizer:
    """A byte-level tokenizer with no merges: every UTF-8 byte is one token, so multi-byte
    characters always span several tokens. Ids 256 and 257 are special tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [AddedToken("<eos>", special=True), AddedToken("<|im_start|>", special=True)]
    )
    assert tok.get_vocab_size() == VOCAB
    return tok


class ScriptedDecoder:
    """A decoder whose greedy continuation is a given token script, on a real KV pool.

    The logits after position p put all the mass on ``script[p - prompt_length]``; ``delay``
    seconds are slept per forward call (for wall-clock budget tests, without burning CPU).
    """

    def __init__(
        self,
        script: Sequence[int],
        prompt_length: int,
        *,
        max_length: int = 256,
        prefill_chunk: int = 8,
        delay: float = 0.0,
        num_slots: int = 2,
    ) -> None:
        self._spec = DecoderSpec(
            num_layers=1,
            num_kv_heads=1,
            head_size=8,
            vocab_size=VOCAB,
            max_length=max_length,
            prefill_chunk=prefill_chunk,
        )
        self._pool = KVCachePool(self._spec, num_slots)
        self.script = list(script)
        self.prompt_length = prompt_length
        self.delay = delay
        self.calls: list[int] = []
        self._logits = np.zeros(VOCAB, np.float32)

    @property
    def spec(self) -> DecoderSpec:
        return self._spec

    @property
    def pool(self) -> KVCachePool:
        return self._pool

    @property
    def provider(self) -> str:
        return "scripted"

    def forward(self, slot: KVSlot, count: int) -> npt.NDArray[np.float32]:
        if self.delay:
            time.sleep(self.delay)
        self.calls.append(count)
        slot.length += count
        index = slot.length - self.prompt_length
        self._logits[:] = 0.0
        self._logits[self.script[index] if 0 <= index < len(self.script) else EOS] = 30.0
        return self._logits

    def resident_bytes(self) -> int:
        return self._pool.resident_bytes()

    def close(self) -> None:
        self._pool.clear()


@pytest.fixture
def scripted() -> Callable[..., ScriptedDecoder]:
    """Factory of :class:`ScriptedDecoder` (same arguments)."""
    return ScriptedDecoder


# --------------------------------------------------------------------------- static graphs

STATIC_CONTEXT = 32
STATIC_PREFILL = 4
STATIC_DIM, STATIC_HEAD = 16, 8


def static_weights(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {
        "embed": (VOCAB, STATIC_DIM),
        "pos_embed": (STATIC_CONTEXT, STATIC_DIM),
        "wq": (STATIC_DIM, STATIC_HEAD),
        "wk": (STATIC_DIM, STATIC_HEAD),
        "wv": (STATIC_DIM, STATIC_HEAD),
        "wo": (STATIC_HEAD, STATIC_DIM),
        "lm_head": (STATIC_DIM, VOCAB),
    }
    return {k: (rng.standard_normal(v) * 0.5).astype(np.float32) for k, v in shapes.items()}


def build_tiny_static(path: Path, seq: int, weights: dict[str, np.ndarray]) -> Path:
    """A one-layer, one-head decoder with the QNN graphs' static interface (seq = S)."""
    c, f = STATIC_CONTEXT, TensorProto.FLOAT
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    inits += [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array(1.0 / np.sqrt(STATIC_HEAD), np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Gather", ["embed", "input_ids"], ["tok"]),
        helper.make_node("Gather", ["pos_embed", "position_ids"], ["pos"]),
        helper.make_node("Add", ["tok", "pos"], ["h"]),
    ]
    for name in ("q", "k", "v"):
        nodes += [
            helper.make_node("MatMul", ["h", f"w{name}"], [f"{name}3"]),
            helper.make_node("Unsqueeze", [f"{name}3", "axis1"], [f"{name}4"]),
        ]
    nodes += [
        helper.make_node("Identity", ["k4"], ["present.0.key"]),
        helper.make_node("Identity", ["v4"], ["present.0.value"]),
        helper.make_node("Concat", ["past_key_values.0.key", "k4"], ["k_all"], axis=2),
        helper.make_node("Concat", ["past_key_values.0.value", "v4"], ["v_all"], axis=2),
        helper.make_node("Transpose", ["k_all"], ["k_t"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q4", "k_t"], ["raw"]),
        helper.make_node("Mul", ["raw", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "attention_mask"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v_all"], ["att4"]),
        helper.make_node("Squeeze", ["att4", "axis1"], ["att"]),
        helper.make_node("MatMul", ["att", "wo"], ["o"]),
        helper.make_node("Add", ["h", "o"], ["h2"]),
        helper.make_node("MatMul", ["h2", "lm_head"], ["logits"]),
    ]
    kv = [1, 1, c, STATIC_HEAD]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, seq]),
        helper.make_tensor_value_info("attention_mask", f, [1, 1, seq, c + seq]),
        helper.make_tensor_value_info("past_key_values.0.key", f, kv),
        helper.make_tensor_value_info("past_key_values.0.value", f, kv),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", f, [1, seq, VOCAB]),
        helper.make_tensor_value_info("present.0.key", f, [1, 1, seq, STATIC_HEAD]),
        helper.make_tensor_value_info("present.0.value", f, [1, 1, seq, STATIC_HEAD]),
    ]
    graph = helper.make_graph(nodes, f"tiny_static_{seq}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def static_reference_logits(weights: dict[str, np.ndarray], ids: Sequence[int]) -> np.ndarray:
    """Last-position logits of ``ids`` by plain causal attention in numpy."""
    w = weights
    h = w["embed"][list(ids)] + w["pos_embed"][: len(ids)]
    q, k, v = h @ w["wq"], h @ w["wk"], h @ w["wv"]
    scores = (q @ k.T) / np.sqrt(STATIC_HEAD)
    scores[np.triu(np.ones_like(scores, dtype=bool), 1)] = -np.inf
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = h + (probs @ v) @ w["wo"]
    result: np.ndarray = (out @ w["lm_head"])[-1]
    return result


@dataclass(frozen=True)
class TinyStatic:
    """The tiny static decoder pair and what its tests need to know about it."""

    prefill: Path
    decode: Path
    context: int
    prefill_length: int
    reference: Callable[[Sequence[int]], np.ndarray]


@pytest.fixture(scope="session")
def tiny_static(tmp_path_factory: pytest.TempPathFactory) -> TinyStatic:
    folder = tmp_path_factory.mktemp("static")
    weights = static_weights()
    return TinyStatic(
        prefill=build_tiny_static(folder / "prefill.onnx", STATIC_PREFILL, weights),
        decode=build_tiny_static(folder / "decode.onnx", 1, weights),
        context=STATIC_CONTEXT,
        prefill_length=STATIC_PREFILL,
        reference=lambda ids: static_reference_logits(weights, ids),
    )
