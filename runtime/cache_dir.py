"""Where imagine-edge keeps derived files (prepared models, compiled and pre-packed graphs), and
the record of what each was derived from, so that orphans can be pruned."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "DATA_DIR_ENV",
    "abandoned",
    "orphaned",
    "user_cache",
    "user_data",
    "write_source_record",
]

DATA_DIR_ENV: Final = "IMAGINE_EDGE_DATA_DIR"

# A temporary folder untouched this long belongs to no save or compile still running.
_ABANDONED_AFTER_S = 3600.0


def user_cache(kind: str) -> Path:
    """``$IMAGINE_EDGE_CACHE/<kind>``, else ``<kind>`` in the user's cache directory.

    Never inside the repository: these files are large, machine-specific and rebuilt on demand.
    """
    override = os.environ.get("IMAGINE_EDGE_CACHE")
    if override:
        return Path(override).expanduser().resolve() / kind
    import platformdirs  # only needed when no override is given

    return Path(platformdirs.user_cache_dir("imagine-edge")) / kind


def user_data() -> Path:
    """``$IMAGINE_EDGE_DATA_DIR``, else the user's data directory: what the user made and keeps
    (usage records, generated files, the registry of added models), unlike the rebuildable cache.
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    import platformdirs  # only needed when no override is given

    return Path(platformdirs.user_data_dir("imagine-edge"))


def write_source_record(record: Path, source: Path) -> None:
    """Note in ``record`` (JSON) that the files beside it were derived from graph ``source``."""
    record.write_text(json.dumps({"source": str(source.resolve())}), encoding="utf-8")


def orphaned(record: Path, removed: Sequence[Path] = ()) -> bool:
    """True when the graph ``record`` names is gone or lies in one of the ``removed`` folders
    (about to go), or when there is no readable record.

    Sources live in content-addressed store folders, so a source that still exists has not
    changed: only a removed one (a stale model version) leaves its derived files orphaned.
    """
    try:
        source = Path(json.loads(record.read_text(encoding="utf-8"))["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return not source.is_file() or any(source.is_relative_to(f) for f in removed)


def abandoned(tmp: Path) -> bool:
    """True for a temporary folder of an interrupted save or compile (not touched for an hour)."""
    try:
        return time.time() - tmp.stat().st_mtime > _ABANDONED_AFTER_S
    except OSError:
        return False
