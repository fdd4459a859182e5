"""Generated images kept as PNG files, for ``response_format='url'``: the newest few hundred."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

__all__ = ["find_image", "keep_image"]

# File ids come from URLs: nothing that could leave the folder.
_FILE_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_KEEP_IMAGE_FILES: Final = 256


def find_image(folder: Path, file_id: str) -> Path | None:
    """The PNG file of a generated image, if it still exists."""
    if not _FILE_ID.match(file_id):
        return None
    path = folder / f"{file_id}.png"
    return path if path.is_file() else None


def keep_image(folder: Path, file_id: str, png: bytes) -> Path:
    """Write ``png`` as ``file_id``.png and delete all but the newest files of the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{file_id}.png"
    path.write_bytes(png)
    old = sorted(folder.glob("*.png"), key=lambda p: p.stat().st_mtime)[:-_KEEP_IMAGE_FILES]
    for stale in old:
        stale.unlink(missing_ok=True)
    return path
