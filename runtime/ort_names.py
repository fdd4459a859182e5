"""onnxruntime's strings, each written once: tensor type names and configuration keys.

Owns two tables: :data:`TENSOR_DTYPES` (the type strings a session reports for its inputs and
outputs, such as ``"tensor(float)"``, to numpy dtypes) and the configuration keys the runtime
sets (:class:`SessionConfig` entries of a session's options, :class:`RunConfig` entries of a
run's). Every other module names them through these, so a key onnxruntime renames is changed in
one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import numpy as np

__all__ = ["TENSOR_DTYPES", "RunConfig", "SessionConfig", "numpy_dtype"]

TENSOR_DTYPES: Final[Mapping[str, type[np.generic]]] = MappingProxyType(
    {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(double)": np.float64,
        "tensor(int32)": np.int32,
        "tensor(int64)": np.int64,
    }
)


def numpy_dtype(type_name: str) -> type[np.generic] | None:
    """The numpy dtype of an onnxruntime tensor type string; None for any other type."""
    return TENSOR_DTYPES.get(type_name)


class SessionConfig(StrEnum):
    """Keys of ``SessionOptions.add_session_config_entry`` that the runtime sets."""

    # "0": intra-op workers sleep between kernels instead of spinning.
    ALLOW_SPINNING = "session.intra_op.allow_spinning"
    # "1": spinning workers stop when a run returns instead of spinning on between runs.
    FORCE_SPINNING_STOP = "session.force_spinning_stop"
    # "1": a node no other EP takes fails the load instead of falling back to the CPU EP.
    DISABLE_CPU_EP_FALLBACK = "session.disable_cpu_ep_fallback"
    # "1": the session records which EP runs each node (health's node assignment).
    RECORD_EP_GRAPH_ASSIGNMENT = "session.record_ep_graph_assignment_info"
    # Comma-separated graph optimizers to leave out (fusions that are slower on some shapes).
    DISABLE_OPTIMIZERS = "optimization.disable_specified_optimizers"
    # The pre-packed copy (runtime/prepacked.py): its external data file, the size from which an
    # initializer goes there, and whether pre-packed weights are saved with it.
    EXTERNAL_INITIALIZERS_FILE = "session.optimized_model_external_initializers_file_name"
    EXTERNAL_INITIALIZERS_MIN_SIZE = (
        "session.optimized_model_external_initializers_min_size_in_bytes"
    )
    SAVE_PREPACKED_INITIALIZERS = "session.save_external_prepacked_constant_initializers"


class RunConfig(StrEnum):
    """Keys of ``RunOptions.add_run_config_entry`` that the runtime sets."""

    # "-1": no GPU graph capture (makes the Python binding's per-run lookup a plain read).
    GPU_GRAPH_ID = "gpu_graph_id"
