"""QNN HTP graphs of an LLM: the variant's recipe (export, calibrate, quantize).

The graphs, their static shapes, the host protocol and the Llama forward they are exported from
are ``llm_qnn_graph.py``; the Gemma 3 forward is ``llm_qnn_gemma.py`` (``GRAPH_MODULES`` maps a
transformers ``model_type`` to its forward; other architectures are refused).

Quantization: ``qnn_preprocess_model`` -> ``get_qnn_qdq_config`` (uint16 activations, symmetric
weights: MatMul weights int8 per output channel; computed MatMul operands int16) -> ``quantize``,
calibrated on the float model's own traces: chat prompts in the manifest's template prefilled in
chunks and then decoded greedily, with real cache states.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np

from imagine_edge.models.prepare.llm_qnn_gemma import gemma3_module
from imagine_edge.models.prepare.llm_qnn_graph import (
    MASK_VALUE,
    Feed,
    HostCache,
    QnnGraphSpec,
    export_graph,
    llama_module,
    run_torch,
)
from imagine_edge.models.store import Manifest, Variant

if TYPE_CHECKING:
    import torch

__all__ = [
    "CALIBRATION_PROMPTS",
    "CPU_REFERENCE_CONFIG",
    "GRAPH_MODULES",
    "MASK_VALUE",
    "TRUNCATED_CONTEXT_LENGTH",
    "TRUNCATED_LAYERS",
    "TRUNCATED_PREFILL_LENGTH",
    "HostCache",
    "QnnGraphSpec",
    "build_qnn_variant",
    "build_truncated_variant",
    "graph_module",
]

logger = logging.getLogger(__name__)

# Calibration ranges are merged every (at most) this many samples, bounding the memory.
CALIBRATION_STRIDE: Final = 8

# Session config entries that run these QDQ graphs on the CPU EP as they are quantized (the HTP's
# reference): by default the CPU EP fuses DequantizeLinear + MatMul into MatMulNBits at accuracy
# level 4, int8 activations, which departs from the graph where rows have outliers (Gemma's normed
# rows reach ~280: 0.94 of a 48-wide output range in a test MatMul). Level 1 computes in float.
CPU_REFERENCE_CONFIG: Final = {"session.qdq_matmulnbits_accuracy_level": "1"}

# The truncated graph set of every model: the first 2 layers (+ final norm and head), prefill 16,
# context 128, because the HTP simulator takes seconds per decode step even for 2 layers.
TRUNCATED_LAYERS: Final = 2
TRUNCATED_PREFILL_LENGTH: Final = 16
TRUNCATED_CONTEXT_LENGTH: Final = 128

# The hand-written forward of each architecture (transformers' ``config.model_type``). Not
# qwen2 (its q/k/v biases) nor qwen3 (QK-norm over a Llama layer): docs/gguf.md, "QNN".
GRAPH_MODULES: Final[dict[str, Callable[[Any, QnnGraphSpec], torch.nn.Module]]] = {
    "llama": llama_module,
    "gemma3_text": gemma3_module,
}


# Real chat turns for calibration: short and long (more than one prefill chunk), varied topics.
CALIBRATION_PROMPTS: Final[tuple[str, ...]] = (
    "What is the capital of France?",
    "Write a short poem about the sea at night.",
    "Explain in simple words why the sky is blue.",
    "List three healthy breakfast ideas and say why each one is good for you.",
    "Translate 'good morning, how are you?' into Spanish and German.",
    "I have a meeting with my manager tomorrow about a raise. I have worked here for three "
    "years, I lead a small team and our project shipped on time. How should I prepare, what "
    "should I say first, and what should I avoid? Please give me a short plan.",
    "def fibonacci(n):\n    # complete this Python function and explain how it works",
    "Summarise the plot of Romeo and Juliet in two sentences.",
)


def graph_module(hf_model: Any, spec: QnnGraphSpec) -> torch.nn.Module:
    """The exported forward for ``hf_model``'s architecture (ValueError for one without)."""
    kind = str(hf_model.config.model_type)
    if kind not in GRAPH_MODULES:
        raise ValueError(
            f"no QNN graph forward for the {kind!r} architecture (only {sorted(GRAPH_MODULES)})"
        )
    return GRAPH_MODULES[kind](hf_model, spec)


