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

from collections.abc import Sequence
from dataclasses import dataclass

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


def choice_logprobs(entries: Sequence[TokenLogprobs], tokenizer: Tokenizer) -> ChoiceLogprobs:
    """The response's shape of ``entries``: each token as its text and UTF-8 bytes (a token that
    holds part of a character decodes to U+FFFD, as OpenAI's do; its bytes are those of that
    text)."""
    texts: dict[int, str] = {}

    def text(token_id: int) -> str:
        if token_id not in texts:
            texts[token_id] = tokenizer.decode([token_id], skip_special_tokens=False)
        return texts[token_id]

    def top(token_id: int, logprob: float) -> TopLogprob:
        t = text(token_id)
        return TopLogprob(token=t, logprob=logprob, bytes=list(t.encode()))

    content = [
        TokenLogprob(
            token=text(e.token_id),
            logprob=e.logprob,
            bytes=list(text(e.token_id).encode()),
            top_logprobs=[top(i, lp) for i, lp in e.top],
        )
        for e in entries
    ]
    return ChoiceLogprobs(content=content)
