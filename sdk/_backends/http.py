"""The HTTP backends: a server of the contract through httpx, sync and async. An error body's
``error`` field names the imagine-edge exception class, which is raised again here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import posixpath
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel

from imagine_edge.sdk import errors
from imagine_edge.sdk.paths import API_PREFIX, Endpoint
from imagine_edge.sdk.types import (
    HealthResponse,
    ImageResponse,
    ModelType,
    PingResponse,
    TranscribeResponse,
    UsageResponse,
)

__all__ = ["AsyncHttpBackend", "HttpBackend", "api_root"]


from imagine_edge.sdk._backends.shared import OPS, Op


def api_root(base_url: str) -> str:
    """The API root: ``base_url`` itself, or with the server's default prefix when it has none."""
    base = base_url.rstrip("/")
    return base if urlsplit(base).path else base + API_PREFIX


@contextlib.contextmanager
def _transport_errors() -> Iterator[None]:
    """httpx's errors as the official client reports them (docs/contract.md, Errors)."""
    try:
        yield
    except httpx.ConnectError as e:
        raise errors.ImagineConnectionException(str(e)) from e
    except httpx.RequestError as e:
        raise errors.ImagineException(f"Unexpected exception ({type(e).__name__}): {e}") from e


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    name = body.get("error") if isinstance(body, dict) else None
    raise _error(response.status_code, str(detail or response.text), name, response.headers)


def _error(
    status: int, message: str, name: object, headers: Mapping[str, str]
) -> errors.ImagineException:
    cls = getattr(errors, name, None) if isinstance(name, str) and name in errors.__all__ else None
    if status == 429 or cls is errors.ImagineAPITooManyRequestsException:
        return errors.ImagineAPITooManyRequestsException(
            message, retry_after=float(headers.get("retry-after", "1") or 1)
        )
    if cls is errors.ModelRunError:
        phase, _, rest = message.partition(": ")
        return errors.ModelRunError(rest, phase)
    if isinstance(cls, type) and issubclass(cls, errors.InferenceError):
        return cls(message)
    if status in (500, 502, 503, 504):
        return errors.ImagineAPIStatusException(message, status, headers)
    return errors.ImagineAPIException(message, status, headers)


def _event(op: Op, line: str) -> BaseModel | None:
    if not line.startswith("data: ") or line[6:].strip() == "[DONE]":
        return None  # comments (keep-alives), blank lines, the end marker
    payload = json.loads(line[6:])
    failure = payload.get("error")
    if isinstance(failure, dict):
        raise _error(int(failure.get("status", 500)), str(failure.get("message")),
                     failure.get("type"), {})  # fmt: skip
    assert op.event is not None
    return op.event.model_validate(payload)


def _image_urls(root: str, response: BaseModel) -> Any:
    # The server answers '/<last segment>/files/<id>.png', relative to the root's parent.
    if isinstance(response, ImageResponse):
        for image in response.data:
            if image.url is not None and image.url.startswith("/"):
                image.url = posixpath.dirname(root) + image.url
    return response


def _usage_params(
    aggregation_duration: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    model: str | None,
) -> dict[str, str]:
    params = {"aggregation_duration": aggregation_duration, "model": model,
              "from": None if since is None else str(since),
              "to": None if until is None else str(until)}  # fmt: skip
    return {k: v for k, v in params.items() if v is not None}


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _models(body: dict[str, Any], model_type: ModelType | None) -> dict[ModelType, list[str]]:
    types = list(ModelType) if model_type is None else [model_type]
    return {t: list(body.get(t.value, [])) for t in types}


