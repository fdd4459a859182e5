"""Gemma 3 through the QNN exporter: its torch forward against transformers' on the same float
weights, and the truncated graphs (first 2 layers + final norm + the 262,144-row head) on HTP.

The graph signature and host protocol are the Llama graphs' (``test_qnn_graphs.py`` tests
``HostCache``); the on-NPU test compares the HTP with the CPU EP running the same QDQ graphs as
quantized (``CPU_REFERENCE_CONFIG``), top-1 on every prompt row and on teacher-forced decode steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import numpy_helper
from tokenizers import Tokenizer

from imagine_edge.models.prepare.llm_qnn import HostCache, QnnGraphSpec
from imagine_edge.models.store import Manifest, OptionValue

from .perplexity import float_logits
from .qnn_sessions import htp_and_cpu_sessions, static_graph

VOCAB, HEAD_DIM = 262144, 256
# (prompt, continuation fed one token at a time to the decode graph): a chat turn in Gemma's
# format and plain text, so that the decode steps see varied inputs (a 2-layer model's own
# greedy continuation repeats one token).
TEXTS = (
    (
        "<start_of_turn>user\nName three colours.<end_of_turn>\n<start_of_turn>model\n",
        "Red, blue and green.",
    ),
    ("The capital of France is Paris, and the capital of Spain is", " Madrid, and Rome"),
)
DECODE_STEPS = 4


def _truncated_spec(opts: Mapping[str, OptionValue]) -> QnnGraphSpec:
    """The shapes of Gemma 3's truncated QNN graphs, from their variant's options."""
    return QnnGraphSpec(
        int(opts["num_layers"]), 1, HEAD_DIM, VOCAB, int(opts["context_length"]),
        int(opts["prefill_length"]),
    )  # fmt: skip


def test_gelu_tanh_is_torchs_tanh_approximation() -> None:
    import torch

    from imagine_edge.models.prepare.llm_qnn_gemma import gelu_tanh

    x = torch.linspace(-12.0, 12.0, 4801)
    expected = torch.nn.functional.gelu(x, approximate="tanh")
    torch.testing.assert_close(gelu_tanh(x), expected, atol=2e-6, rtol=0)
    # ... and measurably not the erf GELU (the two differ by up to 4.7e-4).
    assert (gelu_tanh(x) - torch.nn.functional.gelu(x)).abs().max() > 4e-4


def test_gemma_graphs_refuse_a_context_beyond_the_sliding_window() -> None:
    from transformers import Gemma3TextConfig

    from imagine_edge.models.prepare.llm_qnn_gemma import gemma3_module

    cfg = Gemma3TextConfig(num_hidden_layers=2, sliding_window=512)
    spec = QnnGraphSpec(2, 1, 256, 1000, context_length=1024, prefill_length=16)
    with pytest.raises(ValueError, match="exceeds the sliding window"):
        gemma3_module(SimpleNamespace(config=cfg), spec)


@pytest.mark.model
def test_gemma_forward_equals_transformers(gemma3_base: Manifest) -> None:
    """All 18 layers (five sliding, one global, three times) over a fixed cache, in three chunks:
    the logits equal transformers' float Gemma 3 on the same weights (measured max difference
    4.5e-5 on logits up to 34; the erf GELU instead of the tanh one gives 1.6e-2)."""
    import torch
    from transformers import AutoModelForCausalLM

    from imagine_edge.models.prepare.llm_qnn_gemma import gemma3_module
    from imagine_edge.models.prepare.llm_qnn_graph import run_torch

    assert gemma3_base.float_weights is not None
    hf = AutoModelForCausalLM.from_pretrained(str(gemma3_base.float_weights), dtype=torch.float32)
    spec = QnnGraphSpec(18, 1, HEAD_DIM, VOCAB, context_length=64, prefill_length=16)
    module = gemma3_module(hf.eval(), spec)
    tok = Tokenizer.from_file(str(gemma3_base.tokenizer))
    text = (
        "The old lighthouse stood at the end of a narrow spit of land, where the fishermen of "
        "the village had, for as long as anyone could remember, mended their nets"
    )
    ids = [2, *tok.encode(text, add_special_tokens=False).ids]  # <bos> first, as Gemma expects
    assert 32 < len(ids) <= 48
    cache, rows = HostCache(spec), []
    for start in range(0, len(ids), 16):  # later chunks read the cache
        chunk = ids[start : start + 16]
        out = run_torch(module, cache.feed(chunk, 16, pad_id=0), spec)
        cache.commit(out, len(chunk))
        rows.append(out[0][0, : len(chunk)])
    np.testing.assert_allclose(
        np.concatenate(rows), float_logits(gemma3_base, ids), atol=1e-3, rtol=0
    )


@pytest.mark.model
def test_truncated_gemma_graphs_are_static_and_quantized(gemma3_qnn_truncated: Manifest) -> None:
    variant = gemma3_qnn_truncated.variant("qnn-truncated")
    assert variant.ep == "qnn"
    assert variant.options["num_layers"] == 2
    assert "TRUNCATED" in variant.notes
    for role, seq in (("prefill", variant.options["prefill_length"]), ("decode", 1)):
        model, ops, shapes = static_graph(variant.graphs[role])
        assert not ops & {"Range", "Trilu", "If", "Loop", "NonZero", "Gelu"}
        assert {"QuantizeLinear", "DequantizeLinear", "RMSNormalization", "Tanh"} <= ops
        context = variant.options["context_length"]
        assert shapes["attention_mask"] == [1, 1, seq, context + seq]
        assert shapes["past_key_values.1.value"] == [1, 1, context, HEAD_DIM]
        assert shapes["present.1.key"] == [1, 1, seq, HEAD_DIM]
        assert shapes["logits"] == [1, seq, VOCAB]
        # The HTP traps of llm_qnn.quantize_graph: every MatMul's second input is symmetric,
        # int8 where it is a weight (the head included: its own copy, not the embedding's
        # transposed table) and int16 where it is computed (keys and values).
        producer = {o: n for n in model.graph.node for o in n.output}
        inits = {t.name: t for t in model.graph.initializer}
        kinds = []
        for node in (n for n in model.graph.node if n.op_type == "MatMul"):
            dq = producer[node.input[1]]
            assert dq.op_type == "DequantizeLinear"
            zero_point = numpy_helper.to_array(inits[dq.input[2]])
            assert not zero_point.any()
            source = inits.get(dq.input[0])
            kinds.append(("weight" if source else "computed", zero_point.dtype.type))
        assert set(kinds) == {("weight", np.int8), ("computed", np.int16)}
        assert kinds.count(("computed", np.int16)) == 4  # q.k and p.v in each of 2 layers


@pytest.mark.qnn
@pytest.mark.model
def test_truncated_gemma_graphs_run_on_htp_and_agree_with_cpu(
    gemma3_qnn_truncated: Manifest, record_property: Callable[[str, object], None]
) -> None:
    """Every node on QNNExecutionProvider; top-1 against the CPU EP on the same QDQ graphs.

    Measured: 34 of 35 agree (two prompts: 27 prompt rows and 8 teacher-forced decode steps),
    max logit difference 1.6 on logits up to ~85. Before the recipe's MatMul fixes (docs/qnn.md,
    "Quantisation recipe") the HTP was 3.8-9.5 logits off the CPU on these prompts' rows.
    """
    variant = gemma3_qnn_truncated.variant("qnn-truncated")
    opts = variant.options
    spec = _truncated_spec(opts)
    sessions = htp_and_cpu_sessions(variant)
    tok = Tokenizer.from_file(str(gemma3_qnn_truncated.tokenizer))
    pad = int(opts["pad_token_id"])

    def run(ep: str, prompt: list[int], forced: list[int]) -> np.ndarray:
        """The logits of every prompt row, then of each forced token fed to the decode graph."""
        cache = HostCache(spec)
        out = sessions[ep, "prefill"].run(None, cache.feed(prompt, spec.prefill_length, pad))
        cache.commit(out, len(prompt))
        rows = [out[0][0, : len(prompt)]]
        for token in forced:
            out = sessions[ep, "decode"].run(None, cache.feed([token], 1, pad))
            cache.commit(out, 1)
            rows.append(out[0][0])
        return np.concatenate(rows)

    agree: list[bool] = []
    worst = 0.0
    for text, continuation in TEXTS:
        prompt = [2, *tok.encode(text, add_special_tokens=False).ids]
        forced = tok.encode(continuation, add_special_tokens=False).ids[:DECODE_STEPS]
        assert len(prompt) <= spec.prefill_length
        assert len(forced) == DECODE_STEPS
        cpu, npu = run("cpu", prompt, forced), run("qnn", prompt, forced)
        agree += (cpu.argmax(-1) == npu.argmax(-1)).tolist()
        worst = max(worst, float(np.abs(cpu - npu).max()))
    agreement = float(np.mean(agree))
    record_property("top1_agreement", agreement)
    record_property("max_logit_difference", worst)
    assert agreement >= 0.9, (agreement, worst)
    assert worst < 4.0, (agreement, worst)
