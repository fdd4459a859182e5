"""qwen2 and qwen3, which have no real weights offline, on tiny random models.

The test draws a random transformers model, quantizes its projections with the ``gguf`` package
into a GGUF file of that architecture (mixed block types), puts the dequantized values back into
the transformers model (so both sides hold the same weights), runs the model builder and the
GGUF re-encoding, and compares the graph's logits with transformers' float forward. (The
tokenizer comes from a tiny word-level tokenizer here, not from GGUF metadata.)
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import onnxruntime as ort
import pytest
from gguf.quants import dequantize, quantize

from imagine_edge.models.prepare._common import build_cpu_graph

T = gguf.GGMLQuantizationType
VOCAB, HIDDEN, MLP, LAYERS, HEADS, KV_HEADS = 96, 128, 256, 2, 4, 2
# GGUF name -> transformers name and block type: K-quants need K % 256, so the legacy ones here.
PROJECTIONS = {
    "attn_q": ("self_attn.q_proj", T.Q4_0), "attn_k": ("self_attn.k_proj", T.Q5_1),
    "attn_v": ("self_attn.v_proj", T.Q8_0), "attn_output": ("self_attn.o_proj", T.Q4_1),
    "ffn_gate": ("mlp.gate_proj", T.Q5_0), "ffn_up": ("mlp.up_proj", T.Q5_0),
    "ffn_down": ("mlp.down_proj", T.Q8_0),
}  # fmt: skip


def _tokenizer(hf: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w1").save_pretrained(str(hf))


def _tiny_model(arch: str, tmp: Path) -> tuple[object, Path]:
    """A random model saved as ``tmp/hf`` and as ``tmp/tiny.gguf`` with the same weights."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config, Qwen3Config

    kwargs = dict(  # noqa: C408
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=256,
        tie_word_embeddings=arch == "qwen3", eos_token_id=1, bos_token_id=None,
    )  # fmt: skip
    config = Qwen2Config(**kwargs) if arch == "qwen2" else Qwen3Config(head_dim=32, **kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    writer = gguf.GGUFWriter(str(tmp / "tiny.gguf"), arch)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)

    def put(gguf_name: str, hf_name: str, qtype: T) -> None:
        raw = quantize(state[hf_name].astype(np.float32), qtype)
        writer.add_tensor(gguf_name, raw, raw_dtype=qtype)
        state[hf_name] = dequantize(raw, qtype).reshape(state[hf_name].shape)

    put("token_embd.weight", "model.embed_tokens.weight", T.Q8_0)
    if arch == "qwen2":  # untied: its own head, 4-bit with offsets
        put("output.weight", "lm_head.weight", T.Q4_1)
    for layer in range(LAYERS):
        for g, (h, qtype) in PROJECTIONS.items():
            put(f"blk.{layer}.{g}.weight", f"model.layers.{layer}.{h}.weight", qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if arch == "qwen3":
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    hf = tmp / "hf"
    model.save_pretrained(str(hf))
    _tokenizer(hf)
    return model, tmp / "tiny.gguf"


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_tiny_random_model_matches_transformers(tmp_path: Path, arch: str) -> None:
    import torch

    model, path = _tiny_model(arch, tmp_path)
    variant = build_cpu_graph(tmp_path / "hf", tmp_path / "cpu", "int4", LAYERS, gguf=path)
    assert "re-encoded exactly" in variant.quantization

    ids = [5, 17, 42, 3, 88, 9, 60, 23]
    with torch.inference_mode():
        reference = model(torch.tensor([ids])).logits[0].numpy()  # type: ignore[operator]
    session = ort.InferenceSession(
        str(variant.graphs["decoder"].path), providers=["CPUExecutionProvider"]
    )
    past_names = [i.name for i in session.get_inputs() if i.name.startswith("past_")]
    present_names = [n.replace("past_key_values", "present") for n in past_names]
    head_dim = HIDDEN // HEADS if arch == "qwen2" else 32
    past = {n: np.zeros((1, KV_HEADS, 0, head_dim), np.float32) for n in past_names}
    rows = []
    for i, token in enumerate(ids):
        feed = {"input_ids": np.array([[token]], np.int64)}
        feed["attention_mask"] = np.ones((1, i + 1), np.int64)
        logits, *present = session.run(["logits", *present_names], feed | past)
        rows.append(logits[0, -1])
        past = dict(zip(past_names, present, strict=True))
    got = np.asarray(rows)
    # The CPU EP quantizes activations to int8 (accuracy level 4): close, not bit-equal.
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(got, reference, atol=0.05 * scale)
    assert (got.argmax(-1) == reference.argmax(-1)).mean() >= 0.75
