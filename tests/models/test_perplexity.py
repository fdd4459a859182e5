"""Quality: the prepared CPU graph's perplexity on English prose is within 3% of the float model.

The float reference is the GGUF's weights dequantized to float32 and run in torch (the store's
``hf/`` folder); the CPU graph runs the same ~340 tokens one at a time through its KV cache.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from imagine_edge.models.store import Manifest

from .perplexity import float_logits, perplexity

pytestmark = pytest.mark.model

PROSE = """\
The old lighthouse stood at the end of a narrow spit of land, where the river met the sea. For \
more than a century its keepers had climbed the spiral stairs every evening to light the lamp, \
and every morning they had climbed them again to trim the wick and polish the glass. The work was \
simple, but it never ended, and the families who lived there learned to measure their lives by \
the turning of the beam.

In the spring, the fishing boats returned from the south, and the harbour filled with the sound \
of gulls and engines. Children ran along the sea wall, shouting to their fathers, while their \
mothers carried baskets of bread and cheese down to the quay. The market opened early on \
Saturdays, and by nine o'clock the square was crowded with people buying vegetables, fresh fish \
and flowers for the week ahead.

Most visitors came for a day and left before dark. They walked along the beach, ate lunch in one \
of the small cafés near the church, and took photographs of the painted houses that lined the \
main street. A few stayed longer, renting rooms above the bakery or in the guest house by the \
bridge. Those who stayed often said that the town seemed to move at a slower pace, as if time \
itself had decided to rest there for a while.

When the lighthouse was finally automated, the last keeper moved into a cottage on the hill. He \
kept a small garden, grew tomatoes and beans, and spent his afternoons reading in a chair by the \
window. From there he could still see the light sweeping across the water each night, and he \
said that it felt like watching an old friend who no longer needed his help.
"""


def _graph_logits(manifest: Manifest, ids: list[int]) -> npt.NDArray[np.float32]:
    """Every position's logits from the CPU graph, one token per call (its LM head computes the
    last position only), each call's present K/V fed back as the next call's past."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    path = manifest.variant("cpu").graphs["decoder"].path
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    arch = manifest.architecture
    assert arch is not None
    past_names = [i.name for i in session.get_inputs() if i.name.startswith("past_")]
    present_names = [n.replace("past_key_values", "present") for n in past_names]
    past = {n: np.zeros((1, arch.num_kv_heads, 0, arch.head_dim), np.float32) for n in past_names}
    rows = []
    for i, token in enumerate(ids):
        feed = {"input_ids": np.array([[token]], np.int64)}
        feed["attention_mask"] = np.ones((1, i + 1), np.int64)
        logits, *present = session.run(["logits", *present_names], feed | past)
        rows.append(logits[0, -1])
        past = dict(zip(past_names, present, strict=True))
    return np.asarray(rows, np.float32)


def test_cpu_graph_perplexity_is_within_3_percent_of_float(smollm2_manifest: Manifest) -> None:
    ids = Tokenizer.from_file(str(smollm2_manifest.tokenizer)).encode(PROSE).ids
    assert 300 <= len(ids) <= 400
    reference = perplexity(float_logits(smollm2_manifest, ids), ids)
    graph = perplexity(_graph_logits(smollm2_manifest, ids), ids)
    # A real model on ordinary prose: far from uniform (49152) and from memorised (1).
    assert 5.0 < reference < 60.0
    assert abs(graph - reference) / reference <= 0.03, (graph, reference)
