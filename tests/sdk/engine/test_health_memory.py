"""Health's account of the process's memory, checked against the process's proportional set size
as this test reads it itself from /proc/self/smaps_rollup, with an LLM and an embedding model
loaded (#19: the named parts cover the whole within 15%)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imagine_edge.models.llm import SMOLLM2
from imagine_edge.models.registry import model_cards
from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.types import ChatCompletionRequest, ChatMessage, EmbeddingRequest

pytestmark = pytest.mark.model
EMBEDDING = "all-minilm-l6-v2"
ROLLUP = Path("/proc/self/smaps_rollup")
MIB = 2**20


def _pss_bytes() -> int:
    """Pss of this process, read here and not through the code under test."""
    for line in ROLLUP.read_text().splitlines():
        name, _, rest = line.partition(":")
        if name == "Pss":
            value, unit = rest.split()
            assert unit == "kB"
            return int(value) * 1024
    raise AssertionError(f"no Pss line in {ROLLUP}")


def _health_parts(text: str) -> tuple[float, dict[str, float]]:
    match = re.search(r"process memory ([\d.]+) MiB \(proportional\): (.*)$", text)
    assert match, text
    parts = {
        name.strip(): float(value)
        for name, value in re.findall(r"([a-zA-Z ,]+?) ([\d.]+)(?:,|$)", match.group(2))
    }
    return float(match.group(1)), parts


@pytest.mark.skipif(not ROLLUP.is_file(), reason="reads /proc/self/smaps_rollup")
def test_health_names_the_parts_of_the_whole_process_with_two_models(tmp_path: Path) -> None:
    cards = [c for c in model_cards() if c.name in (EMBEDDING, SMOLLM2)]
    if len(cards) != 2:
        pytest.skip(f"{EMBEDDING} and {SMOLLM2} are not both in the catalog")
    with Engine(cards, data_dir=tmp_path) as engine:
        out = engine.embeddings(EmbeddingRequest(model=EMBEDDING, input=["a", "b"])).result()
        assert len(out.data) == 2
        chat = ChatCompletionRequest(
            messages=[ChatMessage(role="user", content="Name a colour.")],
            model=SMOLLM2,
            stream=False,
            max_tokens=8,
        )
        assert engine.chat(chat).result().usage.completion_tokens > 0
        before = _pss_bytes()
        total, parts = _health_parts(engine.health().models)
        after = _pss_bytes()
    pss = (before + after) / 2 / MIB
    print(f"health {total:.1f} MiB, Pss read here {pss:.1f} MiB, parts {parts}")
    assert set(parts) == {
        "models",
        "runtime libraries",
        "arenas, tensors and caches",
        "Python at start",
        "the rest",
    }
    # Both models' sessions and weights: SmolLM2's int4 graph alone is ~100 MiB.
    assert parts["models"] > 60, parts
    assert abs(total - pss) <= 0.05 * pss, (total, pss)
    named = sum(v for k, v in parts.items() if k != "the rest")
    assert abs(named - pss) <= 0.15 * pss, (parts, pss)
