"""What the clients run on: the in-process engine or a server over HTTP, sync and async.

The four backends offer the same operations with the same DTOs and exceptions, so
``ImagineEdge`` and ``AsyncImagineEdge`` hold no transport logic. Over HTTP an error body's
``error`` field names the imagine-edge exception class, which is raised again here: a
``ModelNotFoundError`` in process is a ``ModelNotFoundError`` through a server too.

Modules: ``shared`` (the endpoints' engine calls and DTOs, default names, audio input),
``local`` (the in-process engine) and ``http`` (httpx).
"""

from imagine_edge.sdk._backends.http import AsyncHttpBackend, HttpBackend, api_root
from imagine_edge.sdk._backends.local import AsyncLocalBackend, LocalBackend
from imagine_edge.sdk._backends.shared import API_KEY_ENV, ClientBase, audio_of, engine_factory

__all__ = [
    "API_KEY_ENV",
    "AsyncHttpBackend",
    "AsyncLocalBackend",
    "ClientBase",
    "HttpBackend",
    "LocalBackend",
    "api_root",
    "audio_of",
    "engine_factory",
]
