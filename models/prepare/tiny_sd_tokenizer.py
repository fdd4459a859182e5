"""The toy CLIP tokenizer of ``tiny-sd-random``, written offline (no vocabulary ships).

CLIP's byte-level BPE layout with a vocabulary of the 256 byte characters, whole-word merges for a
few prompt words and the two special tokens: deterministic, and every text is encodable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from imagine_edge.models.prepare.tiny_sd_config import MAX_LENGTH

__all__ = ["BOS", "EOS", "write_tokenizer"]

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# Words that get whole-word merges in the toy vocabulary; any other text is spelled in bytes.
_WORDS: Final = (
    *("a", "an", "the", "of", "in", "on", "with", "and", "photo", "painting", "portrait"),
    *("drawing", "picture", "red", "green", "blue", "yellow", "black", "white", "orange"),
    *("purple", "square", "circle", "cat", "dog", "bird", "horse", "flower", "tree", "house"),
    *("city", "sky", "sea", "river", "mountain", "forest", "sunset", "night", "snow"),
    *("astronaut", "riding", "small", "big", "old", "blurry", "sharp", "detailed", "high"),
    *("quality", "low", "bad"),
)


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable characters."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def write_tokenizer(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Write a CLIP tokenizer folder (vocab.json, merges.txt, configs) with a toy vocabulary.

    The layout is CLIP's: the 256 byte characters, the same with ``</w>``, then one token per
    merge, then the two special tokens. Merges build the words of ``_WORDS`` left to right, so
    the vocabulary is deterministic and every text is encodable.
    """
    base = list(_bytes_to_unicode().values())
    vocab = base + [c + "</w>" for c in base]
    merges: list[tuple[str, str]] = []
    for word in _WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        current = parts[0]
        for part in parts[1:]:
            if (current, part) not in merges:
                merges.append((current, part))
                vocab.append(current + part)
            current += part
    vocab += [BOS, EOS]
    ids = {tok: i for i, tok in enumerate(vocab)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), "utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), "utf-8")
    return ids, merges
