"""The process's resident memory, for reports of what a model costs on the device, and giving
memory that is free in the C heap back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import re
from collections.abc import Callable

__all__ = [
    "memory_parts",
    "one_malloc_arena",
    "process_resident_bytes",
    "release_free_memory",
    "resident_set_bytes",
]

_M_ARENA_MAX = -8  # glibc's mallopt parameter

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_resident_bytes() -> int | None:
    """This process's resident memory now (its proportional set size), or None without /proc.

    Proportional: a page mapped by several sessions or processes (memory-mapped pre-packed
    weights, runtime/prepacked.py) counts once, split between them. The plain resident set size
    counts it once per mapping, and two sessions of the LLM sharing 150 MiB of weights would
    show 300. Falls back to the resident set size where ``smaps_rollup`` is missing.
    """
    try:
        with open("/proc/self/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * _PAGE_SIZE


def resident_set_bytes() -> int:
    """This process's resident set size (shared pages counted per mapping), 0 without /proc.

    A cheap read (``/proc/self/statm``, no page walk) for decisions on a request's path, where
    :func:`process_resident_bytes` would cost a walk of every mapping."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on another C library."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


@functools.cache
def one_malloc_arena() -> bool:
    """Make every thread allocate from glibc's main heap (``mallopt(M_ARENA_MAX, 1)``), from
    threads that have not allocated yet on; False where the C library has no ``mallopt``.

    glibc gives each thread that allocates its own heap ("arena"); what a large request frees in
    the arenas of onnxruntime's worker threads stays fragmented there, and ``malloc_trim`` gave
    back only part of it (a 1024x1024 image left 20-30 MiB of 140 behind, against none with one
    arena). Call it before sessions start their threads.
    """
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, 1))


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system (glibc ``malloc_trim(0)``).

    glibc keeps memory freed by a large request (an image's activations, a long prompt's
    buffers) in its heap, where it still counts as resident; trimming gives it back. Returns
    False where the C library has no ``malloc_trim`` (the call is then a no-op).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


_LIBRARY = re.compile(r"\.so(\.\d+)*$|\.so\.")
_MODEL_FILE = re.compile(r"\.(onnx|data|bin|npz|ort)$")


def memory_parts() -> dict[str, int] | None:
    """This process's proportional memory by kind of mapping (bytes), from ``/proc/self/smaps``;
    None without it. Every mapping is in exactly one part:

    - ``libraries``: shared libraries (onnxruntime, numpy, Python's extensions: the runtime);
    - ``model files``: memory-mapped model files (pre-packed weights, graphs, shortlists);
    - ``heap``: anonymous memory: weights read into memory, onnxruntime's arenas, tensors,
      numpy buffers, caches and Python's objects;
    - ``other``: stacks and every other mapping.
    """
    parts = dict.fromkeys(("libraries", "model files", "heap", "other"), 0)
    kind = "other"
    try:
        with open("/proc/self/smaps", "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace")
                head = line.split(None, 1)[0]
                if "-" in head and not head.endswith(":"):  # a mapping's first line
                    fields = line.split(None, 5)
                    path = fields[5].strip() if len(fields) > 5 else ""
                    if _LIBRARY.search(path):
                        kind = "libraries"
                    elif _MODEL_FILE.search(path):
                        kind = "model files"
                    elif not path or path == "[heap]" or path.startswith("[anon"):
                        kind = "heap"
                    else:
                        kind = "other"
                elif head == "Pss:":
                    parts[kind] += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return parts
