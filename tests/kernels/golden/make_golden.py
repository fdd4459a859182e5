"""Golden vectors for the native sampler, produced by the numpy reference (kernels/_reference.py).

``python tests/kernels/golden/make_golden.py OUT`` writes OUT, a binary file that the C harness
``golden_check.c`` (beside this file) reads and replays through ``ie_sample``, on any machine and
any instruction set, comparing the token id and every byte of the logits left behind. The cases
cover every stage and every path of the C chain: greedy, temperature, top-k below and above the
sorted-list limit and on rows past the strided-sample size, top-p with and without top-k,
penalties, the stop-id mask, ties, -inf entries and the two error outcomes.

Format (little-endian)::

    header   8 bytes "IEGOLD01", u32 number of cases
    case     i64 vocab
             f64 temperature, top_p, repetition_penalty, presence_penalty, frequency_penalty
             i64 top_k; i32 greedy, i32 mask_active
             i64 n_rep, i32[n_rep]; i64 n_gen, i32[n_gen] ids, i32[n_gen] counts
             i64 n_mask, i32[n_mask]
             f64 uniform
             f32[vocab] logits in
             i32 expected status (0 ok, 1 no candidate, 2 non-finite), i32 expected token
             f32[vocab] logits out (present when the status is 0)
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from imagine_edge.kernels import _reference
from imagine_edge.kernels._config import SamplingConfig, SequenceState

MAGIC = b"IEGOLD01"
OK, NO_CANDIDATE, NONFINITE = 0, 1, 2


@dataclass(frozen=True)
class Case:
    logits: npt.NDArray[np.float32]
    config: SamplingConfig
    prompt: tuple[int, ...] = ()
    generated: tuple[int, ...] = ()
    eos: tuple[int, ...] = ()
    uniform: float = 0.5


def _row(rng: np.random.Generator, vocab: int, kind: str) -> npt.NDArray[np.float32]:
    if kind == "normal":
        return (rng.standard_normal(vocab) * 3.0).astype(np.float32)
    if kind == "ties":  # few distinct values: every ordering decision meets ties
        return rng.integers(-4, 5, vocab).astype(np.float32)
    if kind == "peaked":  # one dominant token, like a confident LLM step
        row = (rng.standard_normal(vocab) * 2.0).astype(np.float32)
        row[rng.integers(vocab)] += 25.0
        return row
    if kind == "wide":  # logits far below the maximum underflow exp32's clamp
        return (rng.standard_normal(vocab) * 60.0).astype(np.float32)
    if kind == "some-inf":
        row = (rng.standard_normal(vocab) * 3.0).astype(np.float32)
        row[rng.random(vocab) < 0.3] = -np.inf
        row[rng.integers(vocab)] = 1.0  # at least one finite entry
        return row
    raise ValueError(kind)


def _cases() -> Iterator[Case]:
    rng = np.random.default_rng(20)
    configs = [
        SamplingConfig(temperature=0.0),
        SamplingConfig(temperature=1.0),
        SamplingConfig(temperature=0.7, top_k=50, top_p=0.9),
        SamplingConfig(temperature=1.3, top_p=0.5),
        SamplingConfig(temperature=0.8, top_k=1),
        SamplingConfig(temperature=1.0, top_k=1500),  # past the sorted-list limit (1024)
        SamplingConfig(temperature=0.6, top_p=0.01),
        SamplingConfig(temperature=0.9, top_k=40, repetition_penalty=1.3),
        SamplingConfig(temperature=1.1, top_p=0.95, presence_penalty=0.6, frequency_penalty=-0.4),
        SamplingConfig(
            temperature=0.0, repetition_penalty=1.1, presence_penalty=1.5, frequency_penalty=2.0
        ),
        SamplingConfig(temperature=0.7, top_k=50, top_p=0.9, min_tokens=3),
    ]
    kinds = ["normal", "ties", "peaked", "wide", "some-inf"]
    # Row lengths around the vector widths, and past the strided top-k sample (16,384).
    vocabs = [1, 2, 7, 8, 9, 17, 100, 1000, 4099, 20000, 49152]
    for i, vocab in enumerate(vocabs):
        for j, config in enumerate(configs):
            kind = kinds[(i + j) % len(kinds)]
            history = rng.integers(0, vocab, size=min(vocab, 40)).tolist()
            yield Case(
                logits=_row(rng, vocab, kind),
                config=config,
                prompt=tuple(history[:20]),
                generated=tuple(history[20:]),
                eos=tuple(sorted({0, vocab - 1})),
                uniform=float(rng.random()),
            )
    yield from _boundary_cases(rng)
    # Draws at the ends of [0, 1), and the two outcomes that are errors.
    edge = SamplingConfig(temperature=1.0, top_p=0.9)
    for uniform in (0.0, 0.999999999):
        yield Case(_row(rng, 4099, "normal"), edge, uniform=uniform)
    yield Case(np.full(33, -np.inf, dtype=np.float32), edge)
    nan_row = _row(rng, 33, "normal")
    nan_row[5] = np.nan
    yield Case(nan_row, edge)
    pos_inf = _row(rng, 33, "normal")
    pos_inf[7] = np.inf
    yield Case(pos_inf, SamplingConfig(temperature=0.0))
    # Every token masked by min_tokens: nothing can be drawn.
    yield Case(np.zeros(3, dtype=np.float32), SamplingConfig(min_tokens=1), eos=(0, 1, 2))


def _boundary_cases(rng: np.random.Generator) -> Iterator[Case]:
    """Draws that land on the last unit of a token's cumulative weight.

    A token id alone hides most of exp32's result (the weights are truncated to integers, and a
    draw rarely sits at an edge). Here ``floor(uniform * W)`` is ``cumulative[k] - 1``, so any
    weight up to token k that is one unit lower in C (an FMA, a different polynomial order)
    moves the draw to the next token.
    """
    configs = [
        SamplingConfig(temperature=1.0),
        SamplingConfig(temperature=0.7, top_k=50, top_p=0.9),
        SamplingConfig(temperature=1.2, top_p=0.8, repetition_penalty=1.2),
    ]
    for vocab in (9, 100, 4099, 20000):
        for config in configs:
            for kind in ("normal", "wide"):
                logits = _row(rng, vocab, kind)
                history = tuple(rng.integers(0, vocab, size=min(vocab, 10)).tolist())
                state = SequenceState(vocab, history)
                row = logits.copy()
                _reference.apply_penalties(row, config, state)
                _reference.apply_temperature(row, config.temperature)
                _reference.apply_top_k(row, config.top_k)
                cumulative = np.cumsum(_reference.apply_top_p(row, config.top_p), dtype=np.int64)
                total = int(cumulative[-1])
                kept = np.flatnonzero(np.diff(cumulative, prepend=0))
                for k in rng.choice(kept, size=min(3, kept.shape[0]), replace=False):
                    edge = int(cumulative[k]) - 1
                    uniform = (edge + 0.5) / total
                    if int(uniform * float(total)) == edge:  # exactly representable
                        yield Case(logits, config, prompt=history, uniform=uniform)


def _ids(values: npt.NDArray[np.int32]) -> bytes:
    return struct.pack("<q", values.shape[0]) + values.astype("<i4").tobytes()


def _encode(case: Case) -> bytes:
    vocab = case.logits.shape[0]
    state = SequenceState(vocab, case.prompt)
    for token in case.generated:
        state.accept(token)
    config = case.config
    masked = state.num_generated < config.min_tokens
    mask = np.asarray(case.eos if masked else (), dtype=np.int32)
    temperature, top_p, repetition, presence, frequency, top_k, greedy = config.native_plan
    row = case.logits.copy()
    try:
        token = _reference.sample(row, config, state, case.uniform, eos_token_ids=case.eos)
        status = OK
    except ValueError as e:
        token, status = -1, NONFINITE if "NaN or +inf" in str(e) else NO_CANDIDATE
    out = struct.pack("<q", vocab)
    out += struct.pack("<5d", temperature, top_p, repetition, presence, frequency)
    out += struct.pack("<qii", top_k, int(greedy), int(masked))
    out += _ids(state.repetition_ids)
    out += _ids(state.generated_ids) + state.generated_counts.astype("<i4").tobytes()
    out += _ids(mask)
    out += struct.pack("<d", case.uniform)
    out += case.logits.astype("<f4").tobytes()
    out += struct.pack("<ii", status, token)
    if status == OK:
        out += row.astype("<f4").tobytes()
    return out


def write(path: Path, cases: Iterable[Case] | None = None) -> int:
    """Write golden vectors (default: all cases) to ``path``; returns the number of cases."""
    blobs = [_encode(case) for case in (_cases() if cases is None else cases)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(MAGIC + struct.pack("<I", len(blobs)) + b"".join(blobs))
    tmp.replace(path)
    return len(blobs)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_golden.py OUT")
    count = write(Path(sys.argv[1]))
    print(f"{count} golden cases -> {sys.argv[1]}")
