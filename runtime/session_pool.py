"""Sessions shared by several models of the process: one per graph content and way of opening it.

Two models that run the same graph file (the bi-encoder reranker's store folder hard-links the
embedding model's files) should not each hold a copy of its weights. :class:`SessionPool` opens a
session for the first holder and hands every holder a :class:`SessionLease`; the session closes
with the last lease. The first holder still holding a lease counts the session's memory
(``counts_memory``), so health never counts a session twice.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from imagine_edge.runtime.graph_session import LoadedSession
from imagine_edge.runtime.providers import QnnOptions
from imagine_edge.runtime.session import SessionFactory, file_digest
from imagine_edge.runtime.targets import Target

__all__ = ["SESSIONS", "SessionLease", "SessionPool"]


@dataclass(eq=False)
class _Shared:
    loaded: LoadedSession
    holders: list[SessionLease] = field(default_factory=list)  # in the order they came
    # Held around runs where the EP takes one at a time (QNN), across all holders.
    lock: threading.Lock = field(default_factory=threading.Lock)


class SessionLease:
    """One model's hold on a session of a :class:`SessionPool`."""

    def __init__(self, pool: SessionPool, key: tuple[object, ...], shared: _Shared, holder: str):
        self._pool, self.key, self._shared, self.holder = pool, key, shared, holder

    @property
    def loaded(self) -> LoadedSession:
        return self._shared.loaded

    @property
    def lock(self) -> threading.Lock:
        return self._shared.lock

    def counts_memory(self) -> bool:
        """True for the first holder still holding the session: it reports its memory."""
        return self._shared.holders[:1] == [self]

    def others(self) -> list[str]:
        """The other holders' names."""
        return [h.holder for h in self._shared.holders if h is not self]

    def release(self) -> None:
        self._pool.release(self)


class SessionPool:
    """Sessions opened once per process per graph (content hash) and way of opening it; each
    holder gets a :class:`SessionLease`, and a session closes with its last lease."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._entries: dict[tuple[object, ...], _Shared] = {}

    def open(
        self,
        holder: str,
        factory: SessionFactory,
        path: Path,
        target: Target,
        *,
        qnn_options: QnnOptions | None = None,
        session_config: dict[str, str] | None = None,
    ) -> SessionLease:
        config = tuple(sorted((session_config or {}).items()))
        key = (file_digest(path), id(factory), target, repr(qnn_options), config)
        with self._mutex:  # loads are rare: one at a time keeps this simple
            shared = self._entries.get(key)
            if shared is None:
                loaded = factory.create(
                    path, target, qnn_options=qnn_options, session_config=session_config
                )
                shared = self._entries[key] = _Shared(loaded)
            lease = SessionLease(self, key, shared, holder)
            shared.holders = [*shared.holders, lease]
            return lease

    def release(self, lease: SessionLease) -> None:
        with self._mutex:
            shared = self._entries.get(lease.key)
            if shared is None or lease not in shared.holders:
                return  # released already
            shared.holders = [h for h in shared.holders if h is not lease]
            if not shared.holders:
                del self._entries[lease.key]
                shared.loaded.close()


SESSIONS: Final = SessionPool()
