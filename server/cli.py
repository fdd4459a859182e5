"""``imagine-edge serve``: run the API server on the catalog's models.

Binds 127.0.0.1 by default. Any other interface needs an API key (``--api-key`` or
``IMAGINE_EDGE_API_KEY``), which is then required as a Bearer token and never printed or logged.
Before serving, the chosen models (``--model``, else each type's default) are loaded so that the
banner can say where each one runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence

from imagine_edge.sdk._backends import API_KEY_ENV
from imagine_edge.sdk.engine import Engine, ModelState
from imagine_edge.sdk.engine.names import client_alias
from imagine_edge.sdk.engine.workers import KEEP_ALIVE_ENV, SERVER_KEEP_ALIVE, parse_keep_alive
from imagine_edge.sdk.errors import ImagineException

__all__ = ["is_loopback", "serve_command"]

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _whole(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return int(text)


def keep_alive_option(values: Sequence[str] | None) -> dict[str, float | None]:
    """The engine's keep-alive from ``--keep-alive`` values ("*": every model not named)."""
    out = {"*": parse_keep_alive(os.environ.get(KEEP_ALIVE_ENV) or SERVER_KEEP_ALIVE)}
    for value in values or []:
        name, _, duration = value.rpartition("=")
        out[name or "*"] = parse_keep_alive(duration)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagine-edge serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (8000)")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="serve this catalog model (repeatable); default: every catalog model",
    )
    parser.add_argument(
        "--api-key", help=f"require this Bearer token (default: ${API_KEY_ENV}, if set)"
    )
    parser.add_argument(
        "--preload",
        action="store_true",
        help="load every model at start (default: each on first use, so only the models in use "
        "take memory)",
    )
    parser.add_argument("--max-queue", type=int, default=16, help="requests per model (16)")
    parser.add_argument(
        "--history-keep",
        type=_whole,
        metavar="N",
        help="request bodies kept per endpoint for the history (default: "
        "$IMAGINE_EDGE_HISTORY_KEEP, else 100); 0 keeps none",
    )
    parser.add_argument(
        "--keep-alive",
        action="append",
        metavar="[MODEL=]DURATION",
        help="unload a model idle this long ('5m', '30s', '1h', '300'; 'never' or -1: keep it "
        f"loaded); MODEL= sets one model's (repeatable). Default: ${KEEP_ALIVE_ENV}, else "
        f"{SERVER_KEEP_ALIVE}",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (info)")
    return parser


def _banner(url: str, engine: Engine, states: Sequence[ModelState], key: bool) -> str:
    lines = [f"imagine-edge serving the Imagine API at {url}/api/v2 and OpenAI's at {url}/v1"]
    cards = {c.name: c for c in engine.cards}
    for state in states:
        card = cards[state.name]
        where = state.execution_provider or state.state
        if where == "not loaded":
            where = "loads on first use"
        default = ""
        if engine.default_card(card.model_type) is card:
            alias = client_alias(card.model_type)
            default = f" (default; answers to {alias!r} too)" if alias else " (default)"
        lines.append(f"  {card.model_type.value:<13} {card.name}: {where}{default}")
    lines.append("  API key required" if key else "  no API key (loopback only)")
    return "\n".join(lines) + "\n"


def serve_command(argv: list[str]) -> int:
    """Parse ``argv``, load the models, print the banner and serve until interrupted."""
    args = _parser().parse_args(argv)
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(args.host) and api_key is None:
        sys.stderr.write(
            f"refusing to bind {args.host} without an API key: pass --api-key or set "
            f"{API_KEY_ENV} (or bind 127.0.0.1)\n"
        )
        return 2
    try:
        engine = Engine.from_catalog(
            args.models,
            max_queue=args.max_queue,
            history_keep=args.history_keep,
            keep_alive=keep_alive_option(args.keep_alive),
        )
        if args.preload:
            engine.load(args.models)
    except (ImagineException, ValueError) as e:
        sys.stderr.write(f"cannot serve: {e}\n")
        return 1

    import uvicorn  # deferred: only the serve command needs it

    from imagine_edge.server.app import create_app

    try:
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{host}:{args.port}"
        sys.stdout.write(_banner(url, engine, engine.model_states(), api_key is not None))
        sys.stdout.flush()
        app = create_app(engine, api_key=api_key)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        engine.close()
    return 0
