"""The ``imagine-edge`` command: a thin dispatcher to each subpackage's own command.

Subcommands import their package only when chosen, so ``imagine-edge info`` does not load the
server and ``imagine-edge serve`` does not load the benchmark tool.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import platform
import sys
from collections.abc import Callable, Sequence

from imagine_edge import __version__
from imagine_edge.extras import MissingExtraError

# subcommand -> (module, function taking the remaining argv and returning an exit code, help)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "models": ("imagine_edge.models.cli", "models_command", "prepare and list models"),
    "serve": ("imagine_edge.server.cli", "serve_command", "run the local API server"),
    "bench": ("imagine_edge.benchmarks.cli", "bench_command", "benchmark each model type"),
}


def _info() -> int:
    from imagine_edge import kernels
    from imagine_edge.runtime.providers import qnn_unavailable_reason, qnn_version

    print(f"imagine-edge {__version__} on {platform.machine()} {platform.system()}")
    print(f"sampling kernels: {kernels.active_backend()}")
    reason = qnn_unavailable_reason()
    qnn = f"available (onnxruntime-qnn {qnn_version()})" if reason is None else reason
    print(f"QNN execution provider: {qnn}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imagine-edge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"imagine-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    names = [*_COMMANDS, "info"]
    parser.add_argument(
        "command",
        choices=names,
        help="; ".join(
            [f"{n}: {h}" for n, (_, _, h) in _COMMANDS.items()] + ["info: kernels and EPs in use"]
        ),
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the subcommand")
    ns = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if ns.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if ns.command == "info":
        return _info()
    module, function, _ = _COMMANDS[ns.command]
    command: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
    try:
        return command(list(ns.args))
    except MissingExtraError as e:  # an optional feature: say which extra to install
        print(f"imagine-edge {ns.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
