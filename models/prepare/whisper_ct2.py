"""CTranslate2 Whisper folders: the ``model.bin`` reader and the mapping of its variables onto
``transformers.WhisperForConditionalGeneration``'s state dict (the recipe is ``whisper.py``).

``model.bin`` (binary version 6): ``u32 version, str name, u32 revision, u32 n``; ``n`` times
``str name, u8 rank, u32 dims[rank], u8 dtype, u32 nbytes, bytes``; then ``u32 n_aliases`` and
pairs of ``str alias, str target``. A ``str`` is ``u16 length`` (with its NUL) then the UTF-8
bytes and a NUL. dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16; int8
weights come with a ``<name>_scale`` per row (float = int8 / scale).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["Ct2Model", "read_ct2", "whisper_state_dict"]

_DTYPES: Final[dict[int, Any]] = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
    5: np.uint16,  # bfloat16, widened to float32 by shifting into the high half
}


@dataclass(frozen=True, slots=True)
class Ct2Model:
    """The variables of a CTranslate2 ``model.bin``, aliases resolved, weights as float32."""

    name: str
    revision: int
    variables: dict[str, npt.NDArray[Any]]


def read_ct2(path: Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (see the module docstring for the layout)."""
    buf = memoryview(path.read_bytes())
    off = 0

    def unpack(fmt: str) -> int:
        nonlocal off
        (value,) = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize(fmt)
        return int(value)

    def string() -> str:
        nonlocal off
        n = unpack("H")
        text = bytes(buf[off : off + n - 1]).decode("utf-8")
        off += n
        return text

    version = unpack("I")
    if version not in (5, 6):
        raise ValueError(f"{path}: CTranslate2 binary version {version} unsupported (need 5 or 6)")
    name, revision = string(), unpack("I")
    raw: dict[str, npt.NDArray[Any]] = {}
    for _ in range(unpack("I")):
        var = string()
        shape = tuple(unpack("I") for _ in range(unpack("B")))
        dtype_id, nbytes = unpack("B"), unpack("I")
        if dtype_id not in _DTYPES:
            raise ValueError(f"{path}: variable {var!r} has unknown dtype id {dtype_id}")
        data = np.frombuffer(buf[off : off + nbytes], dtype=_DTYPES[dtype_id]).reshape(shape)
        off += nbytes
        raw[var] = (data.astype(np.uint32) << 16).view(np.float32) if dtype_id == 5 else data
    aliases = [(string(), string()) for _ in range(unpack("I"))]
    variables = _dequantized(raw)
    for alias, target in aliases:  # after conversion, so an alias shares its target's array
        variables[alias] = variables[target]
    return Ct2Model(name, revision, variables)


def _dequantized(raw: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    out: dict[str, npt.NDArray[Any]] = {}
    for name, value in raw.items():
        if name.endswith("_scale"):
            continue
        scale = raw.get(name + "_scale")
        if scale is not None and value.dtype == np.int8:
            # CTranslate2 int8: one scale per output row, float = int8 / scale.
            value = value.astype(np.float32) / scale.astype(np.float32).reshape(-1, 1)
        elif value.dtype in (np.float16, np.float32) and value.ndim > 0:
            value = value.astype(np.float32)
        out[name] = value
    return out


def _count_layers(variables: dict[str, Any], prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    return n


def whisper_state_dict(
    ct2: Ct2Model,
) -> tuple[dict[str, Any], dict[str, npt.NDArray[np.float32]]]:
    """The WhisperConfig fields and the transformers state dict of a CTranslate2 Whisper."""
    v = ct2.variables
    if ct2.name != "WhisperSpec":
        raise ValueError(f"expected a CTranslate2 WhisperSpec model, got {ct2.name!r}")
    conv1 = v["encoder/conv1/weight"]
    d_model = conv1.shape[0]
    config = {
        "vocab_size": int(v["decoder/embeddings/weight"].shape[0]),
        "num_mel_bins": int(conv1.shape[1]),
        "d_model": int(d_model),
        "encoder_layers": _count_layers(v, "encoder"),
        "decoder_layers": _count_layers(v, "decoder"),
        "encoder_attention_heads": int(v["encoder/num_heads"]),
        "decoder_attention_heads": int(v["decoder/num_heads"]),
        "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
    }
    sd: dict[str, npt.NDArray[np.float32]] = {}

    def put(dst: str, src: str) -> None:
        sd[dst] = v[src]

    def linear(dst: str, src: str) -> None:
        put(f"{dst}.weight", f"{src}/weight")
        put(f"{dst}.bias", f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        put(f"{dst}.weight", f"{src}/gamma")
        put(f"{dst}.bias", f"{src}/beta")

    def fused(dst: str, src: str, names: tuple[str, ...]) -> None:
        # CTranslate2 concatenates q/k/v (or k/v) rows; Whisper's k_proj has no bias.
        weights = np.split(v[f"{src}/weight"], len(names))
        biases = np.split(v[f"{src}/bias"], len(names))
        for name, w, b in zip(names, weights, biases, strict=True):
            sd[f"{dst}.{name}.weight"] = w
            if name != "k_proj":
                sd[f"{dst}.{name}.bias"] = b
            elif np.any(b != 0):
                raise ValueError(f"{src}: the key projection has a non-zero bias")

    for side in ("encoder", "decoder"):
        hf, ct = f"model.{side}", side
        put(f"{hf}.embed_positions.weight", f"{ct}/position_encodings/encodings")
        norm(f"{hf}.layer_norm", f"{ct}/layer_norm")
        for i in range(config[f"{side}_layers"]):
            h, c = f"{hf}.layers.{i}", f"{ct}/layer_{i}"
            fused(f"{h}.self_attn", f"{c}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{h}.self_attn.out_proj", f"{c}/self_attention/linear_1")
            norm(f"{h}.self_attn_layer_norm", f"{c}/self_attention/layer_norm")
            linear(f"{h}.fc1", f"{c}/ffn/linear_0")
            linear(f"{h}.fc2", f"{c}/ffn/linear_1")
            norm(f"{h}.final_layer_norm", f"{c}/ffn/layer_norm")
            if side == "decoder":
                linear(f"{h}.encoder_attn.q_proj", f"{c}/attention/linear_0")
                fused(f"{h}.encoder_attn", f"{c}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{h}.encoder_attn.out_proj", f"{c}/attention/linear_2")
                norm(f"{h}.encoder_attn_layer_norm", f"{c}/attention/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    put("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")
    put("proj_out.weight", "decoder/projection/weight")
    return config, sd
