"""llama.cpp's llama-server as the multi-client scenario's peer: found, started, stopped.

Found as ``--llama-server PATH``, else ``$IMAGINE_EDGE_LLAMA_SERVER``, else ``llama-server`` on
PATH; absent, the peer is reported with how to build it (docs/bench.md). It runs
the GGUF file our catalog converts the model from (the weights package's own file), with
``-np N`` slots for N clients, each slot a context of ``prompt + max_tokens`` and some margin,
as many threads as our sessions use, on a free loopback port, its OpenMP threads waiting as
``OMP_WAIT_POLICY`` says, else by the policy the caller measured faster (:data:`WAIT_POLICIES`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = [
    "LLAMA_SERVER_ENV",
    "NOT_FOUND",
    "WAIT_POLICIES",
    "find_llama_server",
    "llama_server",
    "server_environment",
]

LLAMA_SERVER_ENV: Final = "IMAGINE_EDGE_LLAMA_SERVER"
NOT_FOUND: Final = (
    "llama-server not found: pass --llama-server PATH, set IMAGINE_EDGE_LLAMA_SERVER, or put it "
    "on PATH (building it: docs/bench.md, 'The llama-server peer')"
)
_SLOT_MARGIN: Final = 256  # tokens of a slot's context beyond prompt + output (template, BOS)


def find_llama_server(option: str | None = None) -> Path | None:
    """The llama-server binary: the option, the environment, then PATH."""
    for candidate in (option, os.environ.get(LLAMA_SERVER_ENV)):
        if candidate:
            path = Path(candidate)
            return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which("llama-server")
    return Path(found) if found else None


# llama.cpp's CPU backend syncs its threads through OpenMP, and neither way of waiting wins
# everywhere. Spinning (OpenMP's default: a while, then sleep) collapses on cores other work
# shares: one client's decode fell from 19 to 0.6 tokens/s at load average 6.5 on 2 cores.
# Sleeping (PASSIVE) collapses on idle cores: SmolLM2's tg64 (llama-bench, 2 threads, load 1.5)
# was 74 tokens/s by default and 23 passive. Ours chooses per step (runtime/thread_policy.py);
# the peer is measured both ways before its points and runs the faster (benchmarks/peers.py).
# ACTIVE (spin forever) is not a candidate: an idle server would hold both cores.
DEFAULT_WAIT: Final = "default"
WAIT_POLICIES: Final = (DEFAULT_WAIT, "PASSIVE")


def server_environment(wait_policy: str = "PASSIVE") -> dict[str, str]:
    """Ours, with ``OMP_WAIT_POLICY`` as set, else ``wait_policy`` (``default``: OpenMP's own)."""
    env = dict(os.environ)
    if "OMP_WAIT_POLICY" not in env and wait_policy != DEFAULT_WAIT:
        env["OMP_WAIT_POLICY"] = wait_policy
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_server(
    binary: Path,
    gguf: Path,
    slots: int,
    slot_tokens: int,
    threads: int,
    wait_policy: str = "PASSIVE",
) -> Iterator[str]:
    """Run ``binary`` on ``gguf`` with ``slots`` parallel slots; yield its root URL."""
    import httpx

    port = _free_port()
    context = slots * (slot_tokens + _SLOT_MARGIN)
    command = [
        str(binary),
        *("-m", str(gguf), "-np", str(slots), "-c", str(context), "-t", str(threads)),
        *("--host", "127.0.0.1", "--port", str(port), "--no-webui"),
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=server_environment(wait_policy),
    )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with code {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(root + "/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("llama-server did not answer /health within 120 s")
            time.sleep(0.2)
        yield root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
