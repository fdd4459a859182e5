"""The process's resident memory, for reports of what a model costs on the device."""

from __future__ import annotations

import os

__all__ = ["process_resident_bytes"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_resident_bytes() -> int | None:
    """This process's resident set size now, or None where /proc is not available."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * _PAGE_SIZE
