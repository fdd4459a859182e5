"""Optional dependencies: a feature whose extra is not installed says which extra to install.

A plain ``pip install imagine-edge`` serves and runs prepared models. Other features need an extra
(pyproject.toml's ``[project.optional-dependencies]``); they call :func:`require` before any work,
and the ``imagine-edge`` command prints the error's message, a ``pip install`` line, instead of a
traceback. Modules are located with ``find_spec``, never imported here: the check costs
microseconds and loads nothing (torch takes seconds).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Final

__all__ = ["EXTRA_MODULES", "MissingExtraError", "extra_of", "missing_modules", "require"]

EXTRA_MODULES: Final[Mapping[str, tuple[str, ...]]] = {
    # Converting packaged weights to ONNX (`imagine-edge models prepare` on a store miss).
    "prepare": (
        "torch",
        "transformers",
        "gguf",
        "accelerate",
        "safetensors",
        "onnx",
        "onnx_ir",
        "onnxscript",
        "onnxruntime_genai",
        "diffusers",
    ),
    # The PNG chart of `imagine-edge bench`.
    "bench": ("matplotlib",),
    # Peers of `imagine-edge bench --compare`, each optional on its own.
    "compare": ("faster_whisper", "llama_cpp"),
}
"""The import names each extra brings, for the features that need the whole extra."""


class MissingExtraError(ImportError):
    """A feature needs an extra that is not (fully) installed; the message says what to install."""

    def __init__(self, feature: str, extra: str, missing: Sequence[str]) -> None:
        self.feature = feature
        self.extra = extra
        self.missing = tuple(missing)
        super().__init__(
            f"{feature} needs the {extra!r} extra ({', '.join(self.missing)} not installed): "
            f"pip install 'imagine-edge[{extra}]'",
            name=self.missing[0] if self.missing else None,
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-removed install counts as missing
        return False


def extra_of(module: str | None) -> str | None:
    """The extra that brings ``module`` (or its top-level package), if one does."""
    top = (module or "").partition(".")[0]
    return next((extra for extra, mods in EXTRA_MODULES.items() if top in mods), None)


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` (a key of :data:`EXTRA_MODULES`) that are not installed."""
    return [m for m in EXTRA_MODULES[extra] if not _installed(m)]


def require(extra: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` unless all its modules are installed."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(feature, extra, missing)
