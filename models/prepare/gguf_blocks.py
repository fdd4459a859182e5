"""GGUF block formats unpacked into the integer grids onnxruntime's quantized operators read.

Every supported block type is decoded from its raw bytes (layouts as in the ``gguf`` package's
``gguf.quants`` and llama.cpp's ``ggml-quants.c``) into a :class:`Grid`: integer codes ``q``,
one float32 ``scale``, an integer ``zero`` and an optional float32 ``offset`` per block of
``block`` weights along K, such that the weight is ``scale * (q - zero) + offset``, computed in
float32 in the same order as the ``gguf`` dequantizer computes it, so the values agree bit for bit.
That is exactly what MatMulNBits (``bits``-bit codes, per-block scales and zero points) and
GatherBlockQuantized compute; the offset, where a format has one, becomes a small correction
``blocksum(x) @ offsets`` next to the MatMulNBits (see ``gguf_exact``).

======  ==============================  ============================================  =====
type    GGUF block                      onnxruntime encoding                          exact
======  ==============================  ============================================  =====
F32     float32                         float MatMul (no quantization)                yes
F16     float16                         float MatMul, values widened to float32       yes
BF16    bfloat16                        float MatMul, values widened to float32       yes
Q8_0    32: d*q, q in -127..127         8-bit, block 32, zero point 128               yes
Q4_0    32: d*(q-8), q in 0..15         4-bit, block 32, zero point 8                 yes
Q4_1    32: d*q + m, q in 0..15         4-bit, block 32, zero point 0, offset m       yes
Q5_0    32: d*(q-16), q in 0..31        8-bit, block 32, zero point 128 (q+112)       yes
Q5_1    32: d*q + m, q in 0..31         8-bit, block 32, zero point 0, offset m       yes
Q4_K    256 = 8x32: (d*s)*q - dmin*m    4-bit, block 32, zero point 0, offset -dmin*m yes
Q5_K    256 = 8x32: (d*s)*q - dmin*m    8-bit, block 32, zero point 0, offset -dmin*m yes
Q6_K    256 = 16x16: (d*s)*(q-32)       8-bit, block 16, zero point 128 (q+96)        yes
======  ==============================  ============================================  =====

(``s`` and ``m`` are the K-quants' 6-bit or 8-bit sub-block scales and mins; their products with
the float16 super-block scales are exact in float32.) Other types (Q2_K, Q3_K, the IQ and TQ
families, MXFP4) are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["SUPPORTED", "Grid", "UnsupportedBlockType", "decode"]

_F32 = npt.NDArray[np.float32]
_U8 = npt.NDArray[np.uint8]
QK_K: Final = 256


class UnsupportedBlockType(ValueError):
    """A GGUF tensor type this converter cannot re-encode."""


@dataclass(frozen=True, slots=True)
class Grid:
    """A [rows, K] weight as ``scale * (q - zero) + offset`` per block of ``block`` along K.

    ``q`` is uint8 [rows, K] (codes below ``2**bits``); ``scale`` float32 [rows, K/block];
    ``zero`` an integer for all blocks; ``offset`` float32 [rows, K/block] or None. A float
    tensor (F32/F16/BF16) has ``bits == 0`` and its values in ``values`` instead.
    """

    bits: int
    block: int
    q: _U8 | None
    scale: _F32 | None
    zero: int
    offset: _F32 | None
    values: _F32 | None = None

    @property
    def shape(self) -> tuple[int, int]:
        data = self.values if self.values is not None else self.q
        assert data is not None
        return int(data.shape[0]), int(data.shape[1])

    def dequantize(self) -> _F32:
        """The float32 weights, computed as the ``gguf`` package computes them."""
        if self.values is not None:
            return self.values
        assert self.q is not None
        assert self.scale is not None
        rows, k = self.q.shape
        q = (self.q.astype(np.int16) - self.zero).astype(np.float32)
        w = self.scale.reshape(rows, -1, 1) * q.reshape(rows, k // self.block, self.block)
        if self.offset is not None:
            w = w + self.offset.reshape(rows, -1, 1)
        return np.asarray(w.reshape(rows, k), np.float32)

    def rows(self, index: npt.NDArray[np.intp]) -> Grid:
        """The same grid with its rows reordered (whole rows move, so blocks stay intact)."""

        def take(a: npt.NDArray[np.generic] | None) -> npt.NDArray[np.generic] | None:
            return None if a is None else np.ascontiguousarray(a[index])

        return Grid(
            self.bits, self.block, take(self.q), take(self.scale), self.zero,  # type: ignore[arg-type]
            take(self.offset), take(self.values),  # type: ignore[arg-type]
        )  # fmt: skip


def _f16(raw: _U8) -> _F32:
    return np.asarray(np.ascontiguousarray(raw).view(np.float16).astype(np.float32), np.float32)


def _nibbles(qs: _U8, half: int) -> _U8:
    """Low nibbles give the first ``half`` codes of a group, high nibbles the next ``half``."""
    n = qs.shape[0]
    out = qs.reshape(n, -1, 1, half) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    return np.asarray((out & 0x0F).reshape(n, -1), np.uint8)


def _high_bits(qh: _U8, count: int) -> _U8:
    """The 32 fifth bits of a Q5_0/Q5_1 block, little-endian in a uint32."""
    bits = np.ascontiguousarray(qh).view(np.uint32).reshape(-1, 1) >> np.arange(
        count, dtype=np.uint32
    )
    return np.asarray(bits & 1, np.uint8)


def _k_scale_min(scales: _U8) -> tuple[_U8, _U8]:
    """The eight 6-bit scales and mins packed in the 12 bytes of a Q4_K/Q5_K super-block."""
    n = scales.shape[0]
    s = scales.reshape(n, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return np.asarray(sc, np.uint8), np.asarray(mn, np.uint8)


def _blocks(raw: _U8, rows: int, k: int, block: int, nbytes: int) -> _U8:
    if raw.dtype != np.uint8 or raw.size != rows * (k // block) * nbytes:
        raise ValueError(f"{raw.size} bytes do not hold a [{rows}, {k}] tensor of this type")
    return np.ascontiguousarray(raw).reshape(rows * (k // block), nbytes)


def _q8_0(raw: _U8, rows: int, k: int) -> Grid:
    b = _blocks(raw, rows, k, 32, 34)
    q = b[:, 2:].view(np.int8).astype(np.int16) + 128
    return Grid(
        8, 32, q.astype(np.uint8).reshape(rows, k), _f16(b[:, :2]).reshape(rows, -1), 128, None
    )


def _q4_0(raw: _U8, rows: int, k: int) -> Grid:
    b = _blocks(raw, rows, k, 32, 18)
    return Grid(
        4, 32, _nibbles(b[:, 2:], 16).reshape(rows, k), _f16(b[:, :2]).reshape(rows, -1), 8, None
    )


def _q4_1(raw: _U8, rows: int, k: int) -> Grid:
    b = _blocks(raw, rows, k, 32, 20)
    d, m = _f16(b[:, :2]).reshape(rows, -1), _f16(b[:, 2:4]).reshape(rows, -1)
    return Grid(4, 32, _nibbles(b[:, 4:], 16).reshape(rows, k), d, 0, m)


def _q5(b: _U8, at: int) -> _U8:
    low = _nibbles(b[:, at + 4 :], 16)
    return np.asarray(low | (_high_bits(b[:, at : at + 4], 32) << 4), np.uint8)


def _q5_0(raw: _U8, rows: int, k: int) -> Grid:
    b = _blocks(raw, rows, k, 32, 22)
    q = _q5(b, 2).astype(np.int16) + 112  # q - 16 + 128
    return Grid(
        8, 32, q.astype(np.uint8).reshape(rows, k), _f16(b[:, :2]).reshape(rows, -1), 128, None
    )


def _q5_1(raw: _U8, rows: int, k: int) -> Grid:
    b = _blocks(raw, rows, k, 32, 24)
    d, m = _f16(b[:, :2]).reshape(rows, -1), _f16(b[:, 2:4]).reshape(rows, -1)
    return Grid(8, 32, _q5(b, 4).reshape(rows, k), d, 0, m)


def _q45_k(raw: _U8, rows: int, k: int, five: bool) -> Grid:
    b = _blocks(raw, rows, k, QK_K, 176 if five else 144)
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
    sc, mn = _k_scale_min(b[:, 4:16])
    scale = d * sc.astype(np.float32)  # [n, 8]: exact (11-bit times 6-bit)
    offset = -(dmin * mn.astype(np.float32))
    if five:
        qh, qs = b[:, 16:48], b[:, 48:]
        low = _nibbles(qs, 32).reshape(n, 8, 32)
        high = (qh.reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1
        q: npt.NDArray[np.generic] = low | (high << 4)
    else:
        q = _nibbles(b[:, 16:], 32)
    return Grid(
        8 if five else 4, 32, np.asarray(q, np.uint8).reshape(rows, k),
        scale.reshape(rows, -1), 0, offset.reshape(rows, -1),
    )  # fmt: skip


def _q6_k(raw: _U8, rows: int, k: int) -> Grid:
    b = _blocks(raw, rows, k, QK_K, 210)
    n = b.shape[0]
    ql, qh = b[:, :128], b[:, 128:192]
    sc = b[:, 192:208].view(np.int8).astype(np.float32)
    d = _f16(b[:, 208:210])
    low = _nibbles(ql, 64).reshape(n, -1, 32)  # [n, 8, 32]: 128 codes per half super-block
    high = (qh.reshape(n, -1, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & 3
    q = low | (high.reshape(n, -1, 32) << 4)
    q = q.astype(np.int16) + 96  # q - 32 + 128
    return Grid(8, 16, q.astype(np.uint8).reshape(rows, k), (d * sc).reshape(rows, -1), 128, None)


def _float(raw: npt.NDArray[np.generic], rows: int, k: int, name: str) -> Grid:
    if name == "BF16":
        wide = np.ascontiguousarray(raw).view(np.uint16).astype(np.uint32) << 16
        values = wide.view(np.float32)
    else:
        values = np.ascontiguousarray(raw).view(np.float16 if name == "F16" else np.float32)
    values = np.asarray(values.astype(np.float32).reshape(rows, k), np.float32)
    return Grid(0, k, None, None, 0, None, values)


_DECODERS: Final = {
    "Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1,
    "Q4_K": lambda r, n, k: _q45_k(r, n, k, five=False),
    "Q5_K": lambda r, n, k: _q45_k(r, n, k, five=True),
    "Q6_K": _q6_k,
}  # fmt: skip
SUPPORTED: Final = ("F32", "F16", "BF16", *_DECODERS)


def decode(raw: npt.NDArray[np.generic], type_name: str, rows: int, k: int) -> Grid:
    """The grid of a [rows, K] tensor of GGUF type ``type_name`` from its stored data."""
    if type_name in ("F32", "F16", "BF16"):
        return _float(raw, rows, k, type_name)
    decoder = _DECODERS.get(type_name)
    if decoder is None:
        raise UnsupportedBlockType(
            f"GGUF block type {type_name} is not supported (supported: {', '.join(SUPPORTED)})"
        )
    grid: Grid = decoder(np.asarray(raw).view(np.uint8), rows, k)
    return grid
