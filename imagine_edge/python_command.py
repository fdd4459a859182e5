"""The command line that runs a Python module of this installation in a child process."""

from __future__ import annotations

import sys

__all__ = ["python_module"]


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args`` in this interpreter, with the working directory off ``sys.path``.

    ``-P`` matters when the working directory is a checkout of this repository: its top-level
    folders (``kernels``, ``models``, ``server``...) would otherwise shadow installed packages of
    the same name, and transformers 5 imports the Hugging Face ``kernels`` package when it finds
    one.
    """
    return [sys.executable, "-P", "-m", module, *args]
