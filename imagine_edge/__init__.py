"""imagine-edge: an on-device inference runtime serving the Imagine SDK contract.

The in-process API mirrors the official client (``imagine.ImagineClient``)::

    from imagine_edge import ImagineEdge

    with ImagineEdge() as client:
        print(client.chat([{"role": "user", "content": "Hi"}]).first_content)

Subpackages: ``sdk`` (DTOs, errors, the clients, and the engine in ``sdk.engine``), ``runtime``
(ONNX Runtime sessions, QNN, KV cache, generation), ``kernels`` (the native sampler), ``models``
(catalog, preparation, pipelines), ``server`` (the FastAPI app) and ``benchmarks``. The clients
load on first access so that ``import imagine_edge`` stays cheap: every module of the package
runs this one first, and most (the kernels, the model store) need neither the engine nor ONNX
Runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AsyncImagineEdge", "ImagineEdge", "__version__"]

if TYPE_CHECKING:
    from imagine_edge.sdk.client import AsyncImagineEdge, ImagineEdge

_LAZY = {"ImagineEdge": "imagine_edge.sdk.client", "AsyncImagineEdge": "imagine_edge.sdk.client"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'imagine_edge' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
