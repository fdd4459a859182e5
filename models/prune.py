"""What ``imagine-edge models prune`` removes: derived files no current model needs.

Every cache is content-addressed, so a new model version (another package version, recipe or
option) is prepared into a new folder and the old one is never read again, nor the pre-packed
and compiled graphs derived from it. They are only removed on request, never while preparing:
another process may still be serving the old version. Imported on use (``models prune``), since
it reaches into the runtime's caches.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from imagine_edge.models import catalog
from imagine_edge.models.manifest import TMP_PREFIX
from imagine_edge.models.store import cache_root, lock_file
from imagine_edge.runtime.cache_dir import abandoned
from imagine_edge.runtime.prepacked import orphaned_copies
from imagine_edge.runtime.session import orphaned_compilations
from imagine_edge.sdk.errors import ImagineException

__all__ = ["Stale", "remove", "stale_files"]

_FOLDER = re.compile(r"^(?P<name>.+)-(?P<key>[0-9a-f]{16})$")


@dataclass(frozen=True, slots=True)
class Stale:
    path: Path
    reason: str
    size: int


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _stale_store_folders() -> list[tuple[Path, str]]:
    root = cache_root()
    if not root.is_dir():
        return []
    current: dict[str, str | None] = {}
    for entry in catalog.CATALOG:  # read when called: tests swap the catalog
        try:
            found = catalog.lookup(entry.name)
        except ImagineException:  # its package is not installed: its folders cannot be judged
            found = None
        # Found from a recorded key (no package): which version is current cannot be judged.
        current[entry.name] = None if found is None or found.weights is None else found.folder.name
    stale: list[tuple[Path, str]] = []
    for folder in sorted(root.iterdir()):
        match = _FOLDER.match(folder.name)
        if folder.is_dir() and folder.name.startswith(TMP_PREFIX) and abandoned(folder):
            stale.append((folder, "an interrupted preparation"))
        elif match and folder.is_dir() and current.get(match["name"]) not in (None, folder.name):
            stale.append((folder, f"an older version of {match['name']}"))
    return stale


def stale_files() -> list[Stale]:
    """Old store folders, then pre-packed and compiled graphs whose source graph is gone or in
    one of those folders."""
    found = _stale_store_folders()
    going = [folder for folder, _ in found]
    orphan = "its source graph is gone or unrecorded"
    found += [(p, f"pre-packed copy; {orphan}") for p in orphaned_copies(going)]
    found += [(p, f"compiled QNN graph; {orphan}") for p in orphaned_compilations(going)]
    return [Stale(path, reason, _size(path)) for path, reason in found]


def remove(stale: list[Stale]) -> int:
    """Delete ``stale``; returns the bytes freed."""
    freed = 0
    store = cache_root()
    for item in stale:
        if item.path.is_dir():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        if item.path.parent == store:
            lock_file(item.path).unlink(missing_ok=True)
        freed += item.size
    return freed