class HttpBackend:
    """Talks to an imagine-edge server (or any server of the contract) with httpx."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.root = api_root(base_url)
        self._client = httpx.Client(timeout=timeout, headers=_headers(api_key))

    def _url(self, path: str) -> str:
        return f"{self.root}/{path}"

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        with _transport_errors():
            response = self._client.get(self._url(path), params=params)
        _raise_for(response)
        return response.json()

    def run(self, endpoint: Endpoint, request: BaseModel) -> Any:
        body = request.model_dump(mode="json", exclude_none=True)
        with _transport_errors():
            response = self._client.post(self._url(endpoint.value), json=body)
        _raise_for(response)
        return _image_urls(self.root, OPS[endpoint].response.model_validate(response.json()))

    def stream(self, endpoint: Endpoint, request: BaseModel) -> Iterator[Any]:
        body = request.model_dump(mode="json", exclude_none=True)
        op = OPS[endpoint]
        with (
            _transport_errors(),
            self._client.stream("POST", self._url(endpoint.value), json=body) as response,
        ):
            if not response.is_success:
                response.read()
                _raise_for(response)
            for line in response.iter_lines():
                if (event := _event(op, line)) is not None:
                    yield _image_urls(self.root, event)

    def transcribe(self, audio: bytes, filename: str, model: str) -> TranscribeResponse:
        with _transport_errors():
            response = self._client.post(
                self._url("transcribe"), data={"model": model}, files={"file": (filename, audio)}
            )
        _raise_for(response)
        return TranscribeResponse.model_validate(response.json())

    def ping(self) -> PingResponse:
        return PingResponse.model_validate(self._get("ping"))

    def health(self) -> HealthResponse:
        return HealthResponse.model_validate(self._get("health"))

    def models(self, model_type: ModelType | None) -> dict[ModelType, list[str]]:
        params = None if model_type is None else {"model_type": model_type.value}
        return _models(self._get("models", params), model_type)

    def usage(self, *args: Any) -> UsageResponse:
        return UsageResponse.model_validate(self._get("usage", _usage_params(*args)))

    def history(self, endpoint: Endpoint, max_items: int) -> list[list[Any]]:
        result: list[list[Any]] = self._get(endpoint.value, {"max_items": max_items})
        return result

    def close(self) -> None:
        self._client.close()


class AsyncHttpBackend:
    """:class:`HttpBackend`, awaited (httpx.AsyncClient)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.root = api_root(base_url)
        self._client = httpx.AsyncClient(timeout=timeout, headers=_headers(api_key))

    def _url(self, path: str) -> str:
        return f"{self.root}/{path}"

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with _transport_errors():
            response = await self._client.request(method, self._url(path), **kwargs)
        _raise_for(response)
        return response

    async def run(self, endpoint: Endpoint, request: BaseModel) -> Any:
        body = request.model_dump(mode="json", exclude_none=True)
        response = await self._send("POST", endpoint.value, json=body)
        return _image_urls(self.root, OPS[endpoint].response.model_validate(response.json()))

    async def stream(self, endpoint: Endpoint, request: BaseModel) -> AsyncIterator[Any]:
        body = request.model_dump(mode="json", exclude_none=True)
        op = OPS[endpoint]
        with _transport_errors():
            async with self._client.stream("POST", self._url(endpoint.value), json=body) as r:
                if not r.is_success:
                    await r.aread()
                    _raise_for(r)
                async for line in r.aiter_lines():
                    if (event := _event(op, line)) is not None:
                        yield _image_urls(self.root, event)

    async def transcribe(self, audio: bytes, filename: str, model: str) -> TranscribeResponse:
        files = {"file": (filename, audio)}
        response = await self._send("POST", "transcribe", data={"model": model}, files=files)
        return TranscribeResponse.model_validate(response.json())

    async def ping(self) -> PingResponse:
        return PingResponse.model_validate((await self._send("GET", "ping")).json())

    async def health(self) -> HealthResponse:
        return HealthResponse.model_validate((await self._send("GET", "health")).json())

    async def models(self, model_type: ModelType | None) -> dict[ModelType, list[str]]:
        params = None if model_type is None else {"model_type": model_type.value}
        body = (await self._send("GET", "models", params=params)).json()
        return _models(body, model_type)

    async def usage(self, *args: Any) -> UsageResponse:
        response = await self._send("GET", "usage", params=_usage_params(*args))
        return UsageResponse.model_validate(response.json())

    async def history(self, endpoint: Endpoint, max_items: int) -> list[list[Any]]:
        params = {"max_items": max_items}
        result: list[list[Any]] = (await self._send("GET", endpoint.value, params=params)).json()
        return result

    async def close(self) -> None:
        await self._client.aclose()
