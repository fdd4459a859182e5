"""Whisper's logit rules for timestamped greedy decoding, as OpenAI's reference ``transcribe``
applies them: suppressed tokens, blank suppression at a window's start, timestamp pairing and
monotonicity, and timestamps taken over text when together they are more likely."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = ["MAX_INITIAL_TIMESTAMP", "WhisperSpecials", "apply_timestamp_rules", "log_softmax"]

MAX_INITIAL_TIMESTAMP: Final = 50  # the first timestamp is at most 1.0 s
NEG_INF: Final = np.float32(-np.inf)

Floats = npt.NDArray[np.float32]


class WhisperSpecials:
    """The special token ids of a prepared Whisper model (``whisper.json``)."""

    def __init__(self, facts: dict[str, Any]) -> None:
        t = facts["tokens"]
        self.eot: int = t["endoftext"]
        self.sot: int = t["startoftranscript"]
        self.transcribe: int | None = t["transcribe"]
        self.no_speech: int | None = t["nospeech"]
        self.timestamp_begin: int = t["timestamp_begin"]
        self.languages: dict[str, int] = dict(facts["languages"])
        self.vocab: int = facts["vocab_size"]
        always = [t[k] for k in ("translate", "transcribe", "startoftranscript", "startofprev")]
        always += [t["startoflm"], t["nospeech"], t["notimestamps"]]
        self.suppress = np.array(
            sorted({int(i) for i in [*facts["suppress_ids"], *always] if i is not None}), np.int64
        )
        self.suppress_begin = np.array(facts["suppress_ids_begin"], np.int64)


def apply_timestamp_rules(
    logits: Floats, sampled: Sequence[int], specials: WhisperSpecials, *, first: bool
) -> None:
    """Whisper's logit filters for timestamped greedy decoding (modifies ``logits`` in place).

    ``sampled`` are the tokens generated so far in this window (the prompt excluded).
    """
    ts = specials.timestamp_begin
    logits[specials.suppress] = NEG_INF
    if first:
        logits[specials.suppress_begin] = NEG_INF
        logits[:ts] = NEG_INF  # a window starts with a timestamp ...
        logits[ts + MAX_INITIAL_TIMESTAMP + 1 :] = NEG_INF  # ... within its first second
    last_ts = len(sampled) >= 1 and sampled[-1] >= ts
    penultimate_ts = len(sampled) < 2 or sampled[-2] >= ts
    if last_ts:
        if penultimate_ts:  # a closed pair: text (or end of text) must follow
            logits[ts:] = NEG_INF
        else:  # an open segment: close it with a timestamp or end the text
            logits[: specials.eot] = NEG_INF
    stamps = [t for t in sampled if t >= ts]
    if stamps:
        # Timestamps never go back; a segment's end may equal the next one's start.
        floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
        logits[ts:floor] = NEG_INF
    logprobs = log_softmax(logits)
    if np.logaddexp.reduce(logprobs[ts:]) > logprobs[:ts].max():
        logits[:ts] = NEG_INF  # timestamps together outweigh every text token


def log_softmax(x: Floats) -> Floats:
    m = x.max()
    shifted = x - m
    result: Floats = shifted - np.log(np.exp(shifted).sum())
    return result
