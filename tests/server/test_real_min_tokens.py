"""min_tokens on the real SmolLM2: the reply is at least that long, through the model's
generation loop, the Imagine route's body (an extension key) and /v1's (vLLM's extension)."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from imagine_edge.models.catalog import lookup
from imagine_edge.models.llm import SMOLLM2, ChatModel
from imagine_edge.models.registry import model_cards
from imagine_edge.runtime.sampling import GenerationPlan
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.types import ChatCompletionRequest, ChatMessage, FinishReason
from imagine_edge.server.app import create_app

pytestmark = pytest.mark.model
# Greedy SmolLM2 answers this in under 40 tokens (19 here), then ends its turn.
SHORT = [{"role": "user", "content": "Reply with the single word: yes."}]


def _request(**params: object) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        messages=[ChatMessage(**m) for m in SHORT],
        model=SMOLLM2,
        stream=False,
        temperature=0.0,
        **params,
    )


def _completion(model: ChatModel, request: ChatCompletionRequest) -> tuple[int, FinishReason]:
    chunks = list(model.generate_chat(request, threading.Event()))
    last = chunks[-1]
    assert last.stats is not None
    assert last.finish_reason is not None
    return last.stats.completion_tokens, last.finish_reason


@pytest.fixture(scope="module")
def model() -> ChatModel:
    manifest = lookup(SMOLLM2).manifest
    if manifest is None:
        pytest.skip(f"{SMOLLM2} is not prepared: run `make prepare`")
    m = ChatModel(manifest, max_length=512)
    yield m
    m.close()


def test_the_reply_has_at_least_min_tokens(model: ChatModel) -> None:
    natural, reason = _completion(model, _request(max_tokens=64))
    assert reason == FinishReason.stop  # it ends its turn on its own...
    assert natural < 40  # well inside max_tokens
    wanted = natural + 12
    longer, _ = _completion(model, _request(max_tokens=64, min_tokens=wanted))
    assert longer >= wanted  # ...but not before min_tokens
    # At max_tokens exactly, the end of turn is masked for the whole reply.
    full, reason = _completion(model, _request(max_tokens=wanted, min_tokens=wanted))
    assert (full, reason) == (wanted, FinishReason.length)
    # The plan carries it to the kernels' config.
    assert GenerationPlan.from_params(_request(min_tokens=3)).sampling.min_tokens == 3


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve):
    card = next(c for c in model_cards() if c.name == SMOLLM2)
    engine = Engine([card], data_dir=tmp_path_factory.mktemp("min-tokens"))
    try:
        with serve(create_app(engine)) as root:
            yield root
    finally:
        engine.close()


def test_both_route_families_pass_min_tokens_through(server: str) -> None:
    body = {
        "model": SMOLLM2,
        "messages": SHORT,
        "stream": False,
        "temperature": 0.0,
        "max_tokens": 64,
    }
    imagine = httpx.post(f"{server}/api/v2/chat/completions", json=body, timeout=120).json()
    natural = imagine["usage"]["completion_tokens"]
    assert natural < 40  # well inside max_tokens
    wanted = natural + 12
    imagine = httpx.post(
        f"{server}/api/v2/chat/completions", json={**body, "min_tokens": wanted}, timeout=120
    ).json()
    assert imagine["usage"]["completion_tokens"] >= wanted

    client = openai.OpenAI(base_url=server + "/v1", api_key="k", max_retries=0)
    answer = client.chat.completions.create(
        model=SMOLLM2,
        messages=SHORT,
        temperature=0.0,
        max_tokens=64,
        extra_body={"min_tokens": wanted},
    )
    assert answer.usage is not None
    assert answer.usage.completion_tokens >= wanted


@pytest.mark.parametrize(
    ("extra", "message"),
    [({"min_tokens": 65}, "must not exceed max_tokens"), ({"min_tokens": -1}, "min_tokens")],
)
def test_out_of_range_min_tokens_is_a_4xx_on_both_families(
    server: str, extra: dict[str, int], message: str
) -> None:
    body = {"model": SMOLLM2, "messages": SHORT, "stream": False, "max_tokens": 64, **extra}
    for path in ("/api/v2/chat/completions", "/v1/chat/completions"):
        answer = httpx.post(server + path, json=body, timeout=60)
        assert answer.status_code == 422, answer.text  # the server's status for a bad value
        assert message in answer.text
