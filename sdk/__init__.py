"""The public API of imagine-edge: the DTOs, the errors and the clients.

``ImagineEdge`` and ``AsyncImagineEdge`` mirror the official ``imagine.ImagineClient`` and
``imagine.ImagineAsyncClient`` (same methods, parameters, defaults and DTOs), running the models
in process or, given ``base_url``, talking to an ``imagine-edge serve`` server.

The DTOs and errors depend only on pydantic and the standard library, so they are re-exported
directly. The clients load on first access, for cost, not for a cycle (the import layers are
checked by ``make lint``): they pull in the engine, the models and ONNX Runtime, while every
layer imports the contract (``imagine_edge.sdk.types``, ``.errors``, ``.limits``) and so runs
this module first; the model store and its CLI must start without ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from imagine_edge.sdk import errors, types
from imagine_edge.sdk.errors import *  # noqa: F403  re-exported: errors.__all__
from imagine_edge.sdk.types import *  # noqa: F403  re-exported: types.__all__

if TYPE_CHECKING:
    from imagine_edge.sdk.client import AsyncImagineEdge as AsyncImagineEdge
    from imagine_edge.sdk.client import ImagineEdge as ImagineEdge

_CLIENTS = ("AsyncImagineEdge", "ImagineEdge")

__all__ = sorted([*_CLIENTS, *errors.__all__, *types.__all__])


def __getattr__(name: str) -> Any:
    if name in _CLIENTS:
        return getattr(importlib.import_module("imagine_edge.sdk.client"), name)
    raise AttributeError(f"module 'imagine_edge.sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
