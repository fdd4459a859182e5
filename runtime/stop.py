"""When a generation stops: token-id stop sequences, EOS / ignore_eos, and stop strings.

Beside the detokenizer in the generation loop (``runtime/generate.py``), which runs both rules
on every token. Owns the token-level rule (:class:`StopTokens`: a sequence stops when its
generated ids end with one of the request's ``stop_token_ids``, a ``list[list[int]]`` in the
contract, or with an EOS id unless ``ignore_eos``) and :class:`StopStringMatcher`, which scans
incrementally decoded text and holds back a possible partial stop string until it is resolved.
Following the contract, the text returned at a stop *includes* the stop string; nothing after it
is returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["StopStringMatcher", "StopTokens", "ends_with_stop_ids"]


def ends_with_stop_ids(generated: Sequence[int], stop_token_ids: Sequence[Sequence[int]]) -> bool:
    """True when `generated` ends with one of the (non-empty) id sequences in `stop_token_ids`."""
    n = len(generated)
    for stop in stop_token_ids:
        k = len(stop)
        if k == 0 or k > n or generated[n - 1] != stop[k - 1]:
            continue
        if all(generated[n - k + j] == stop[j] for j in range(k - 1)):
            return True
    return False


@dataclass(frozen=True, slots=True)
class StopTokens:
    """A request's token-level stop conditions, built once per request.

    `mask_ids` are the ids `kernels.sample` masks while fewer than `min_tokens` tokens were
    generated (pass them as `eos_token_ids`): EOS unless `ignore_eos`, plus every single-token
    stop sequence. Longer stop sequences cannot be masked token by token; `should_stop` simply
    ignores every stop before `min_tokens`, as vLLM does.
    """

    eos_token_ids: tuple[int, ...] = ()
    stop_token_ids: tuple[tuple[int, ...], ...] = ()
    ignore_eos: bool = False
    mask_ids: tuple[int, ...] = field(init=False, repr=False, compare=False)
    # The ids that end the turn at once, before their text is shown: EOS unless ignore_eos.
    end_of_turn: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for stop in self.stop_token_ids:
            if len(stop) == 0:
                raise ValueError("stop_token_ids must not contain an empty sequence, got []")
        eos = () if self.ignore_eos else self.eos_token_ids
        singles = (stop[0] for stop in self.stop_token_ids if len(stop) == 1)
        object.__setattr__(self, "mask_ids", tuple(dict.fromkeys((*eos, *singles))))
        object.__setattr__(self, "end_of_turn", frozenset(eos))

    @classmethod
    def build(
        cls,
        eos_token_ids: Iterable[int],
        stop_token_ids: Iterable[Iterable[int]] | None = None,
        *,
        ignore_eos: bool = False,
    ) -> StopTokens:
        """From the contract's shapes (`stop_token_ids` may be None)."""
        stops = tuple(tuple(int(t) for t in s) for s in (stop_token_ids or ()))
        return cls(tuple(int(t) for t in eos_token_ids), stops, bool(ignore_eos))

    def should_stop(self, generated: Sequence[int], min_tokens: int = 0) -> bool:
        """True when generation must end after the last token of `generated`."""
        if not generated or len(generated) < min_tokens:
            return False
        if generated[-1] in self.end_of_turn:
            return True
        return self.ends_with_stop_sequence(generated)

    def ends_with_stop_sequence(self, generated: Sequence[int]) -> bool:
        """True when `generated` ends with one of the request's stop id sequences."""
        return bool(self.stop_token_ids) and ends_with_stop_ids(generated, self.stop_token_ids)


class StopStringMatcher:
    """Finds stop strings in text that arrives in pieces, holding back possible partial matches.

    `push` returns the text that is safe to emit now and whether a stop string completed. Text
    that could be the start of a stop string is held back until later text rules it in or out.
    At a stop, the returned text runs up to and including the earliest-ending stop string, and
    later pushes return nothing. `flush` releases what is held back when generation ends
    otherwise. Works on `str` (code points), so multi-byte characters are never split.
    """

    __slots__ = ("_held", "_max_hold", "_stopped", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        for stop in stops:
            if not isinstance(stop, str) or not stop:
                raise ValueError(f"stop strings must be non-empty str, got {stop!r}")
        self._stops: tuple[str, ...] = tuple(dict.fromkeys(stops))
        self._max_hold = max((len(s) for s in self._stops), default=1) - 1
        self._held = ""
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """Whether a stop string has completed."""
        return self._stopped

    def push(self, text: str) -> tuple[str, bool]:
        """Add newly decoded text; returns (text safe to emit now, stopped)."""
        if self._stopped:
            return "", True
        window = self._held + text
        end = -1
        for stop in self._stops:
            start = window.find(stop)
            if start >= 0 and (end < 0 or start + len(stop) < end):
                end = start + len(stop)
        if end >= 0:
            self._stopped = True
            self._held = ""
            return window[:end], True
        hold = self._partial_suffix(window)
        self._held = window[len(window) - hold :]
        return window[: len(window) - hold], False

    def flush(self) -> str:
        """Release held-back text (call when generation ends without a stop string)."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, window: str) -> int:
        """Length of the longest suffix of `window` that is a proper prefix of a stop string."""
        for k in range(min(self._max_hold, len(window)), 0, -1):
            tail = window[-k:]
            if any(stop.startswith(tail) for stop in self._stops):
                return k
        return 0