def iter_traces(
    module: torch.nn.Module,
    spec: QnnGraphSpec,
    prompts: Sequence[Sequence[int]],
    decode_steps: int,
    pad_id: int,
) -> Iterator[tuple[str, Feed]]:
    """Run the float module the way the host runs the graphs, yielding ("prefill"|"decode", feed).

    Lazy, because a decode feed of the full model carries a whole KV cache (~24 MB at C=512):
    the calibrator consumes one feed at a time.
    """
    p = spec.prefill_length
    for ids in prompts:
        cache = HostCache(spec)
        out: list[Any] = []
        n = 0
        for start in range(0, len(ids), p):
            chunk = list(ids[start : start + p])
            n = len(chunk)
            feed = cache.feed(chunk, p, pad_id)
            yield "prefill", {k: v.copy() for k, v in feed.items()}
            out = run_torch(module, feed, spec)
            cache.commit(out, n)
        token = int(np.argmax(out[0][0, n - 1]))
        for _ in range(min(decode_steps, spec.context_length - cache.length)):
            feed = cache.feed([token], 1, pad_id)
            yield "decode", {k: v.copy() for k, v in feed.items()}
            out = run_torch(module, feed, spec)
            cache.commit(out, 1)
            token = int(np.argmax(out[0][0, 0]))


