"""The process's resident memory, for reports of what a model costs on the device."""

from __future__ import annotations

import os

__all__ = ["process_resident_bytes"]

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
