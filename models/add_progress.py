"""What ``imagine-edge models add`` shows while it prepares: our named steps, nothing else.

:class:`StepProgress` is one tqdm bar whose description is the current step ("detecting the
format", "hashing the files", "<model>: building variant 'cpu'", ...) on a terminal, and one
line per step on a stderr that is not a terminal (a log, CI), never a line per file or tensor.

:func:`quiet_libraries` silences, for the time of a preparation, the progress bars and log lines
of the libraries the recipes call: transformers' and huggingface_hub's bars and logs (both read
``HF_HUB_DISABLE_PROGRESS_BARS``; transformers has ``transformers.utils.logging``), diffusers'
likewise, the onnxruntime quantizer's Python log lines (it logs on the root logger), onnxruntime's
own C++ warnings (calibration and pre-processing sessions), and Python warnings (torch's
exporter warns about tracing). Errors still raise; our own loggers keep their warnings. What
was changed is restored afterwards; a library first imported during the preparation keeps the
quiet defaults it read from the environment then.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any, Final, TextIO

__all__ = ["PREFIX", "StepProgress", "quiet_libraries"]

PREFIX: Final = "imagine-edge models add"
_ENV: Final = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
_OURS: Final = "imagine_edge"


class StepProgress:
    """Named steps of one ``models add``: a bar on a terminal, a line per step elsewhere."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        if self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc="adding", unit="step", file=self._stream)

    def step(self, index: int, name: str) -> None:
        """Step ``index`` (of the total) begins; the bar stands at the steps done."""
        self.describe(name, index)

    def describe(self, name: str, index: int | None = None) -> None:
        """Name what is being done now (a sub-step keeps the bar where it is)."""
        if self._bar is not None:
            if index is not None:
                self._bar.n = index
            self._bar.set_description(name)
            self._bar.refresh()
            return
        self._stream.write(f"{PREFIX}: {name}\n")
        self._stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.n = self._bar.total
            self._bar.set_description("done")
            self._bar.close()


def _silence_transformers() -> list[Any]:
    """Quiet transformers, diffusers and huggingface_hub where they are imported already; undo
    steps. One imported later, during the preparation, reads the environment variables above
    when it is imported (importing them here would cost seconds: diffusers imports torch)."""
    undo: list[Any] = []
    if "huggingface_hub" in sys.modules:
        hub: Any = importlib.import_module("huggingface_hub.utils.tqdm")
        hub.disable_progress_bars()
        undo.append(hub.enable_progress_bars)
    for name in ("transformers", "diffusers"):
        if name not in sys.modules:
            continue
        module: Any = importlib.import_module(f"{name}.utils.logging")
        before = module.get_verbosity()
        module.set_verbosity_error()
        module.disable_progress_bar()
        undo.append(module.enable_progress_bar)
        undo.append(lambda m=module, v=before: m.set_verbosity(v))
    return undo


def _silence_onnxruntime() -> list[Any]:
    """onnxruntime's C++ log: errors only (its sessions warn about each pruned initializer)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    onnxruntime.set_default_logger_severity(3)
    return [lambda: onnxruntime.set_default_logger_severity(2)]


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Other libraries' progress bars, log lines and warnings off while the block runs."""
    saved_env = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(_ENV)
    root = logging.getLogger()
    ours = logging.getLogger(_OURS)
    levels = root.level, ours.level
    root.setLevel(logging.ERROR)  # the quantizer logs its progress on the root logger
    ours.setLevel(logging.WARNING if ours.level == logging.NOTSET else ours.level)
    undo = _silence_transformers() + _silence_onnxruntime()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for key, value in saved_env.items():  # first: the libraries' undo steps read them
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for step in reversed(undo):
                with contextlib.suppress(Exception):
                    step()
        root.setLevel(levels[0])
        ours.setLevel(levels[1])
