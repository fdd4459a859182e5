"""Where the contract's requests go: the API root's prefix and the path of each request kind.

Defined once for the clients (which append the prefix to a base URL without a path), the server
(which mounts the Imagine API under it) and the engine (whose history is keyed by the path).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

__all__ = ["API_PREFIX", "Endpoint"]

API_PREFIX: Final = "/api/v2"
"""The Imagine API's root on a server: the official client's endpoints end with it."""


class Endpoint(StrEnum):
    """The request kinds, named by their path under the API root (the history key)."""

    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    TRANSLATE = "translate"
    EMBEDDINGS = "embeddings"
    RERANKER = "reranker"
    IMAGES = "images/generations"
    TRANSCRIBE = "transcribe"
