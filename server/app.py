"""The FastAPI application: :func:`create_app` wires an engine to the HTTP routes.

Layout: the Imagine API under ``prefix`` (``/api/v2`` by default, docs/contract.md, Transport), the
OpenAI-compatible API under ``/v1``, and the image files at the few paths the official client
builds from an image url (``/v2/files/<id>.png``, ``/api/v2/files/<id>.png`` and, for an endpoint
with a trailing slash, ``/api/v2/v2/files/<id>.png``), served without a key (docs/contract.md,
Endpoints).
An image file is opened without following symbolic links. The app never owns the engine:
whoever built it closes it.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from collections.abc import Sequence

from fastapi import FastAPI
from starlette.responses import Response

from imagine_edge import __version__
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.errors import ModelNotFoundError
from imagine_edge.sdk.paths import API_PREFIX
from imagine_edge.server.errors import OPENAI_PREFIX, install_error_handlers
from imagine_edge.server.metrics import CONTENT_TYPE, ServerMetrics
from imagine_edge.server.middleware import (
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    LoopbackGuardMiddleware,
)
from imagine_edge.server.request_log import RequestLogMiddleware
from imagine_edge.server.routes_imagine import imagine_router
from imagine_edge.server.routes_openai import openai_router

__all__ = ["create_app"]


def create_app(
    engine: Engine,
    *,
    api_key: str | None = None,
    prefix: str = API_PREFIX,
    heartbeat_seconds: float = 10.0,
    loopback_guard: bool = False,
    allowed_hosts: Sequence[str] = (),
    allowed_origins: Sequence[str] = (),
) -> FastAPI:
    """The HTTP app over ``engine``.

    ``api_key``: when set, every route but the image files needs ``Authorization: Bearer``
    with it. ``heartbeat_seconds``: the longest quiet gap in a stream before a keep-alive
    comment (well under the official client's 60 s read timeout). ``loopback_guard``: answer
    403 unless the Host and any Origin are this machine or match ``allowed_hosts`` /
    ``allowed_origins`` (the serve command sets it on a loopback bind).
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
    # The client rewrites an image url as dirname(endpoint) + url (docs/contract.md, Endpoints), so
    # the
    # url repeats the prefix's last segment: '/api/v2' -> '/v2/files/<id>.png'.
    last_segment = prefix.rsplit("/", 1)[-1]
    files = f"/{last_segment}/files" if last_segment else "/files"
    # The url as given, and as the client rebuilds it (dirname(endpoint) + url, docs/contract.md
    # §2.10) for an endpoint without and with a trailing slash.
    folders = sorted({files, posixpath.dirname(prefix).rstrip("/") + files, prefix + files})

    def image_url(file_id: str) -> str:
        return f"{files}/{file_id}.png"

    app.include_router(
        imagine_router(engine, heartbeat=heartbeat_seconds, image_url=image_url), prefix=prefix
    )
    app.include_router(openai_router(engine, heartbeat=heartbeat_seconds), prefix=OPENAI_PREFIX)

    async def image_file(file_name: str) -> Response:
        path = (
            engine.image_path(file_name.removesuffix(".png"))
            if file_name.endswith(".png")
            else None
        )
        data = None if path is None else _read_no_follow(str(path))
        if data is None:
            raise ModelNotFoundError(f"no image file {file_name!r} (files are kept for a while)")
        return Response(data, media_type="image/png")

    for folder in folders:
        app.add_api_route(
            folder + "/{file_name}", image_file, methods=["GET"], include_in_schema=False
        )
    metrics = ServerMetrics(engine)
    app.state.metrics = metrics

    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # Beside the API, not under its prefix: where Prometheus looks by default. Behind the same
    # key and Host/Origin checks as every route (docs/server.md, Metrics).
    app.add_api_route("/metrics", metrics_text, methods=["GET"], include_in_schema=False)
    public = re.compile("(?:" + "|".join(map(re.escape, folders)) + r")/[A-Za-z0-9_-]+\.png")
    # The last middleware added is the outermost: check the key before reading any body.
    app.add_middleware(BodyLimitMiddleware, max_bytes=engine.limits.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=api_key, public=public)
    if loopback_guard:
        app.add_middleware(
            LoopbackGuardMiddleware, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins
        )
    # Outermost: refused requests (401, 403, 413) are counted and logged too.
    app.add_middleware(RequestLogMiddleware, metrics=metrics)
    return app


def _read_no_follow(path: str) -> bytes | None:
    """The bytes of a regular file, or None if it is missing or a symbolic link."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
            return None
        raise
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read()