def trace_count(
    spec: QnnGraphSpec, prompts: Sequence[Sequence[int]], decode_steps: int
) -> dict[str, int]:
    """How many feeds of each kind ``iter_traces`` yields."""
    p = spec.prefill_length
    return {
        "prefill": sum(-(-len(ids) // p) for ids in prompts),
        "decode": sum(min(decode_steps, spec.context_length - len(ids)) for ids in prompts),
    }


class _Reader:
    """A CalibrationDataReader over the feeds of one kind from a trace (sized for ``stride``)."""

    def __init__(self, traces: Iterator[tuple[str, Feed]], kind: str, count: int) -> None:
        self._feeds = (feed for k, feed in traces if k == kind)
        self._count = count
        self._budget = count

    def __len__(self) -> int:
        return self._count

    def set_range(self, start_index: int, end_index: int) -> None:
        # Called once per stride, in order: the next ``end - start`` feeds form one batch.
        self._budget = end_index - start_index

    def get_next(self) -> Feed | None:
        if self._budget <= 0:
            return None
        self._budget -= 1
        return next(self._feeds, None)


def matmul_operands(path: Path) -> tuple[list[str], list[str]]:
    """The second inputs of ``path``'s MatMuls: (weights, computed ones such as attention's keys
    and values)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    second = [n.input[1] for n in model.graph.node if n.op_type == "MatMul"]
    return [x for x in second if x in weights], [x for x in second if x not in weights]


def quantize_graph(
    float_path: Path, out_path: Path, traces: Iterator[tuple[str, Feed]], kind: str, count: int
) -> None:
    """QDQ-quantize ``float_path`` for the HTP: uint16 activations, symmetric weights.

    Two HTP traps (docs/qnn.md, "Quantisation recipe"): a MatMul's asymmetric uint8 weight comes
    out wrong on the HTP (Gemma's q_proj: 0.7% of its output range off the CPU run of the same
    graph; symmetric, 0.02%), and where both MatMul inputs are uint16 activations the EP reduces
    the second to uint8 (attention's keys and values: 1.2% of the scores' range). So MatMul
    weights are int8, symmetric, per output channel (the tool's default for MatMul is one scale
    per tensor: 8 bits across a whole 262,144-row head), a computed second operand is symmetric
    int16, which the EP passes as it is, and the other weights (norm scales, the embedding and
    RoPE tables) are symmetric too, at the cost of one of their 16 bits.
    """
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import (
        get_qnn_qdq_config,
        qnn_preprocess_model,
    )

    pre = float_path.with_name(float_path.stem + ".pre.onnx")
    changed = qnn_preprocess_model(
        float_path, pre, save_as_external_data=True, all_tensors_to_one_file=True,
        external_data_location=pre.name + ".data",
    )  # fmt: skip
    source = pre if changed else float_path
    weights, computed = matmul_operands(source)
    overrides: dict[str, list[dict[str, Any]]] = {
        **{
            name: [{"quant_type": QuantType.QInt8, "symmetric": True, "axis": 1}]
            for name in weights
        },
        **{name: [{"quant_type": QuantType.QInt16, "symmetric": True}] for name in computed},
    }
    config = get_qnn_qdq_config(
        source,
        _Reader(traces, kind, count),
        activation_type=QuantType.QUInt16,
        weight_type=QuantType.QUInt8,
        weight_symmetric=True,
        per_channel=True,
        init_overrides=overrides,
        stride=next(s for s in range(CALIBRATION_STRIDE, 0, -1) if count % s == 0),
    )
    config.use_external_data_format = True
    quantize(source, out_path, config)


def build_qnn_variant(
    manifest: Manifest,
    out: Path,
    *,
    prefill_length: int,
    context_length: int,
    num_layers: int | None = None,
    decode_steps: int = 8,
) -> Variant:
    """Export, calibrate and quantize the prefill and decode graphs of ``manifest`` into ``out``.

    ``num_layers`` below the model's depth keeps the first layers, the final norm and the lm head:
    a truncated model, only for tests of placement and CPU/NPU agreement on the slow simulator.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from imagine_edge.models.prepare._common import graph_file, steps

    arch = manifest.architecture
    if manifest.float_weights is None or arch is None:
        raise ValueError(f"{manifest.name}: the base has no float weights to export from")
    layers = arch.num_layers if num_layers is None else num_layers
    if not 1 <= layers <= arch.num_layers:
        raise ValueError(f"num_layers must be in [1, {arch.num_layers}], got {layers}")
    spec = QnnGraphSpec(
        layers, arch.num_kv_heads, arch.head_dim, arch.vocab_size, context_length, prefill_length
    )
    pad = manifest.special_tokens.pad_token_id or 0
    with steps(f"building QNN graphs ({layers} layers)", 5) as bar:
        hf = AutoModelForCausalLM.from_pretrained(str(manifest.float_weights), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(manifest.float_weights))
        module = graph_module(cast(Any, hf).eval(), spec)
        # The manifest's template (a GGUF may carry none: Gemma's turn format comes from the
        # recipe), rendered as the server renders chat prompts.
        prompts = [
            list(tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], chat_template=manifest.chat_template,
                add_generation_prompt=True, tokenize=True, return_dict=False,
            ))
            for p in CALIBRATION_PROMPTS
        ]  # fmt: skip
        prompts = [ids[: context_length - 1] for ids in prompts]
        counts = trace_count(spec, prompts, decode_steps)
        bar.update()
        work = out / "float"
        work.mkdir()
        graphs = {}
        for role, seq_len, trace_steps in (
            ("prefill", prefill_length, 0),
            ("decode", 1, decode_steps),
        ):
            export_graph(module, spec, seq_len, work / f"{role}.onnx")
            bar.update()
            traces = iter_traces(module, spec, prompts, trace_steps, pad)
            quantize_graph(work / f"{role}.onnx", out / f"{role}.onnx", traces, role, counts[role])
            bar.update()
            graphs[role] = graph_file(out / f"{role}.onnx")
        shutil.rmtree(work)
    truncated = layers < arch.num_layers
    return Variant(
        ep="qnn",
        dir=out,
        quantization="QDQ: uint16 activations, uint8 weights (per-channel), static shapes",
        graphs=graphs,
        options={
            "prefill_length": prefill_length,
            "context_length": context_length,
            "num_layers": layers,
            "mask_value": MASK_VALUE,
            "pad_token_id": pad,
            "calibration_prefill_feeds": counts["prefill"],
            "calibration_decode_feeds": counts["decode"],
        },
        notes=(
            f"TRUNCATED: only the first {layers} of {arch.num_layers} layers (+ final norm and lm "
            "head); not a usable language model, for tests of NPU placement and agreement. "
            if truncated
            else ""
        )
        + "Host protocol in imagine_edge.models.prepare.llm_qnn: KV cache of context_length "
        "slots as inputs, only the new K/V as outputs, additive mask, host position ids.",
    )


def build_truncated_variant(manifest: Manifest, out: Path) -> Variant:
    """The first ``TRUNCATED_LAYERS`` layers (+ final norm and head) through the same exporter,
    for tests of NPU placement and CPU/NPU agreement on the simulator."""
    return build_qnn_variant(
        manifest,
        out,
        prefill_length=TRUNCATED_PREFILL_LENGTH,
        context_length=TRUNCATED_CONTEXT_LENGTH,
        num_layers=TRUNCATED_LAYERS,
        decode_steps=8,
    )
