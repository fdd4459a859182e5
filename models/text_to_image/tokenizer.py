"""CLIP's tokenizer for Stable Diffusion text encoders, built with the ``tokenizers`` library."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from imagine_edge.models.text_to_image.layout import read_json
from imagine_edge.sdk.errors import ModelRunError

__all__ = ["ClipTokenizer"]


def _token_text(value: Any, default: str) -> str:
    """A special token from a tokenizer config: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return str(value.get("content", default))
    return default if value is None else str(value)


class ClipTokenizer:
    """CLIP's tokenizer with the ``tokenizers`` library: [bos] + ids[:max-2] + [eos] + padding.

    Reads ``tokenizer.json`` when the folder has one, else CLIP's ``vocab.json`` and
    ``merges.txt`` (what most optimum exports of SD carry), built as transformers'
    ``CLIPTokenizer`` builds them. Padding uses the configured ``pad_token`` (``<|endoftext|>``
    for SD 1.x, ``!`` for SD 2.x and SD-Turbo).
    """

    def __init__(self, folder: Path, max_length: int) -> None:
        from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers
        from tokenizers.models import BPE

        config = {**read_json(folder / "special_tokens_map.json")}
        config.update(read_json(folder / "tokenizer_config.json"))
        bos = _token_text(config.get("bos_token"), "<|startoftext|>")
        eos = _token_text(config.get("eos_token"), "<|endoftext|>")
        pad = _token_text(config.get("pad_token"), eos)
        if (folder / "tokenizer.json").is_file():
            self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        else:
            vocab = read_json(folder / "vocab.json")
            lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
            pairs = [m.split() for m in lines if m and not m.startswith("#version")]
            merges = [(p[0], p[1]) for p in pairs if len(p) == 2]
            bpe = BPE(vocab=vocab, merges=merges, continuing_subword_prefix="",
                      end_of_word_suffix="</w>", fuse_unk=False, unk_token=eos)  # fmt: skip
            tok = Tokenizer(bpe)
            tok.normalizer = normalizers.Sequence(
                [
                    normalizers.NFC(),
                    normalizers.Replace(Regex(r"\s+"), " "),
                    normalizers.Lowercase(),
                ]
            )
            split = Regex(
                r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"
                r"|[^\s\p{L}\p{N}]+"
            )
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(split, behavior="removed", invert=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False),
            ])  # fmt: skip
            tok.decoder = decoders.ByteLevel()
            self._tok = tok
        ids = [self._tok.token_to_id(t) for t in (bos, eos, pad)]
        if any(i is None for i in ids):
            raise ModelRunError(f"tokenizer in {folder} lacks {bos!r}, {eos!r} or {pad!r}", "load")
        self.bos_id, self.eos_id, self.pad_id = (int(i) for i in ids if i is not None)
        limit = config.get("model_max_length")
        # Some configs say 1e30 ("no limit"): the text encoder's positions are the real cap.
        self.max_length = (
            int(limit) if isinstance(limit, int) and limit <= max_length else max_length
        )

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.int64]:
        """[len(texts), max_length] ids, truncated and padded as the SD pipelines do."""
        out = np.full((len(texts), self.max_length), self.pad_id, np.int64)
        for row, text in enumerate(texts):
            body = self._tok.encode(text, add_special_tokens=False).ids[: self.max_length - 2]
            ids = [self.bos_id, *body, self.eos_id]
            out[row, : len(ids)] = ids
        return out
