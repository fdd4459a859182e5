"""What a benchmark ran on: machine, CPU, versions, kernels backend and QNN availability."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine_info"]

_PACKAGES = ("imagine-edge", "onnxruntime", "onnxruntime-qnn", "numpy", "tokenizers")


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """A JSON-ready description of this machine and the software under test."""
    from imagine_edge import kernels
    from imagine_edge.runtime.providers import qnn_unavailable_reason

    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in _PACKAGES},
        "kernels_backend": kernels.active_backend(),
        "qnn": qnn_unavailable_reason() or "available",
        # 1, 5 and 15 minute load averages when the run starts (other work on the machine).
        "load_average": list(os.getloadavg()),
    }
