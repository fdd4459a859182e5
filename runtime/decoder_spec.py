"""What the runtime knows about a decoder graph's KV cache and logits (:class:`DecoderSpec`), read
from its session, and the lazily mapped zero buffers the KV slots are made of (:func:`lazy_zeros`).
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from imagine_edge.runtime.ort_names import numpy_dtype
from imagine_edge.sdk.errors import ModelRunError

__all__ = ["DecoderSpec", "lazy_zeros"]

_PAST_KEY: Final = re.compile(r"^past_key_values\.(\d+)\.key$")


@dataclass(frozen=True, slots=True)
class DecoderSpec:
    """The shape of a decoder graph's KV cache and logits, and how we run it."""

    num_layers: int
    num_kv_heads: int
    head_size: int
    vocab_size: int
    # Positions a slot holds: the model's context, or a smaller configured limit.
    max_length: int
    # Prompt tokens per forward call; static graphs need exactly their prefill length.
    prefill_chunk: int
    # The graph computes logits for the last position only (pruned LM head).
    last_logits_only: bool = False
    # The graph takes explicit position ids (no rotary embedding inside attention).
    has_position_ids: bool = False
    kv_dtype: type[np.floating[Any]] = np.float32

    @classmethod
    def from_session(
        cls,
        session: ort.InferenceSession,
        *,
        max_length: int,
        prefill_chunk: int = 128,
        head_size: int | None = None,
    ) -> DecoderSpec:
        """Read the layout of a builder-style decoder from its session's inputs and outputs.

        ``head_size`` is needed when the graph leaves the last K/V dimension symbolic.
        """
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        layers = sorted(int(m.group(1)) for n in inputs if (m := _PAST_KEY.match(n)))
        if not layers or layers != list(range(len(layers))) or "logits" not in outputs:
            raise ModelRunError(
                "not a decoder graph: expected inputs past_key_values.0..N.key/value and a "
                f"'logits' output, got inputs {sorted(inputs)}",
                phase="load",
            )
        past = inputs["past_key_values.0.key"]
        kv_heads, size = past.shape[1], past.shape[3]
        if not isinstance(size, int):
            if head_size is None:
                raise ModelRunError("the graph's head size is symbolic: pass head_size", "load")
            size = head_size
        elif head_size is not None and head_size != size:
            raise ModelRunError(f"head_size {head_size} != the graph's {size}", phase="load")
        logits_shape = outputs["logits"].shape
        vocab = logits_shape[-1]
        if not isinstance(kv_heads, int) or not isinstance(vocab, int):
            raise ModelRunError(f"symbolic KV heads or vocabulary in {past.shape}", "load")
        return cls(
            num_layers=len(layers),
            num_kv_heads=kv_heads,
            head_size=size,
            vocab_size=vocab,
            max_length=max_length,
            prefill_chunk=prefill_chunk,
            last_logits_only=logits_shape[1] == 1,
            has_position_ids="position_ids" in inputs,
            # The decoders bind float32 or float16 K/V; any other type is read as float32.
            kv_dtype=np.float16 if numpy_dtype(past.type) is np.float16 else np.float32,
        )

    @property
    def slot_bytes(self) -> int:
        """Bytes of one slot's K/V buffers at full length."""
        per_layer = 2 * self.num_kv_heads * self.max_length * self.head_size
        return self.num_layers * per_layer * np.dtype(self.kv_dtype).itemsize


def lazy_zeros(shape: tuple[int, ...], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """A zero array on its own anonymous memory map: its pages cost memory once written."""
    dt = np.dtype(dtype)
    size = int(np.prod(shape)) * dt.itemsize
    if size == 0:
        return np.zeros(shape, dt)
    return np.frombuffer(mmap.mmap(-1, size), dt).reshape(shape)
