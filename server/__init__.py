"""The HTTP server: the Imagine API and OpenAI-compatible routes over an engine.

``create_app(engine)`` builds the FastAPI app; ``imagine-edge serve`` (``server/cli.py``) runs
it with uvicorn. Loaded lazily, so importing the package does not import FastAPI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imagine_edge.server.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        return importlib.import_module("imagine_edge.server.app").create_app
    raise AttributeError(f"module 'imagine_edge.server' has no attribute {name!r}")
