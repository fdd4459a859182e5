"""The truncated QNN graphs opened on the HTP and, as the reference, on the CPU (shared by the
SmolLM2 and Gemma QNN tests)."""

from __future__ import annotations

from typing import Any

from imagine_edge.models.prepare.llm_qnn import CPU_REFERENCE_CONFIG
from imagine_edge.models.store import Variant


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
