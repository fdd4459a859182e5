"""What ``models add`` prints while preparing: our named steps only. The libraries the recipes
call (transformers' weight-loading bar, torch's exporter warnings, the onnxruntime quantizer's
log lines) stay silent; on a terminal the steps are one tqdm bar."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import warnings
from pathlib import Path

from imagine_edge.models.add_progress import PREFIX, StepProgress, quiet_libraries
from imagine_edge.python_command import python_module

from .formats.builders import build_cross_encoder

STEPS = ["detecting the format", "hashing the files", "preparing", "registering"]


def test_a_small_add_prints_our_steps_and_no_foreign_lines(tmp_path: Path) -> None:
    source = build_cross_encoder(tmp_path / "quiet-cross-encoder", seed=5)
    env = {
        **os.environ,
        "IMAGINE_EDGE_DATA_DIR": str(tmp_path / "data"),
        "IMAGINE_EDGE_CACHE": str(tmp_path / "cache"),  # a fresh store: a real preparation
    }
    done = subprocess.run(
        python_module("imagine_edge", "models", "add", str(source)),
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "prepared in" in done.stdout  # not a cache hit: the recipe ran
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    foreign = [line for line in lines if not line.startswith(f"{PREFIX}: ")]
    assert foreign == [], "\n".join(foreign)
    named = [line.removeprefix(f"{PREFIX}: ") for line in lines]
    assert [n for n in named if n in STEPS] == STEPS
    assert "quiet-cross-encoder: building variant 'cpu'" in named


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_steps_are_one_bar() -> None:
    out = _Terminal()
    bar = StepProgress(len(STEPS), stream=out)
    for i, name in enumerate(STEPS):
        bar.step(i, name)
    bar.describe("model: building variant 'cpu'")
    bar.close()
    text = out.getvalue()
    assert all(name in text for name in STEPS)
    assert "building variant 'cpu'" in text
    assert f"{PREFIX}: " not in text  # the line-per-step form is for logs only
    assert "4/4" in text


def test_quiet_libraries_restores_what_it_changed(caplog: object) -> None:
    before = logging.getLogger().level, os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    with quiet_libraries():
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
        assert logging.getLogger().level == logging.ERROR
        warnings.warn("not shown", UserWarning, stacklevel=1)
    assert (logging.getLogger().level, os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")) == before
