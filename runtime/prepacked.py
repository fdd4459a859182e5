"""A cache of CPU graphs saved after onnxruntime's optimizations, with their pre-packed weights.

Why: onnxruntime re-lays out constant weights for its kernels when a session opens ("pre-packing":
MatMulNBits' 4-bit blocks, MatMul's panels). Those copies live on the session's heap: SmolLM2's
111 MB graph grows the process by ~170 MiB per session, and a second session of the same graph
pays it again. Saved once with ``session.save_external_prepacked_constant_initializers``, the
pre-packed blobs sit in a data file that later sessions memory-map:
- a second session of the same graph costs ~5 MiB instead of ~170 MiB (measured), which is what
  lets the LLM keep two sessions with different thread policies (see ``thread_policy``);
- the pages are file-backed and clean, so under memory pressure the OS can drop and re-read
  them instead of swapping, and processes on one device share them through the page cache.

The saved graph holds optimizations for this CPU (onnxruntime warns that it "should only be used in
the same environment"), so the key covers the source graph's content, the onnxruntime version
and the CPU's identity and instruction-set flags. Entries are written in a temporary folder and
renamed into place whole, so a reader never sees half an entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from imagine_edge.runtime.cache_dir import abandoned, orphaned, user_cache, write_source_record
from imagine_edge.runtime.ort_names import SessionConfig

__all__ = ["cpu_identity", "orphaned_copies", "prepacked_copy", "prepacked_dir"]

log = logging.getLogger(__name__)

_RECIPE = 1  # bump when the saving options below change
_GRAPH = "model.onnx"
_DATA = "model.data"
_SOURCE = "source.json"


def prepacked_dir() -> Path:
    return user_cache("prepacked")


@functools.cache
def cpu_identity() -> str:
    """The CPU model and its feature flags (they pick onnxruntime's kernels and packed layouts)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags", "Features", "CPU part") and key not in fields:
                    fields[key] = " ".join(sorted(value.split()))
    except OSError:
        pass
    fields["machine"] = platform.machine()
    fields.setdefault("processor", platform.processor())
    return json.dumps(fields, sort_keys=True)


def _entry(path: Path, model_digest: str) -> Path:
    key = json.dumps(
        {
            "model": model_digest,
            "onnxruntime": ort.__version__,
            "cpu": cpu_identity(),
            "recipe": _RECIPE,
        },
        sort_keys=True,
    )
    return prepacked_dir() / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def prepacked_copy(path: Path, model_digest: str, options: ort.SessionOptions) -> Path:
    """The optimized, pre-packed copy of the CPU graph ``path``, saved on first use.

    ``options`` are the session options the copy is optimized with (their thread settings do not
    matter). Open the returned graph with graph optimizations off: they are already applied.
    Raises OSError or onnxruntime's error when the copy cannot be written.
    """
    entry = _entry(path, model_digest)
    graph = entry / _GRAPH
    if graph.is_file():
        return graph
    entry.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=entry.parent, prefix=".saving-") as tmp:
        staged = Path(tmp) / entry.name
        staged.mkdir()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(staged / _GRAPH)
        options.add_session_config_entry(SessionConfig.EXTERNAL_INITIALIZERS_FILE, _DATA)
        options.add_session_config_entry(SessionConfig.EXTERNAL_INITIALIZERS_MIN_SIZE, "1024")
        options.add_session_config_entry(SessionConfig.SAVE_PREPACKED_INITIALIZERS, "1")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        if not (staged / _GRAPH).is_file() or not (staged / _DATA).is_file():
            raise OSError(f"onnxruntime saved no pre-packed copy of {path.name}")
        write_source_record(staged / _SOURCE, path)
        try:
            os.rename(staged, entry)
        except OSError:
            if not graph.is_file():  # not a concurrent writer that got there first
                raise
    log.info("saved the pre-packed copy of %s in %s", path.name, entry)
    return graph


def orphaned_copies(removed: Sequence[Path] = ()) -> list[Path]:
    """Entries whose source graph is gone or in one of the ``removed`` folders (a model version
    since replaced), and leftovers of interrupted saves: what ``models prune`` removes."""
    root = prepacked_dir()
    if not root.is_dir():
        return []
    stale = []
    for p in root.iterdir():
        if p.name.startswith(".saving-"):
            if abandoned(p):
                stale.append(p)
        elif p.is_dir() and orphaned(p / _SOURCE, removed):
            stale.append(p)
    return sorted(stale)
