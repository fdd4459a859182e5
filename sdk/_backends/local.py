"""The in-process backends: requests run on an engine created on first use, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from pydantic import BaseModel

from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.paths import Endpoint
from imagine_edge.sdk.types import (
    HealthResponse,
    ModelType,
    PingResponse,
    TranscribeResponse,
    UsageResponse,
)

__all__ = ["AsyncLocalBackend", "LocalBackend"]


from imagine_edge.sdk._backends.shared import OPS


class LocalBackend:
    """Runs requests on an in-process engine, created on first use."""

    def __init__(self, make_engine: Callable[[], Engine], owned: bool) -> None:
        self._make_engine, self._owned = make_engine, owned
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._make_engine()
        return self._engine

    def run(self, endpoint: Endpoint, request: BaseModel) -> Any:
        return OPS[endpoint].submit(self.engine, request).result()

    def stream(self, endpoint: Endpoint, request: BaseModel) -> Iterator[Any]:
        yield from OPS[endpoint].submit(self.engine, request).events()

    def transcribe(self, audio: bytes, filename: str, model: str) -> TranscribeResponse:
        return self.engine.transcribe(audio, model).result()

    def ping(self) -> PingResponse:
        return self.engine.ping()

    def health(self) -> HealthResponse:
        return self.engine.health()

    def models(self, model_type: ModelType | None) -> dict[ModelType, list[str]]:
        return self.engine.index.models(model_type)

    def usage(self, *args: Any) -> UsageResponse:
        return self.engine.usage(*args)

    def history(self, endpoint: Endpoint, max_items: int) -> list[list[Any]]:
        return self.engine.history(endpoint, max_items)

    def close(self) -> None:
        if self._engine is not None and self._owned:
            self._engine.close()
        self._engine = None


class AsyncLocalBackend:
    """The in-process engine, awaited: inference on the workers, store reads in threads."""

    def __init__(self, make_engine: Callable[[], Engine], owned: bool) -> None:
        self._local = LocalBackend(make_engine, owned)

    async def run(self, endpoint: Endpoint, request: BaseModel) -> Any:
        return await OPS[endpoint].submit(self._local.engine, request).aresult()

    async def stream(self, endpoint: Endpoint, request: BaseModel) -> AsyncIterator[Any]:
        async for event in OPS[endpoint].submit(self._local.engine, request).aevents():
            yield event

    async def transcribe(self, audio: bytes, filename: str, model: str) -> TranscribeResponse:
        return await self._local.engine.transcribe(audio, model).aresult()

    async def ping(self) -> PingResponse:
        return self._local.ping()

    async def health(self) -> HealthResponse:
        return await asyncio.to_thread(self._local.health)

    async def models(self, model_type: ModelType | None) -> dict[ModelType, list[str]]:
        return self._local.models(model_type)

    async def usage(self, *args: Any) -> UsageResponse:
        return await asyncio.to_thread(self._local.usage, *args)

    async def history(self, endpoint: Endpoint, max_items: int) -> list[list[Any]]:
        return await asyncio.to_thread(self._local.history, endpoint, max_items)

    async def close(self) -> None:
        await asyncio.to_thread(self._local.close)
