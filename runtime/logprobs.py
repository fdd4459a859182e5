"""Log-probabilities of generated tokens, and the most likely alternatives at each position.

One job: per decode step, take the row of logits the sampler is about to draw from, bring it to
the stated point of the distribution, and record the sampled token's log-probability and the
``top_n`` most likely tokens there.

The point (vLLM's "processed" logprobs): after the allowed-token mask of a grammar, the
penalties and the temperature, before top-k and top-p, i.e. `kernels.process_logits` (C, with
a bit-equal numpy twin). A greedy request (temperature 0) is taken at temperature 1: its
distribution is the penalized logits' softmax. Tokens a grammar forbids have probability 0 and are
never listed. The log-softmax is computed in float64 from the float32 processed logits.

:class:`LogprobRecorder` is one sequence's: ``observe(...)`` before the sampler runs (the sampler
then changes the logits in place), ``chosen(token)`` after. Not thread-safe; one per sequence.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from imagine_edge import kernels
from imagine_edge.sdk.types import ChoiceLogprobs, TokenLogprob, TopLogprob

__all__ = ["LogprobRecorder", "TokenLogprobs", "choice_logprobs"]


@dataclass(frozen=True, slots=True)
class TokenLogprobs:
    """One generated token: its id, its log-probability, and the top alternatives
    (id, log-probability), most likely first (ties: lower id first)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


class LogprobRecorder:
    """Records :class:`TokenLogprobs` for each token of one sequence (``entries``)."""

    def __init__(self, vocab_size: int, top_n: int) -> None:
        if not 0 <= top_n <= vocab_size:
            raise ValueError(f"top_n must be in [0, {vocab_size}], got {top_n}")
        self.top_n = top_n
        self.entries: list[TokenLogprobs] = []
        self._row = np.empty(vocab_size, dtype=np.float32)
        self._log_z = 0.0
        self._top: tuple[tuple[int, float], ...] = ()

    def observe(
        self,
        logits: npt.NDArray[np.float32],
        config: kernels.SamplingConfig,
        state: kernels.SequenceState,
        *,
        eos_token_ids: Sequence[int] = (),
        allowed_mask: npt.NDArray[np.uint32] | npt.NDArray[np.int32] | None = None,
    ) -> None:
        """Take the distribution of the next token from ``logits`` (left unchanged)."""
        row = self._row
        np.copyto(row, logits)
        kernels.process_logits(
            row, config, state, eos_token_ids=eos_token_ids, allowed_mask=allowed_mask
        )
        x = row.astype(np.float64)
        finite = np.isfinite(x)
        peak = float(x[finite].max()) if finite.any() else 0.0
        self._log_z = peak + float(np.log(np.exp(x[finite] - peak).sum()))
        self._top = self._best(x, finite)

    def _best(
        self, x: npt.NDArray[np.float64], finite: npt.NDArray[np.bool_]
    ) -> tuple[tuple[int, float], ...]:
        n = min(self.top_n, int(finite.sum()))
        if n == 0:
            return ()
        scores = np.where(finite, x, -np.inf)
        kth = -np.partition(-scores, n - 1)[n - 1]
        above = np.flatnonzero(scores > kth)
        part = np.concatenate([above, np.flatnonzero(scores == kth)[: n - len(above)]])
        # Most likely first; equal values: lower id first (also at the cut).
        order = part[np.lexsort((part, -scores[part]))]
        log_z = self._log_z
        return tuple((int(i), float(scores[i] - log_z)) for i in order)

    def chosen(self, token_id: int) -> None:
        """Record the sampled token of the step last observed."""
        logprob = float(np.float64(self._row[token_id]) - self._log_z)
        self.entries.append(TokenLogprobs(int(token_id), logprob, self._top))


def _byte_level_table() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the character that stands for each byte in a vocabulary."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_BYTE_LEVEL: Final = _byte_level_table()


def _is_byte_level(tokenizer: Tokenizer) -> bool:
    decoder = json.loads(tokenizer.to_str()).get("decoder") or {}
    return bool(decoder.get("type") == "ByteLevel")


def choice_logprobs(entries: Sequence[TokenLogprobs], tokenizer: Tokenizer) -> ChoiceLogprobs:
    """The response's shape of ``entries``: each token as its text and its bytes. A byte-level
    BPE token's bytes are exact, also for a token that holds part of a UTF-8 character (its text
    is then U+FFFD, as OpenAI shows it); other tokenizers give the UTF-8 of the decoded text."""
    byte_level = _is_byte_level(tokenizer)
    shapes: dict[int, tuple[str, list[int]]] = {}

    def shape(token_id: int) -> tuple[str, list[int]]:
        if token_id not in shapes:
            text = tokenizer.decode([token_id], skip_special_tokens=False)
            raw = list(text.encode())
            piece = tokenizer.id_to_token(token_id) if byte_level else None
            if piece is not None and all(c in _BYTE_LEVEL for c in piece):
                raw = [_BYTE_LEVEL[c] for c in piece]
            shapes[token_id] = (text, raw)
        return shapes[token_id]

    def top(token_id: int, logprob: float) -> TopLogprob:
        text, raw = shape(token_id)
        return TopLogprob(token=text, logprob=logprob, bytes=raw)

    content = []
    for e in entries:
        text, raw = shape(e.token_id)
        alternatives = [top(i, lp) for i, lp in e.top]
        content.append(
            TokenLogprob(token=text, logprob=e.logprob, bytes=raw, top_logprobs=alternatives)
        )
    return ChoiceLogprobs(content=content)
