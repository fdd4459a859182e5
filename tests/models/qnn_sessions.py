"""The truncated QNN graphs read as files, and opened on the HTP and, as the reference, on the
CPU (shared by the SmolLM2 and Gemma QNN tests)."""

from __future__ import annotations

from typing import Any

import onnx

from imagine_edge.models.prepare.llm_qnn import CPU_REFERENCE_CONFIG
from imagine_edge.models.store import GraphFile, Variant


def static_graph(graph: GraphFile) -> tuple[onnx.ModelProto, set[str], dict[str, list[int]]]:
    """The graph (without its weights), its op types and its inputs' and outputs' shapes;
    asserts that every dimension is fixed and that the inputs and outputs are the manifest's,
    in its order."""
    model = onnx.load(str(graph.path), load_external_data=False)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.input, *model.graph.output]
    }
    assert all(all(d > 0 for d in s) for s in shapes.values())  # no symbolic dimension
    names = tuple(shapes)
    assert (names[: len(graph.inputs)], names[len(graph.inputs) :]) == (graph.inputs, graph.outputs)
    return model, {n.op_type for n in model.graph.node}, shapes


def htp_and_cpu_sessions(variant: Variant) -> dict[tuple[str, str], Any]:
    """Sessions keyed by ("qnn" | "cpu", "prefill" | "decode"); asserts that every node of
    each graph is placed on QNN. The CPU runs the QDQ graph as quantized
    (``CPU_REFERENCE_CONFIG``)."""
    from imagine_edge.runtime.providers import QNN_EP
    from imagine_edge.runtime.session import SessionFactory

    factory = SessionFactory(2, shared_pool=False)
    sessions = {}
    for role in ("prefill", "decode"):
        path = variant.graphs[role].path
        npu = factory.create(path, "qnn")
        assert npu.provider == QNN_EP
        assert set(npu.node_assignment) == {QNN_EP}
        sessions["qnn", role] = npu.session
        sessions["cpu", role] = factory.create(
            path, "cpu", session_config=CPU_REFERENCE_CONFIG
        ).session
    return sessions
