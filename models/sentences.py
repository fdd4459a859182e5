"""Where a line of text splits into sentences, for translation (Bergamot translates each on its
own): after . ! ? ... and closing quotes, followed by a space, except after a known English or
Portuguese abbreviation or an initial, or before a lowercase letter."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["split_sentences"]

# Abbreviations after which a period does not end a sentence (English and Portuguese).
_ABBREVIATIONS: Final = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "sra",
        "srta",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "no",
        "nº",
        "av",
        "dra",
        "jr",
        "p.ex",
    ]
)
_SENTENCE_END: Final = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+")


def split_sentences(line: str) -> list[str]:
    """Sentences of one line: cut after . ! ? … (and closing quotes) followed by a space,
    except after a known abbreviation or an initial, or before a lowercase letter."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(line):
        head = line[start : m.start()].rstrip("\"'”’)]")
        last_word = head.rsplit(None, 1)[-1].lower().rstrip(".") if head.strip() else ""
        abbreviation = last_word in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isalpha())
        if abbreviation or line[m.end() : m.end() + 1].islower():
            continue
        out.append(line[start : m.end()].strip())
        start = m.end()
    if line[start:].strip():
        out.append(line[start:].strip())
    return out
