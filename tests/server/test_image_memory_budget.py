"""The image memory budget through the server: an image over it is a 422 naming the budget,
on the real tiny-sd-random pipeline, with the budget set from the environment."""

from __future__ import annotations

import httpx
import pytest

from imagine_edge.models.registry import model_cards
from imagine_edge.models.text_to_image.memory import BUDGET_ENV
from imagine_edge.sdk.engine import Engine
from imagine_edge.server.app import create_app

pytestmark = pytest.mark.model
MODEL = "tiny-sd-random"


@pytest.fixture(scope="module")
def server(tmp_path_factory, serve):  # type: ignore[no-untyped-def]
    cards = [c for c in model_cards() if c.name == MODEL]
    with pytest.MonkeyPatch.context() as env:
        env.setenv(BUDGET_ENV, "1G")  # read when the model loads
        engine = Engine(cards, data_dir=tmp_path_factory.mktemp("budget"))
        try:
            engine.load()
            with serve(create_app(engine)) as root:
                yield root
        finally:
            engine.close()


def _images(root: str, size: str, n: int = 1) -> httpx.Response:
    body = {"prompt": "a lighthouse", "model": MODEL, "size": size, "n": n,
            "num_inference_steps": 1, "stream": False}  # fmt: skip
    return httpx.post(f"{root}/api/v2/images/generations", json=body, timeout=120)


def test_an_image_over_the_budget_is_a_422_naming_it(server: str) -> None:
    refused = _images(server, "1024x1024", n=4)
    assert refused.status_code == 422, refused.text
    assert "budget of 1024 MiB" in refused.text
    assert BUDGET_ENV in refused.text
    assert _images(server, "256x256").status_code == 200
