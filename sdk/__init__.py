"""The public API of imagine-edge: the DTOs, the errors and the clients.

``ImagineEdge`` and ``AsyncImagineEdge`` mirror the official ``imagine.ImagineClient`` and
``imagine.ImagineAsyncClient`` (same methods, parameters, defaults and DTOs), running the models
in process or, given ``base_url``, talking to an ``imagine-edge serve`` server.

Every name loads on first access: importing ``imagine_edge.sdk`` pulls in neither the engine
nor the models, which would close the import cycle sdk -> models -> runtime -> sdk.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from imagine_edge.sdk import errors as _errors
from imagine_edge.sdk import types as _types

if TYPE_CHECKING:
    from imagine_edge.sdk.client import AsyncImagineEdge, ImagineEdge
    from imagine_edge.sdk.errors import *  # noqa: F403
    from imagine_edge.sdk.types import *  # noqa: F403

_CLIENTS = {"ImagineEdge", "AsyncImagineEdge"}
# errors and types import only pydantic and the standard library, so naming them is cheap.
__all__ = sorted({*_errors.__all__, *_types.__all__, *_CLIENTS})


def __getattr__(name: str) -> Any:
    if name in _CLIENTS:
        return getattr(importlib.import_module("imagine_edge.sdk.client"), name)
    for module in (_types, _errors):
        if name in module.__all__:
            return getattr(module, name)
    raise AttributeError(f"module 'imagine_edge.sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
