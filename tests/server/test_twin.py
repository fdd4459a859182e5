"""ImagineEdge and AsyncImagineEdge: the same results and exceptions in process and over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io

import imagine
import pytest

from imagine_edge.sdk import (
    AsyncImagineEdge,
    ImagineAPITooManyRequestsException,
    ImagineEdge,
    InvalidRequestError,
    ModelNotFoundError,
    ModelRunError,
    ModelType,
    NoHistoryError,
)
from imagine_edge.sdk.testing import fake_cards, fake_models


def _params(fn):
    return [(p.name, p.default, p.kind) for p in inspect.signature(fn).parameters.values()]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(ImagineEdge, imagine.ImagineClient), (AsyncImagineEdge, imagine.ImagineAsyncClient)],
)
def test_every_public_method_has_the_official_signature(ours, theirs):
    for name, official in inspect.getmembers(theirs):
        if name.startswith("_"):
            continue
        assert hasattr(ours, name), f"{ours.__name__} lacks {name}"
        if isinstance(inspect.getattr_static(theirs, name), property):
            official_value = getattr(theirs(endpoint="http://x/api/v2", api_key="k"), name)
            assert getattr(ours(models=[]), name) == official_value
            continue
        mine = getattr(ours, name)
        assert _params(mine) == _params(official), name
        for kind in (inspect.iscoroutinefunction, inspect.isasyncgenfunction,
                     inspect.isgeneratorfunction):  # fmt: skip
            assert kind(mine) == kind(official), (name, kind.__name__)


@pytest.fixture(params=["in-process", "http"])
def twin(request, make_live, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGINE_EDGE_DATA_DIR", str(tmp_path / "local"))
    with contextlib.ExitStack() as stack:
        if request.param == "http":
            server = stack.enter_context(make_live(max_queue=1, delay=0.05))
            client = ImagineEdge(base_url=server.root, api_key="k")
        else:
            from imagine_edge.sdk.engine import Engine

            engine = Engine(fake_cards(fake_models(0.05)), max_queue=1, data_dir=tmp_path)
            stack.callback(engine.close)
            client = ImagineEdge(engine=engine)
        stack.callback(client.close)
        yield client


def test_twin_results(twin):
    with pytest.raises(NoHistoryError):
        twin.get_chat_history()
    assert twin.chat([{"role": "user", "content": "same answer"}]).first_content == "same answer"
    chunks = list(twin.chat_stream([{"role": "user", "content": "a b"}]))
    assert [c.first_content for c in chunks] == ["a", " b"]
    assert twin.get_available_models(ModelType.LLM) == ["echo-llm"]
    assert twin.embeddings(["x", "y"]).data[1].index == 1
    assert twin.reranker("q", ["a", "q"], top_n=1).data[0].index == 1
    assert twin.transcribe(io.BytesIO(b"12345")).text == "5 bytes of audio"
    assert twin.images_generate("x", size="64x64").data[0].b64_json
    assert len(twin.get_chat_history(max_items=5)) == 2
    assert twin.usage().overall
    assert twin.health_check().postgres == "not used"


def test_twin_exceptions(twin):
    with pytest.raises(ModelNotFoundError) as missing:
        twin.chat([{"role": "user", "content": "x"}], model="nope")
    assert missing.value.http_status == 404
    with pytest.raises(InvalidRequestError, match=r"temperature must be in \[0, 2\], got 3"):
        twin.completion("x", temperature=3)
    with pytest.raises(ModelRunError, match="failed on purpose"):
        list(twin.chat_stream([{"role": "user", "content": "a b FAIL MIDWAY"}]))
    stream = twin.chat_stream([{"role": "user", "content": "w " * 200}])
    next(stream)
    with pytest.raises(ImagineAPITooManyRequestsException) as busy:
        twin.chat([{"role": "user", "content": "x"}])
    assert busy.value.http_status == 429
    stream.close()  # stopping the iteration cancels the generation and frees the slot


def test_async_twin(make_live, tmp_path):
    async def run(client: AsyncImagineEdge) -> list[str]:
        async with client:
            answer = await client.chat([{"role": "user", "content": "hello async"}])
            parts = [c.first_content async for c in client.chat_stream(
                [{"role": "user", "content": "p q"}])]  # fmt: skip
            with pytest.raises(ModelNotFoundError):
                await client.embeddings("x", model="missing")
            history = await client.get_chat_history(max_items=2)
            return [answer.first_content, "".join(parts), str(len(history))]

    with make_live() as server:
        remote = asyncio.run(run(AsyncImagineEdge(base_url=server.endpoint)))
    local = asyncio.run(run(AsyncImagineEdge(models=fake_cards())))
    assert remote == local == ["hello async", "p q", "2"]
