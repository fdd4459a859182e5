"""The engine: serves the contract's requests on the models of this device.

Modules: ``engine`` (:class:`Engine`, the endpoints), ``names`` (which model serves a name),
``workers`` (admission into the per-model workers, recording, lifecycle), ``worker`` (one model's
thread and queue), ``batch_queue`` (embedding and reranker requests gathered into one run),
``calls`` (:class:`Call`, the consumer's handle on a request), ``responses``
(response DTOs from generation chunks), ``recorder`` (usage and history in SQLite) and
``image_files`` (PNG files kept for URL responses).
"""

from __future__ import annotations

from imagine_edge.sdk.engine.calls import HEARTBEAT, Call, Heartbeat
from imagine_edge.sdk.engine.engine import Engine
from imagine_edge.sdk.engine.names import CLIENT_DEFAULT_NAMES, ModelIndex, client_alias
from imagine_edge.sdk.engine.recorder import Recorder, parse_client_datetime, parse_duration
from imagine_edge.sdk.engine.worker import ModelState

__all__ = [
    "CLIENT_DEFAULT_NAMES",
    "HEARTBEAT",
    "Call",
    "Engine",
    "Heartbeat",
    "ModelIndex",
    "ModelState",
    "Recorder",
    "client_alias",
    "parse_client_datetime",
    "parse_duration",
]
