"""The one reader of where imagine-edge keeps derived files (prepared models, compiled graphs)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_cache"]


def user_cache(kind: str) -> Path:
    """``$IMAGINE_EDGE_CACHE/<kind>``, else ``<kind>`` in the user's cache directory.

    Never inside the repository: these files are large, machine-specific and rebuilt on demand.
    """
    override = os.environ.get("IMAGINE_EDGE_CACHE")
    if override:
        return Path(override).expanduser().resolve() / kind
    import platformdirs  # only needed when no override is given

    return Path(platformdirs.user_cache_dir("imagine-edge")) / kind
