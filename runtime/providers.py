"""Execution providers: the QNN plugin's registration and options, quarantined in one module.

Owns the once-per-process registration of the QNN plugin EP (onnxruntime-qnn) and the provider
options we pass it. On x86_64 Linux the plugin's HTP backend is a simulator that really runs QDQ
graphs (docs/qnn.md), so QNN is a real target here, not only on a device.

Invariants:
- ``register_qnn`` is idempotent and thread-safe; registering twice raises in onnxruntime.
- ``soc_model`` is always set: unset, the simulator models an old chip on which most ops fail at
  graph finalize with a misleading error (docs/qnn.md).
- Why QNN is unavailable, when it is, is kept as a sentence that health and bench can show.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Final

import onnxruntime as ort

__all__ = [
    "CPU_EP",
    "QNN_EP",
    "QnnOptions",
    "qnn_devices",
    "qnn_unavailable_reason",
    "qnn_version",
    "register_qnn",
]

log = logging.getLogger(__name__)

QNN_EP: Final = "QNNExecutionProvider"
CPU_EP: Final = "CPUExecutionProvider"
# HTP v73 (Snapdragon 8 Gen 2 class); overridable for other devices with IMAGINE_EDGE_QNN_SOC.
DEFAULT_SOC_MODEL: Final = "60"

_lock = threading.Lock()
_registered: bool | None = None
_unavailable_reason: str | None = None


@dataclass(frozen=True, slots=True)
class QnnOptions:
    """Provider options of the QNN EP; they take part in the EPContext cache key."""

    backend_type: str = "htp"
    soc_model: str = field(
        default_factory=lambda: os.environ.get("IMAGINE_EDGE_QNN_SOC", DEFAULT_SOC_MODEL)
    )
    htp_performance_mode: str = "burst"
    extra: tuple[tuple[str, str], ...] = ()

    def provider_options(self) -> dict[str, str]:
        opts = {
            "backend_type": self.backend_type,
            "soc_model": self.soc_model,
            "htp_performance_mode": self.htp_performance_mode,
        }
        opts.update(dict(self.extra))
        return opts


def qnn_version() -> str | None:
    """The installed onnxruntime-qnn version, or None when the plugin is not installed."""
    try:
        import onnxruntime_qnn
    except ImportError:
        return None
    return str(getattr(onnxruntime_qnn, "__version__", "unknown"))


def _bind_libffi_first() -> None:
    """Load the extensions that call libffi before any QNN library.

    The x86-64 HTP backend (libQnnHtp.so) carries its own, older libffi and exports its symbols,
    and the QNN libraries are loaded with global symbols. An extension that links libffi after
    them binds to that copy: cffi's backend then failed ("ffi_prep_closure(): bad user_data") or
    returned garbage, so soundfile could not decode audio in a process that had opened a QNN
    session. Loaded first, they bind to the system's libffi.
    """
    import importlib

    for name in ("_ctypes", "_cffi_backend"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def register_qnn() -> bool:
    """Register the QNN plugin EP once per process; False (with a reason) when unavailable."""
    global _registered, _unavailable_reason
    with _lock:
        if _registered is not None:
            return _registered
        _bind_libffi_first()
        try:
            import onnxruntime_qnn
        except ImportError:
            _unavailable_reason = "onnxruntime-qnn is not installed for this platform"
            _registered = False
            return False
        try:
            ort.register_execution_provider_library(QNN_EP, onnxruntime_qnn.get_library_path())
        except Exception as exc:  # onnxruntime raises a bare RuntimeError subclass
            if "already registered" not in str(exc):
                _unavailable_reason = f"registering the QNN plugin failed: {exc}"
                _registered = False
                log.warning("QNN unavailable: %s", _unavailable_reason)
                return False
        if not _devices():
            _unavailable_reason = "the QNN plugin lists no device"
            _registered = False
            return False
        _registered = True
        return True


def _devices() -> list[Any]:
    return [d for d in ort.get_ep_devices() if d.ep_name == QNN_EP]


def qnn_devices() -> list[Any]:
    """The QNN EP devices (OrtEpDevice), registering the plugin first; [] when unavailable."""
    return _devices() if register_qnn() else []


def qnn_unavailable_reason() -> str | None:
    """Why QNN cannot be used in this process, or None when it can."""
    register_qnn()
    return _unavailable_reason
