"""The forward step of static-shape decoder graph pairs (QNN HTP), over host-owned KV slots.

Owns :class:`StaticDecoder`: a prefill graph of S = P tokens and a decode graph of S = 1, both
with the KV cache of a fixed C positions as inputs and only the S new K/V rows as outputs
(``models/prepare/llm_qnn.py`` documents the protocol). Per call with n valid tokens at positions
p0..p0+n-1 the host:

- pads ``input_ids`` to S, sets ``position_ids`` to p0.. (clipped below C: never negative);
- builds the additive mask ``[1, 1, S, C + S]``: cache columns < p0 are 0, the rest -30 (not
  -inf: the mask shares the 16-bit quantization range of the scores, docs/qnn.md); the new-token
  block
  is causal and constant;
- writes present rows 0..n-1 into the slot at p0..p0+n-1; the next token's logits are row n-1.

Every buffer has a fixed address, so each (graph, slot) pair is bound once with IOBinding and a
step only fills the small host buffers in place, runs, and copies the n new K/V rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from imagine_edge.runtime.kv_cache import DecoderSpec, KVCachePool, KVSlot
from imagine_edge.runtime.shared_buffer_decoder import quiet_run_options
from imagine_edge.sdk.errors import ContextLengthError, ModelRunError

__all__ = ["MASK_VALUE", "StaticDecoder", "static_spec"]

MASK_VALUE: Final = -30.0


def _dims(session: ort.InferenceSession) -> tuple[int, int, int, int, int, int]:
    """(S, layers, kv_heads, C, head_dim, vocab) of a static decoder graph."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    try:
        s = inputs["input_ids"][1]
        _, kv_heads, c, hd = inputs["past_key_values.0.key"]
        vocab = outputs["logits"][-1]
    except (KeyError, ValueError) as exc:
        raise ModelRunError(
            f"not a static decoder graph ({exc}): {sorted(inputs)}", "load"
        ) from exc
    layers = sum(1 for n in inputs if n.startswith("past_key_values.") and n.endswith(".key"))
    dims = (s, layers, kv_heads, c, hd, vocab)
    if not all(isinstance(d, int) and d > 0 for d in dims) or "position_ids" not in inputs:
        raise ModelRunError(f"the graph is not static or lacks position_ids: {dims}", "load")
    return dims


def static_spec(prefill: ort.InferenceSession, decode: ort.InferenceSession) -> DecoderSpec:
    """The KV layout shared by a prefill/decode pair; they must agree on everything but S."""
    p, *rest = _dims(prefill)
    one, *decode_rest = _dims(decode)
    if one != 1 or rest != decode_rest:
        raise ModelRunError(
            f"prefill {[p, *rest]} and decode {[one, *decode_rest]} graphs do not match", "load"
        )
    layers, kv_heads, c, hd, vocab = rest
    return DecoderSpec(
        num_layers=layers,
        num_kv_heads=kv_heads,
        head_size=hd,
        vocab_size=vocab,
        max_length=c,
        prefill_chunk=p,
        has_position_ids=True,
    )


