"""``imagine-edge serve``: run the API server on the catalog's models and the added ones.

``--model`` takes a model's name, or the path of a model file or folder: a path is added first
(``imagine-edge models add PATH``, in a child process, so preparation's torch stays out of the
server) and then served under its registered name.

Binds 127.0.0.1 by default. Any other interface needs an API key, which is then required as a
Bearer token and never printed or logged. Give it in the environment (IMAGINE_EDGE_API_KEY) or
in a file (--api-key-file): a key on the command line (--api-key) is visible to every user of
the machine in the process list (/proc/PID/cmdline).

On a loopback bind, requests whose Host or Origin header is not this machine get a 403 (a web
page cannot drive the local server); allow more with --allow-host / IMAGINE_EDGE_HOSTS and
--allow-origin / IMAGINE_EDGE_ORIGINS (comma-separated fnmatch patterns, '*' for any).

Slow clients are closed: a request (headers and body) must arrive within --request-timeout
seconds, and an idle keep-alive connection is closed after --idle-timeout seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from imagine_edge.models.llm import DEFAULT_PARALLEL, MAX_PARALLEL, PARALLEL_ENV
from imagine_edge.models.registry import model_cards
from imagine_edge.models.user_models import list_models
from imagine_edge.python_command import python_module
from imagine_edge.sdk.client import API_KEY_ENV
from imagine_edge.sdk.engine import Engine, ModelState, client_alias
from imagine_edge.sdk.engine.batch_queue import (
    BATCH_REQUESTS_ENV,
    BATCH_TOKENS_ENV,
    DEFAULT_BATCH_REQUESTS,
    DEFAULT_BATCH_TOKENS,
)
from imagine_edge.sdk.engine.workers import KEEP_ALIVE_ENV, SERVER_KEEP_ALIVE, parse_keep_alive
from imagine_edge.sdk.errors import ImagineException
from imagine_edge.sdk.paths import API_PREFIX
from imagine_edge.server.middleware import is_loopback

__all__ = ["HOSTS_ENV", "ORIGINS_ENV", "is_loopback", "serve_command"]

logger = logging.getLogger(__name__)

HOSTS_ENV: Final = "IMAGINE_EDGE_HOSTS"
ORIGINS_ENV: Final = "IMAGINE_EDGE_ORIGINS"
DEFAULT_REQUEST_TIMEOUT: Final = 30.0


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
    parser = argparse.ArgumentParser(
        prog="imagine-edge serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (8000)")
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME_OR_PATH",
        help="serve this model (repeatable): a catalog or added model's name, or a model file or "
        "folder to add first; default: every catalog and added model",
    )
    parser.add_argument(
        "--api-key",
        help=f"require this Bearer token; visible in the process list, so prefer ${API_KEY_ENV} "
        "or --api-key-file",
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="PATH",
        help="read the Bearer token from this file (its first line)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="PATTERN",
        help=f"on a loopback bind, also accept this Host name (repeatable; also ${HOSTS_ENV})",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="PATTERN",
        help="on a loopback bind, also accept requests from this Origin, e.g. "
        f"'https://app.example' or 'http://*.local:*' (repeatable; also ${ORIGINS_ENV})",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="SECONDS",
        help=f"close a connection whose request takes longer to arrive "
        f"({DEFAULT_REQUEST_TIMEOUT:.0f})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="close an idle keep-alive connection after this long (5)",
    )
    parser.add_argument(
        "--preload",
        action="store_true",
        help="load every model at start (default: each on first use, so only the models in use "
        "take memory)",
    )
    parser.add_argument("--max-queue", type=int, default=16, help="requests per model (16)")
    parser.add_argument(
        "--parallel",
        type=_parallel,
        metavar="N",
        help="LLM requests decoded together in one batch (continuous batching), each in a KV "
        f"slot of its own (default: ${PARALLEL_ENV}, else {DEFAULT_PARALLEL}); 1 turns it off",
    )
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
    parser.add_argument(
        "--embed-batch-tokens",
        type=_whole,
        metavar="N",
        help="padded tokens one run of concurrent embedding or reranker requests may hold "
        f"(default: ${BATCH_TOKENS_ENV}, else {DEFAULT_BATCH_TOKENS}); 0 runs each request alone",
    )
    parser.add_argument(
        "--embed-batch-requests",
        type=_whole,
        metavar="N",
        help="requests one such run may hold (default: "
        f"${BATCH_REQUESTS_ENV}, else {DEFAULT_BATCH_REQUESTS})",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (info)")
    parser.add_argument(
        "--no-request-log",
        dest="request_log",
        action="store_false",
        help="do not write the one JSON line per request on stderr (docs/server.md)",
    )
    return parser


def _parallel(raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PARALLEL:
        raise argparse.ArgumentTypeError(f"must be an integer in [1, {MAX_PARALLEL}], got {raw!r}")
    return int(raw)


def _request_log(enabled: bool) -> None:
    """The request log's lines on stderr, bare JSON (uvicorn configures only its own loggers)."""
    from imagine_edge.server.request_log import REQUEST_LOGGER

    log = logging.getLogger(REQUEST_LOGGER)
    log.propagate = False
    log.setLevel(logging.INFO if enabled else logging.CRITICAL + 1)
    if enabled and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)


