"""Memory from one large request comes back: after a 1024x1024 image on the shipped
tiny-sd-random model (untrained weights, the real architecture), the process's proportional
memory is within 10% of what it was before.

Today's failure: onnxruntime's CPU arena kept the UNet's and VAE's working memory (2.2 GiB after
one image), and glibc kept what was freed in its heap.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imagine_edge.models.registry import model_cards
from imagine_edge.runtime.memory import process_resident_bytes, release_free_memory
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.types import ImageRequest

MODEL = "tiny-sd-random"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    cards = [c for c in model_cards() if c.name == MODEL]
    if not cards:
        pytest.skip(f"{MODEL} is not in the catalog")
    engine = Engine(cards, data_dir=tmp_path_factory.mktemp("memory"))
    engine.load([MODEL])
    yield engine
    engine.close()


def _image(engine: Engine, size: str) -> None:
    request = ImageRequest(
        prompt="a lighthouse", model=MODEL, size=size, num_inference_steps=2, stream=False
    )
    response = engine.images(request).result()
    assert len(response.data) == 1
    assert response.data[0].b64_json


def test_memory_returns_after_a_1024_image(engine: Engine) -> None:
    _image(engine, "256x256")  # a small request first: what a warm server holds
    release_free_memory()
    before = process_resident_bytes()
    if before is None:
        pytest.skip("no /proc: the process's memory cannot be read")
    _image(engine, "1024x1024")
    after = process_resident_bytes()
    assert after is not None
    mib = 2**20
    assert after <= before * 1.10, (
        f"{after / mib:.0f} MiB after the image, {before / mib:.0f} MiB before"
    )
