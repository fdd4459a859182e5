"""Token-id stop sequences, EOS / ignore_eos, and the streaming stop-string matcher."""

from __future__ import annotations

import pytest

from imagine_edge.runtime.stop import StopStringMatcher, StopTokens, ends_with_stop_ids


@pytest.mark.parametrize(
    ("generated", "stops", "expected"),
    [
        ([1, 2, 3], [[3]], True),
        ([1, 2, 3], [[2, 3]], True),
        ([1, 2, 3], [[1, 2]], False),  # must be a suffix
        ([1, 2, 3], [[0, 1, 2, 3]], False),  # longer than the output
        ([1, 2, 3], [[9], [2, 3]], True),
        ([1, 2, 3], [[]], False),
        ([], [[1]], False),
        ([5, 5], [[5, 5]], True),
    ],
)
def test_ends_with_stop_ids(generated: list[int], stops: list[list[int]], expected: bool) -> None:
    assert ends_with_stop_ids(generated, stops) is expected


def test_stop_tokens_mask_eos_and_single_token_stops() -> None:
    stops = StopTokens.build([2, 7], [[9], [4, 5], [2]])
    assert stops.mask_ids == (2, 7, 9)
    assert StopTokens.build([2], [[9]], ignore_eos=True).mask_ids == (9,)
    assert StopTokens.build([2], None).stop_token_ids == ()


def test_stop_tokens_should_stop() -> None:
    stops = StopTokens.build([2], [[4, 5]])
    assert stops.should_stop([1, 2])
    assert stops.should_stop([1, 4, 5])
    assert not stops.should_stop([1, 5])
    assert not stops.should_stop([])
    assert not stops.should_stop([1, 2], min_tokens=3)  # no stop before min_tokens
    assert not StopTokens.build([2], [[4, 5]], ignore_eos=True).should_stop([1, 2])
    assert StopTokens.build([2], [[4, 5]], ignore_eos=True).should_stop([4, 5])


def test_end_of_turn_and_stop_sequences_are_the_two_token_rules() -> None:
    stops = StopTokens.build([2, 7], [[4, 5]])
    assert stops.end_of_turn == frozenset({2, 7})
    assert StopTokens.build([2, 7], [[4, 5]], ignore_eos=True).end_of_turn == frozenset()
    assert stops.ends_with_stop_sequence([1, 4, 5])
    assert not stops.ends_with_stop_sequence([1, 2])  # EOS is end_of_turn's, not a sequence
    assert not StopTokens.build([2], None).ends_with_stop_sequence([2])


def test_stop_tokens_reject_empty_sequences() -> None:
    with pytest.raises(ValueError, match="empty sequence"):
        StopTokens.build([2], [[]])


def _stream(matcher: StopStringMatcher, pieces: list[str]) -> tuple[list[str], bool]:
    out, stopped = [], False
    for piece in pieces:
        text, stopped = matcher.push(piece)
        out.append(text)
        if stopped:
            break
    else:
        out.append(matcher.flush())
    return out, stopped


@pytest.mark.parametrize(
    ("stops", "pieces", "emitted", "stopped"),
    [
        (["\n"], ["Hola", " mundo\nmás"], ["Hola", " mundo\n"], True),
        (["END"], ["abc E", "N", "D tail"], ["abc ", "", "END"], True),  # held until resolved
        (["END"], ["abc E", "N", "o"], ["abc ", "", "ENo", ""], False),  # released when ruled out
        (["END"], ["abc EN"], ["abc ", "EN"], False),  # flush releases the held part
        (["ab", "b"], ["xab"], ["xab"], True),  # "b" ends at the same place
        (["abcd", "bc"], ["abc"], ["abc"], True),  # earliest-ending stop wins
        (["😀!"], ["héllo 😀", "! más"], ["héllo ", "😀!"], True),  # multi-byte characters
        (["。"], ["你好", "世界。再见"], ["你好", "世界。"], True),
        ([], ["any", "thing"], ["any", "thing", ""], False),
        (["xx"], ["ax", "ab"], ["a", "xab", ""], False),
    ],
)
def test_stop_strings(
    stops: list[str], pieces: list[str], emitted: list[str], stopped: bool
) -> None:
    assert _stream(StopStringMatcher(stops), pieces) == (emitted, stopped)


def test_stop_matcher_is_done_after_a_stop() -> None:
    matcher = StopStringMatcher(["."])
    assert matcher.push("a.b") == ("a.", True)
    assert matcher.stopped
    assert matcher.push("more") == ("", True)
    assert matcher.flush() == ""


def test_stop_matcher_emits_the_whole_text_once() -> None:
    pieces = ["The", " sto", "p w", "ord ", "sto", "pper", " stop", "!"]
    matcher = StopStringMatcher(["stop!"])
    out, stopped = _stream(matcher, pieces)
    assert stopped
    assert "".join(out) == "The stop word stopper stop!"


def test_stop_matcher_rejects_empty_stops() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        StopStringMatcher(["ok", ""])
