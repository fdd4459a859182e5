"""Reading the files of Hugging Face style model folders, for every format module: one place.

Everything here is cheap (JSON files and ONNX headers, never weights) and every failure is an
``InvalidRequestError`` naming the format, what it expected and what it found, so that
``detect`` and ``prepare_base`` report a broken folder the same way whatever the format.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from imagine_edge.models.store import Architecture, SpecialTokens
from imagine_edge.sdk.errors import InvalidRequestError

__all__ = [
    "BERT_SPECIAL_TOKENS",
    "MAX_SAFE_TOKENS",
    "bert_architecture",
    "broken",
    "link_or_copy",
    "onnx_io",
    "read_json",
    "require_files",
    "special_tokens",
    "write_tokenizer",
]

BERT_SPECIAL_TOKENS: Final = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# The int8 recipe's graphs are checked on texts up to this long (the QNN buckets stop here too).
MAX_SAFE_TOKENS: Final = 512


def broken(fmt: str, folder: Path, expected: str, found: str) -> InvalidRequestError:
    """The error of a folder that is of format ``fmt`` but cannot be used."""
    return InvalidRequestError(f"{folder} looks like a {fmt} folder: expected {expected}; {found}")


def require_files(fmt: str, folder: Path, names: Iterable[str]) -> None:
    """Every file of ``names`` (relative to ``folder``) exists and is not empty."""
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise broken(fmt, folder, ", ".join(names), f"missing: {', '.join(missing)}")
    empty = [n for n in names if (folder / n).stat().st_size == 0]
    if empty:
        raise broken(fmt, folder, "non-empty files", f"empty: {', '.join(empty)}")


def read_json(fmt: str, path: Path) -> dict[str, Any]:
    """The JSON object in ``path``."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise broken(fmt, path.parent, f"a file {path.name}", "it is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise broken(fmt, path.parent, f"{path.name} to be JSON", f"reading it: {exc}") from None
    if not isinstance(value, dict):
        found = f"{path.name} holds a {type(value).__name__}"
        raise broken(fmt, path.parent, f"{path.name} to be a JSON object", found)
    return value


def _int(fmt: str, folder: Path, config: Mapping[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise broken(fmt, folder, f"config.json with a positive integer {key!r}", f"{value!r}")
    return value


def bert_architecture(fmt: str, folder: Path, config: Mapping[str, Any]) -> Architecture:
    """The shapes of a BERT-style encoder from its ``config.json``."""
    hidden = _int(fmt, folder, config, "hidden_size")
    heads = _int(fmt, folder, config, "num_attention_heads")
    if hidden % heads:
        found = f"hidden_size {hidden}, {heads} heads"
        raise broken(fmt, folder, "hidden_size divisible by num_attention_heads", found)
    return Architecture(
        num_layers=_int(fmt, folder, config, "num_hidden_layers"),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        vocab_size=_int(fmt, folder, config, "vocab_size"),
    )


def write_tokenizer(fmt: str, src: Path, dst: Path, max_tokens: int) -> dict[str, Any]:
    """Copy ``tokenizer.json`` with right truncation at ``max_tokens`` and no padding (the
    pipelines pad per batch); the parsed spec. A file ``tokenizers`` cannot read is refused."""
    from tokenizers import Tokenizer

    spec = read_json(fmt, src)
    try:
        Tokenizer.from_str(json.dumps(spec))
    except Exception as exc:  # tokenizers raises its own exception type
        expected = "a tokenizer.json of the tokenizers library"
        raise broken(fmt, src.parent, expected, str(exc)) from None
    spec["truncation"] = {
        "direction": "Right",
        "max_length": max_tokens,
        "strategy": "LongestFirst",
        "stride": 0,
    }
    spec["padding"] = None
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, dst)
    return spec


def special_tokens(spec: Mapping[str, Any], config: Mapping[str, Any]) -> SpecialTokens:
    """The special tokens a tokenizer spec declares (its ``added_tokens`` marked special)."""
    ids = {
        str(t["content"]): int(t["id"])
        for t in spec.get("added_tokens") or ()
        if isinstance(t, dict) and t.get("special")
    }
    pad = config.get("pad_token_id")
    return SpecialTokens(pad_token_id=pad if isinstance(pad, int) else ids.get("[PAD]"), ids=ids)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` when both are on one file system (no copy of a large
    graph); copy otherwise."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def onnx_io(fmt: str, path: Path) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, int]]:
    """An ONNX file's input names, output names and each output's rank, read from its header
    (external weights are not loaded)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise broken(fmt, path.parent, f"{path.name} to be an ONNX model", str(exc)) from None
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = tuple(i.name for i in graph.input if i.name not in inits)
    outputs = tuple(o.name for o in graph.output)
    ranks = {o.name: len(o.type.tensor_type.shape.dim) for o in graph.output}
    return inputs, outputs, ranks