@dataclass(slots=True)
class _Graph:
    """One static graph with its host buffers (fixed addresses, bound once per slot)."""

    session: Any
    role: str
    s: int
    spec: DecoderSpec
    ids: npt.NDArray[np.int64] = field(init=False)
    positions: npt.NDArray[np.int64] = field(init=False)
    mask: npt.NDArray[np.float32] = field(init=False)
    logits: npt.NDArray[np.float32] = field(init=False)
    new_keys: list[npt.NDArray[np.float32]] = field(init=False)
    new_values: list[npt.NDArray[np.float32]] = field(init=False)

    def __post_init__(self) -> None:
        spec, s, c = self.spec, self.s, self.spec.max_length
        self.ids = np.zeros((1, s), np.int64)
        self.positions = np.zeros((1, s), np.int64)
        self.mask = np.full((1, 1, s, c + s), MASK_VALUE, np.float32)
        # Among the new tokens, token i sees tokens 0..i; this block never changes.
        self.mask[0, 0, :, c:][np.tril(np.ones((s, s), dtype=bool))] = 0.0
        self.logits = np.zeros((1, s, spec.vocab_size), np.float32)
        shape = (1, spec.num_kv_heads, s, spec.head_size)
        self.new_keys = [np.zeros(shape, np.float32) for _ in range(spec.num_layers)]
        self.new_values = [np.zeros(shape, np.float32) for _ in range(spec.num_layers)]

    def binding(self, slot: KVSlot) -> Any:
        """The slot's binding of this graph; it lives and dies with the slot's buffers."""
        if slot.binding is None:
            slot.binding = {}
        if self.role in slot.binding:
            return slot.binding[self.role]
        b = self.session.io_binding()
        f32, i64 = np.float32, np.int64

        def bind_in(name: str, a: npt.NDArray[Any], dtype: Any) -> None:
            b.bind_input(name, "cpu", 0, dtype, list(a.shape), a.ctypes.data)

        bind_in("input_ids", self.ids, i64)
        bind_in("position_ids", self.positions, i64)
        bind_in("attention_mask", self.mask, f32)
        b.bind_output("logits", "cpu", 0, f32, list(self.logits.shape), self.logits.ctypes.data)
        for i in range(self.spec.num_layers):
            bind_in(f"past_key_values.{i}.key", slot.keys[i], f32)
            bind_in(f"past_key_values.{i}.value", slot.values[i], f32)
            for kind, a in (("key", self.new_keys[i]), ("value", self.new_values[i])):
                b.bind_output(f"present.{i}.{kind}", "cpu", 0, f32, list(a.shape), a.ctypes.data)
        slot.binding[self.role] = b
        return b


class StaticDecoder:
    """Runs a prefill/decode graph pair over the slots of a :class:`KVCachePool`."""

    def __init__(
        self,
        prefill: ort.InferenceSession,
        decode: ort.InferenceSession,
        *,
        num_slots: int = 2,
        provider: str = "QNNExecutionProvider",
        pad_id: int = 0,
    ) -> None:
        self._spec = static_spec(prefill, decode)
        self._pool = KVCachePool(self._spec, num_slots)
        self._provider = provider
        self._pad_id = pad_id
        self._prefill = _Graph(prefill, "prefill", self._spec.prefill_chunk, self._spec)
        self._decode = _Graph(decode, "decode", 1, self._spec)
        self._run_options = quiet_run_options()

    @property
    def spec(self) -> DecoderSpec:
        return self._spec

    @property
    def pool(self) -> KVCachePool:
        return self._pool

    @property
    def provider(self) -> str:
        return self._provider

    def forward(self, slot: KVSlot, count: int) -> npt.NDArray[np.float32]:
        p0, c = slot.length, self._spec.max_length
        graph = self._decode if count == 1 else self._prefill
        if not 1 <= count <= graph.s or p0 + count > c:
            raise ContextLengthError(
                f"cannot run {count} tokens after {p0}: the graphs take 1..{graph.s} tokens a "
                f"call and the KV cache holds {c} positions"
            )
        graph.ids[0, :count] = slot.tokens[p0 : p0 + count]
        graph.ids[0, count:] = self._pad_id
        np.minimum(np.arange(p0, p0 + graph.s), c - 1, out=graph.positions[0])
        graph.mask[0, 0, :, :p0] = 0.0
        graph.mask[0, 0, :, p0:c] = MASK_VALUE
        try:
            graph.session.run_with_iobinding(graph.binding(slot), self._run_options)
        except Exception as exc:
            raise ModelRunError(f"decoder step failed at position {p0}: {exc}") from exc
        for layer in range(self._spec.num_layers):
            slot.write(
                layer,
                p0,
                graph.new_keys[layer][:, :, :count],
                graph.new_values[layer][:, :, :count],
            )
        slot.length = p0 + count
        row: npt.NDArray[np.float32] = graph.logits[0, count - 1]
        return row

    def resident_bytes(self) -> int:
        host = sum(
            a.nbytes
            for g in (self._prefill, self._decode)
            for a in (g.mask, g.logits, *g.new_keys, *g.new_values)
        )
        return self._pool.resident_bytes() + host

    def close(self) -> None:
        self._pool.clear()
        for graph in (self._prefill, self._decode):
            graph.session = None
