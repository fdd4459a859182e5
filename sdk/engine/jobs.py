"""What the engine and a model's worker pass each other: an admitted :class:`Job` (its call and
body), the :class:`JobContext` a body fills, the :class:`Outcome` it ends with, and the
:class:`ModelState` a worker reports for health.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from imagine_edge.models.base import LoadedModel
from imagine_edge.runtime.kv_cache import SlotUsage
from imagine_edge.runtime.results import GenerationStats
from imagine_edge.sdk.engine.calls import Call
from imagine_edge.sdk.errors import ImagineException

__all__ = ["Body", "Job", "JobContext", "ModelState", "Outcome", "Status"]


class Status(StrEnum):
    """How a request ended."""

    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class JobContext:
    """What a job body reports besides its result: the run's token counts and timings."""

    cancel: threading.Event
    started: float = 0.0  # time.monotonic() when the body started (after loading)
    stats: GenerationStats = field(default_factory=GenerationStats)
    # Set before the body runs, so that a response's usage can report them (docs/server.md).
    queue_seconds: float = 0.0
    load_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job ended, handed to ``Job.on_done`` before the call receives it."""

    status: Status
    result: Any
    error: ImagineException | None
    context: JobContext
    queue_seconds: float
    load_seconds: float
    generation_seconds: float


# A job body runs the model: it may emit stream events on the call, fills the context, and
# returns the call's result. It runs on the worker thread.
Body = Callable[[LoadedModel, Call[Any, Any], JobContext], Any]


@dataclass(eq=False, slots=True)
class Job:
    """One admitted request."""

    call: Call[Any, Any]
    body: Body
    on_done: Callable[[Job, Outcome], None]
    admitted: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class ModelState:
    """A snapshot of a model for health reports and the CLI banner."""

    name: str
    state: str  # 'not loaded', 'loading', 'loaded', 'unloading' or 'failed: <why>'
    execution_provider: str | None
    resident_bytes: int | None
    queued: int
    # How much the process's resident memory grew while the model loaded (None: not measured).
    load_rss_bytes: int | None = None
    # Seconds idle after which the model unloads (None: never).
    keep_alive: float | None = None
    # Requests running now (the rest of ``queued`` waits), and the model's KV slots.
    running: int = 0
    kv_slots: SlotUsage | None = None