def _banner(url: str, engine: Engine, states: Sequence[ModelState], key: bool) -> str:
    lines = [f"imagine-edge serving the Imagine API at {url}{API_PREFIX} and OpenAI's at {url}/v1"]
    cards = {c.name: c for c in engine.index.cards}
    for state in states:
        card = cards[state.name]
        where = state.execution_provider or state.state
        if where == "not loaded":
            where = "loads on first use"
        default = ""
        if engine.index.default_card(card.model_type) is card:
            alias = client_alias(card.model_type)
            default = f" (default; answers to {alias!r} too)" if alias else " (default)"
        lines.append(f"  {card.model_type.value:<13} {card.name}: {where}{default}")
    lines.append("  API key required" if key else "  no API key (loopback only)")
    return "\n".join(lines) + "\n"


def _patterns(given: list[str], env: str) -> list[str]:
    from_env = [p.strip() for p in os.environ.get(env, "").split(",")]
    return [p for p in [*given, *from_env] if p]


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file is not None:
        lines = args.api_key_file.read_text(encoding="utf-8").splitlines()
        return (lines[0].strip() if lines else "") or None
    return args.api_key or os.environ.get(API_KEY_ENV) or None


class _AddFailed(Exception):
    """``models add`` of a --model path failed (its own message is already on stderr)."""


def _model_names(values: Sequence[str] | None) -> list[str] | None:
    """Each --model as a model name: known names as they are, paths added (and named) first."""
    if not values:
        return None
    known = {c.name.lower() for c in model_cards()} | {
        a.lower() for c in model_cards() for a in c.aliases
    }
    names: list[str] = []
    for value in values:
        path = Path(value).expanduser()
        if value.lower() in known or not path.exists():
            names.append(value)  # a name; an unknown one is refused with the known names
            continue
        # The child's progress bar and errors go straight to our stderr.
        done = subprocess.run(
            python_module("imagine_edge", "models", "add", str(path)),
            stdout=subprocess.DEVNULL,
            check=False,
        )
        added = next((m for m in list_models() if m.source == str(path.resolve())), None)
        if done.returncode != 0 or added is None:
            raise _AddFailed(value)
        names.append(added.name)
    return names


def serve_command(argv: list[str]) -> int:
    """Parse ``argv``, load the models, print the banner and serve until interrupted."""
    args = _parser().parse_args(argv)
    try:
        api_key = _api_key(args)
    except OSError as e:
        sys.stderr.write(f"cannot read the API key file: {e.strerror} ({args.api_key_file})\n")
        return 2
    if not is_loopback(args.host) and api_key is None:
        sys.stderr.write(
            f"refusing to bind {args.host} without an API key: pass --api-key or set "
            f"{API_KEY_ENV} (or bind 127.0.0.1)\n"
        )
        return 2
    if args.parallel is not None:
        os.environ[PARALLEL_ENV] = str(args.parallel)  # read by the LLM loader
    try:
        models = _model_names(args.models)
    except _AddFailed as e:
        sys.stderr.write(f"cannot serve: adding {e} failed (see above)\n")
        return 1
    try:
        engine = Engine.from_catalog(
            models,
            max_queue=args.max_queue,
            history_keep=args.history_keep,
            keep_alive=keep_alive_option(args.keep_alive),
            embed_batch_tokens=args.embed_batch_tokens,
            embed_batch_requests=args.embed_batch_requests,
        )
        if args.preload:
            engine.load(models)
    except (ImagineException, ValueError) as e:
        sys.stderr.write(f"cannot serve: {e}\n")
        return 1

    import uvicorn  # deferred: only the serve command needs it

    from imagine_edge.server.app import create_app
    from imagine_edge.server.connections import request_timeout_protocol

    try:
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{host}:{args.port}"
        sys.stdout.write(_banner(url, engine, engine.model_states(), api_key is not None))
        sys.stdout.flush()
        _request_log(args.request_log)
        app = create_app(
            engine,
            api_key=api_key,
            loopback_guard=is_loopback(args.host),
            allowed_hosts=_patterns(args.allow_host, HOSTS_ENV),
            allowed_origins=_patterns(args.allow_origin, ORIGINS_ENV),
        )
        uvicorn.run(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            http=request_timeout_protocol(args.request_timeout),
            timeout_keep_alive=max(1, round(args.idle_timeout)),
        )
    finally:
        engine.close()
    return 0
