"""The QNN graphs of MiniLM: one static QDQ graph per sequence bucket, batch 1.

``input_ids`` int64 ``[1, S]``, ``attention_mask`` float ``[1, S]`` (1 = token, 0 = padding) ->
``embedding [1, 384]`` (masked mean). 2-D activations so every linear is a Gemm, whose weights the
HTP takes per channel (MatMul weights it does not); QDQ with uint16 activations and symmetric int8
weights, calibrated on real sentences padded as the pipeline pads them, and each bucket checked
against its float graph on held-out texts. L2 normalisation stays on the host (docs/qnn.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Final

import numpy.typing as npt

from imagine_edge.models.prepare.minilm_graph import (
    MAX_TOKENS,
    MIN_COSINE,
    encoder_class,
    export,
    feeds,
    load_bert,
    load_tokenizer,
    min_cosine,
)
from imagine_edge.models.prepare.minilm_texts import CALIBRATION_TEXTS, VALIDATION_TEXTS, paragraphs
from imagine_edge.models.store import GraphFile, Manifest, Variant

__all__ = ["QNN_BUCKETS", "prepare_qnn", "quantize_qdq"]

QNN_BUCKETS: Final = (32, 128, 256)


def quantize_qdq(src: Path, dst: Path, inputs: list[dict[str, npt.NDArray[Any]]]) -> None:
    """docs/qnn.md's recipe: uint16 activations, symmetric int8 weights per channel (Gemm)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import (
        get_qnn_qdq_config,
        qnn_preprocess_model,
    )

    class Feeds(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter(inputs)

        def get_next(self) -> dict[str, npt.NDArray[Any]] | None:
            return next(self.it, None)

    pre = dst.with_name(dst.stem + ".pre.onnx")
    source = pre if qnn_preprocess_model(src, pre) else src  # Erf sequence -> Gelu
    model = onnx.load(str(source), load_external_data=False)
    # The HTP's LayerNorm takes a per-tensor gamma only; the Gemm weights go per channel.
    overrides: dict[str, list[dict[str, Any]]] = {
        n.input[1]: [{"quant_type": QuantType.QUInt8}]
        for n in model.graph.node
        if n.op_type == "LayerNormalization"
    }
    config = get_qnn_qdq_config(
        source,
        Feeds(),
        activation_type=QuantType.QUInt16,
        weight_type=QuantType.QInt8,
        per_channel=True,
        init_overrides=overrides,
    )
    quantize(source, dst, config)
    pre.unlink(missing_ok=True)


def prepare_qnn(manifest: Manifest, out: Path) -> Variant:
    """One static QDQ graph per sequence bucket, checked against float on held-out sentences."""
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base has no float weights to export from")
    module = encoder_class()(load_bert(manifest.float_weights), static=True, outliers={})
    work = out / ".work"
    work.mkdir()
    graphs: dict[str, GraphFile] = {}
    worst: dict[int, float] = {}
    short = list(CALIBRATION_TEXTS)
    # Longer buckets get texts too long for the smaller ones, padded as the pipeline pads them.
    long = [*short[::4], *(p for n in (4, 10, 16) for p in paragraphs(short, n))]
    for seq in QNN_BUCKETS:
        tok = load_tokenizer(manifest, seq)
        texts = short if seq == QNN_BUCKETS[0] else long
        float_graph = export(module, work / f"float_s{seq}.onnx", static_seq=seq)
        target = out / f"encoder_s{seq}.onnx"
        quantize_qdq(float_graph.path, target, feeds(tok, texts, seq))
        held_out = (
            list(VALIDATION_TEXTS[:8])
            if seq == QNN_BUCKETS[0]
            else [*paragraphs(VALIDATION_TEXTS, 8), *paragraphs(VALIDATION_TEXTS, 16)]
        )
        worst[seq] = min_cosine(float_graph.path, target, feeds(tok, held_out, seq))
        if worst[seq] < MIN_COSINE:
            raise ValueError(f"QDQ graph for {seq} tokens: cosine {worst[seq]:.4f} < {MIN_COSINE}")
        graphs[f"encoder_s{seq}"] = GraphFile(target, float_graph.inputs, float_graph.outputs)
    shutil.rmtree(work)
    return Variant(
        ep="qnn",
        dir=out,
        quantization="QDQ: int8 symmetric per-channel Gemm weights, uint16 activations",
        graphs=graphs,
        options={
            "seq_buckets": ",".join(map(str, QNN_BUCKETS)),
            "batch": 1,
            "max_tokens": MAX_TOKENS,
            "min_cosine_cpu_ep": ",".join(f"{s}:{c:.4f}" for s, c in worst.items()),
        },
        notes=(
            "graphs encoder_s{S}: input_ids int64 [1,S], attention_mask float [1,S] (1 token, "
            "0 padding) -> embedding [1,384], masked mean, not normalised (host L2). Needs the "
            "QNN EP option offload_graph_io_quantization=0 for every node to run on the HTP."
        ),
    )
