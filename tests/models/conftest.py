"""Fixtures of the model-store tests: the real SmolLM2 and Gemma 3, prepared through the store.

The first run prepares it into the user's cache (or ``$IMAGINE_EDGE_CACHE``), which takes a
minute or two; later runs are cache hits.
"""

from __future__ import annotations

import pytest

from imagine_edge.models.catalog import prepared
from imagine_edge.models.store import Manifest

SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma3-270m"


@pytest.fixture(scope="session")
def smollm2_manifest() -> Manifest:
    return prepared(SMOLLM2, ["cpu"])


@pytest.fixture(scope="session")
def smollm2_qnn_truncated() -> Manifest:
    """SmolLM2's first 2 layers through the QNN exporter (the simulator is too slow for 30)."""
    return prepared(SMOLLM2, ["qnn-truncated"])


@pytest.fixture(scope="session")
def gemma3_base() -> Manifest:
    """Gemma 3 270M's base only: the GGUF and its float32 dequantization (``hf/``)."""
    return prepared(GEMMA3, [])


@pytest.fixture(scope="session")
def gemma3_qnn_truncated() -> Manifest:
    """Gemma 3's first 2 layers (+ final norm and head) through the QNN exporter."""
    return prepared(GEMMA3, ["qnn-truncated"])
