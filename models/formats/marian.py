"""TRANSLATE: a Hugging Face Marian folder (``MarianMTModel.save_pretrained`` plus the
``MarianTokenizer`` files, as the opus-mt models on the hub are).

Files: ``config.json`` (``model_type`` marian), ``model.safetensors`` (or ``pytorch_model.bin``),
``source.spm`` and ``target.spm`` (SentencePiece models), ``vocab.json`` (piece -> id; the ids
are Marian's, not SentencePiece's) and, for models with two vocabularies, ``target_vocab.json``
with ``separate_vocabs`` in ``tokenizer_config.json``. ``generation_config.json`` is read when
there (``max_length``, ``bad_words_ids``, ``forced_eos_token_id``). An optimum ONNX export of a
Marian is not read: the folder must hold the transformers weights.

Preparation (torch, once) exports the encoder and a cache-less decoder to float32 ONNX
(:mod:`imagine_edge.models.prepare.marian_export`); the loader is
:func:`imagine_edge.models.translate_marian.load_marian_translator`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Final

from imagine_edge.models.formats._hf import broken, read_json, require_files
from imagine_edge.models.formats.base import Detection, SourceFormat
from imagine_edge.models.store import BaseInfo, GraphFile, Manifest, SpecialTokens, Variant
from imagine_edge.sdk.types import ModelType

__all__ = ["FACTS", "FORMAT", "detect", "facts", "prepare_base", "prepare_cpu"]

NAME: Final = "hf-marian"
FACTS: Final = "marian.json"
WEIGHTS_DIR: Final = "hf"
TOKENIZER_FILES: Final = ("source.spm", "target.spm", "vocab.json")
WEIGHTS: Final = ("model.safetensors", "pytorch_model.bin")
SPECIAL: Final = ("</s>", "<unk>", "<pad>")
# opus-mt's generation default; the decoder graph's positions stop at max_position_embeddings.
DEFAULT_MAX_LENGTH: Final = 512


def _separate(path: Path) -> bool:
    config_file = path / "tokenizer_config.json"
    if not config_file.is_file():
        return False
    return bool(read_json(NAME, config_file).get("separate_vocabs", False))


def _vocab(path: Path, name: str) -> dict[str, int]:
    vocab = read_json(NAME, path / name)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vocab.values()):
        raise broken(NAME, path, f"{name} mapping pieces to integer ids", "other values")
    missing = [t for t in SPECIAL if t not in vocab]
    if missing:
        raise broken(NAME, path, f"{name} with {', '.join(SPECIAL)}", f"missing {missing}")
    return {str(k): int(v) for k, v in vocab.items()}


def _int(config: dict[str, Any], key: str, path: Path) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise broken(NAME, path, f"config.json with an integer {key!r}", f"{value!r}")
    return value


def _eos(gen: dict[str, Any], config: dict[str, Any], default: int) -> int:
    value = gen.get("eos_token_id", config.get("eos_token_id", default))
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def facts(path: Path) -> dict[str, Any]:
    """What decoding needs, read from the folder (ids, lengths, suppressed tokens)."""
    config = read_json(NAME, path / "config.json")
    gen_file = path / "generation_config.json"
    gen = read_json(NAME, gen_file) if gen_file.is_file() else config
    vocab = _vocab(path, "vocab.json")
    target = _vocab(path, "target_vocab.json") if _separate(path) else vocab
    pad = _int(config, "pad_token_id", path)
    start = gen.get("decoder_start_token_id", config.get("decoder_start_token_id", pad))
    bad = gen.get("bad_words_ids") or []
    if not isinstance(bad, list) or not all(isinstance(b, list) for b in bad):
        raise broken(NAME, path, "bad_words_ids to be a list of id lists", f"{bad!r}")
    max_length = gen.get("max_length", DEFAULT_MAX_LENGTH)
    positions = _int(config, "max_position_embeddings", path)
    forced = gen.get("forced_eos_token_id", config.get("forced_eos_token_id"))
    return {
        "eos_id": vocab["</s>"],
        "unk_id": vocab["<unk>"],
        # generate stops at the generation config's eos_token_id (the config's; </s> else)
        "target_eos_id": _eos(gen, config, target["</s>"]),
        "pad_id": pad,
        "decoder_start_id": int(start) if isinstance(start, int) else pad,
        "suppress_ids": sorted({int(b[0]) for b in bad if len(b) == 1}),
        "forced_eos_id": forced if isinstance(forced, int) else None,
        "max_length": int(max_length) if isinstance(max_length, int) else DEFAULT_MAX_LENGTH,
        "max_positions": positions,
        "vocab_size": _int(config, "vocab_size", path),
        "separate_vocabs": target is not vocab,
    }


def _weights(path: Path) -> Path | None:
    return next((path / w for w in WEIGHTS if (path / w).is_file()), None)


def detect(path: Path) -> Detection | None:
    """A folder whose ``config.json`` says ``model_type`` marian, with its tokenizer files."""
    if not path.is_dir() or not (path / "config.json").is_file():
        return None
    config = read_json(NAME, path / "config.json")
    if config.get("model_type") != "marian":
        return None
    weights = _weights(path)
    if weights is None:
        found = "no weights" + (" (an ONNX export is not read)" if any(path.glob("*.onnx")) else "")
        raise broken(NAME, path, " or ".join(WEIGHTS), found)
    names = [*TOKENIZER_FILES, *(("target_vocab.json",) if _separate(path) else ())]
    require_files(NAME, path, names)
    facts(path)
    files = [path / "config.json", weights, *(path / n for n in names)]
    files += [path / n for n in ("generation_config.json", "tokenizer_config.json")]
    layers = config.get("encoder_layers"), config.get("decoder_layers")
    description = (
        f"Hugging Face Marian ({layers[0]} encoder / {layers[1]} decoder layers, "
        f"d_model {config.get('d_model')}, {weights.suffix[1:]})"
    )
    return Detection(files=tuple(f for f in files if f.is_file()), description=description)


def prepare_base(path: Path, out: Path) -> BaseInfo:
    """Keep the weights and config (for the export), the tokenizer files and the facts."""
    if detect(path) is None:
        raise broken(NAME, path, "config.json with model_type marian", "none")
    found = facts(path)
    weights = _weights(path)
    assert weights is not None
    keep = out / WEIGHTS_DIR
    keep.mkdir(parents=True)
    for name in ("config.json", "generation_config.json"):
        if (path / name).is_file():
            shutil.copyfile(path / name, keep / name)
    shutil.copyfile(weights, keep / weights.name)
    for name in (*TOKENIZER_FILES, "target_vocab.json"):
        if (path / name).is_file():
            shutil.copyfile(path / name, out / name)
    (out / FACTS).write_text(json.dumps(found, indent=1), encoding="utf-8")
    ids = {t: _vocab(path, "vocab.json")[t] for t in SPECIAL}
    return BaseInfo(
        tokenizer=Path("vocab.json"),
        chat_template=None,
        special_tokens=SpecialTokens(
            eos_token_ids=(found["eos_id"],), pad_token_id=found["pad_id"], ids=ids
        ),
        context_length=found["max_positions"],
        architecture=None,
        float_weights=Path(WEIGHTS_DIR),
    )


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """The encoder and cache-less decoder exported to float32 ONNX for the CPU EP."""
    from imagine_edge.models.prepare.marian_export import (
        DECODER_INPUTS,
        ENCODER_INPUTS,
        export_marian,
    )

    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base kept no weights")
    encoder, decoder = export_marian(manifest.float_weights, out)
    return Variant(
        ep="cpu",
        dir=out,
        quantization="float32",
        graphs={
            "encoder": GraphFile(encoder, ENCODER_INPUTS, ("encoder_hidden_states",)),
            "decoder": GraphFile(decoder, DECODER_INPUTS, ("logits",)),
        },
        options={"precision": "float32"},
        notes="greedy; the decoder has no KV cache (the whole target prefix at every step).",
    )


FORMAT: Final = SourceFormat(
    name=NAME,
    model_type=ModelType.TRANSLATE,
    detect=detect,
    prepare_base=prepare_base,
    variants={"cpu": prepare_cpu},
    default_variants=("cpu",),
    loader="imagine_edge.models.translate_marian:load_marian_translator",
    expects="a Hugging Face Marian folder (config.json, model.safetensors, source.spm, "
    "target.spm, vocab.json)",
)
