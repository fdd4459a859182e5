"""The catalog's weights-package pins are what `make setup` installs and what is installed."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

from imagine_edge.models.catalog import CATALOG

ROOT = Path(__file__).resolve().parents[2]


def _makefile_pins() -> dict[str, str]:
    text = (ROOT / "Makefile").read_text()
    block = re.search(r"^WEIGHT_PACKAGES := (.*?)(?<!\\)\n", text, re.M | re.S)
    assert block is not None
    return dict(p.split("==") for p in block.group(1).replace("\\", " ").split())


def test_every_weights_package_of_the_catalog_is_pinned_as_make_setup_installs_it() -> None:
    pins = _makefile_pins()
    for entry in CATALOG:
        if entry.source_package == "imagine-edge":  # a recipe that is its own source
            assert entry.source_version is None
            continue
        assert entry.source_version == pins[entry.source_package], entry.name
        assert importlib.metadata.version(entry.source_package) == entry.source_version
