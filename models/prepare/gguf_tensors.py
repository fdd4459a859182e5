"""A GGUF file's projection weights as :class:`Grid` objects under transformers' names.

Architectures: ``llama`` (SmolLM2, Llama 3, TinyLlama), ``qwen2``, ``qwen3`` and ``gemma3``;
any other ``general.architecture`` is refused by name. llama.cpp's converter permutes the rows of
a Llama model's q/k projections (to interleave rotary halves) and transformers undoes it when it
loads the file; the same row permutation is applied here, so blocks (which run along K) move
whole. The other three architectures are stored unpermuted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from imagine_edge.models.prepare.gguf_blocks import Grid, decode

__all__ = ["ARCHITECTURES", "UnsupportedArchitecture", "architecture", "load_grids"]

ARCHITECTURES: Final = ("llama", "qwen2", "qwen3", "gemma3")
_PROJECTIONS: Final = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}  # fmt: skip
_LAYER: Final = re.compile(r"^blk\.(\d+)\.(\w+)\.weight$")


class UnsupportedArchitecture(ValueError):
    """A GGUF file of an architecture this converter does not handle."""


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def architecture(reader: Any) -> str:
    """The file's ``general.architecture``, refused plainly when not supported."""
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise UnsupportedArchitecture(
            f"GGUF architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})"
        )
    return str(arch)


def _hf_name(name: str) -> str | None:
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output.weight":
        return "lm_head.weight"
    match = _LAYER.match(name)
    if match is None or match.group(2) not in _PROJECTIONS:
        return None
    return f"model.layers.{match.group(1)}.{_PROJECTIONS[match.group(2)]}.weight"


def _llama_rows(rows: int, heads: int) -> npt.NDArray[np.intp]:
    """transformers' reverse of llama.cpp's q/k permutation, as a row index."""
    index = np.arange(rows).reshape(heads, rows // heads // 2, 2)
    return np.asarray(index.swapaxes(2, 1).reshape(-1), np.intp)


def load_grids(path: Path) -> tuple[str, Mapping[str, Grid]]:
    """(architecture, {transformers weight name: grid}) of the 2-D projection weights."""
    import gguf

    reader = gguf.GGUFReader(path)
    arch = architecture(reader)
    heads = int(_field(reader, f"{arch}.attention.head_count"))
    kv_heads = int(_field(reader, f"{arch}.attention.head_count_kv") or heads)
    grids: dict[str, Grid] = {}
    for tensor in reader.tensors:
        hf = _hf_name(tensor.name)
        if hf is None or len(tensor.shape) != 2:
            continue
        k, rows = (int(n) for n in tensor.shape)
        grid = decode(tensor.data, tensor.tensor_type.name, rows, k)
        if arch == "llama" and (".attn_q." in tensor.name or ".attn_k." in tensor.name):
            grid = grid.rows(_llama_rows(rows, heads if ".attn_q." in tensor.name else kv_heads))
        grids[hf] = grid
    return arch, grids
