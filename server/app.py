"""The FastAPI application: :func:`create_app` wires an engine to the HTTP routes.

Layout: the Imagine API under ``prefix`` (``/api/v2`` by default, CONTRACT.md §1.3), the
OpenAI-compatible API under ``/v1``, and the image files at any path ending in
``/files/<id>.png`` (served without a key, CONTRACT.md §2.10). The app never owns the engine:
whoever built it closes it.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse

from imagine_edge import __version__
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.errors import ModelNotFoundError
from imagine_edge.sdk.paths import API_PREFIX
from imagine_edge.server.errors import OPENAI_PREFIX, install_error_handlers
from imagine_edge.server.middleware import ApiKeyMiddleware, BodyLimitMiddleware
from imagine_edge.server.routes_imagine import imagine_router
from imagine_edge.server.routes_openai import openai_router

__all__ = ["create_app"]


def create_app(
    engine: Engine,
    *,
    api_key: str | None = None,
    prefix: str = API_PREFIX,
    heartbeat_seconds: float = 10.0,
) -> FastAPI:
    """The HTTP app over ``engine``.

    ``api_key``: when set, every route but the image files needs ``Authorization: Bearer``
    with it. ``heartbeat_seconds``: the longest quiet gap in a stream before a keep-alive
    comment (well under the official client's 60 s read timeout).
    """
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    app = FastAPI(
        title="imagine-edge",
        version=__version__,
        description="On-device server of the Imagine SDK contract, with OpenAI-compatible "
        "routes under /v1.",
    )
    app.state.engine = engine
    install_error_handlers(app)
    # The client rewrites an image url as dirname(endpoint) + url (CONTRACT.md §2.10), so the
    # url repeats the prefix's last segment: '/api/v2' -> '/v2/files/<id>.png'.
    last_segment = prefix.rsplit("/", 1)[-1]
    files = f"/{last_segment}/files" if last_segment else "/files"

    def image_url(file_id: str) -> str:
        return f"{files}/{file_id}.png"

    app.include_router(
        imagine_router(engine, heartbeat=heartbeat_seconds, image_url=image_url), prefix=prefix
    )
    app.include_router(openai_router(engine, heartbeat=heartbeat_seconds), prefix=OPENAI_PREFIX)

    async def image_file(file_name: str, prefix: str = "") -> FileResponse:
        path = (
            engine.image_path(file_name.removesuffix(".png"))
            if file_name.endswith(".png")
            else None
        )
        if path is None:
            raise ModelNotFoundError(f"no image file {file_name!r} (files are kept for a while)")
        return FileResponse(path, media_type="image/png")

    # Any path ending in /files/<id>.png, so the trailing-slash endpoint variant resolves too.
    for path in ("/{prefix:path}/files/{file_name}", "/files/{file_name}"):
        app.add_api_route(path, image_file, methods=["GET"], include_in_schema=False)
    # The last middleware added is the outermost: check the key before reading any body.
    app.add_middleware(BodyLimitMiddleware, max_bytes=engine.limits.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    return app
