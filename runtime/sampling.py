"""The sampling plan of one request: validated contract parameters plus the model's defaults.

:meth:`GenerationPlan.from_params` is the one place where a request's ``LLMSamplingParams`` (the
DTO has validated each value's range) meet a model's :class:`SamplingDefaults` and become what
the generation loop (``runtime/generate.py``) and the kernels' sampler
(:class:`~imagine_edge.kernels.SamplingConfig`) run with. Built once per request, off the hot
path: no pydantic in the token loop.

Rules stated here once: a parameter left unset (None) takes the model's default, else the
kernels' neutral value (penalties off); ``top_k`` -1 or 0 is off (the DTO accepts the same
values with the same message); ``stop`` drops empty strings; ``min_tokens`` (an extension of
the contract, vLLM's) unset is 0, and may not exceed the request's max_tokens nor, when that is
unset, the model's default max_tokens (the DTO checks the first, this module the second).

Seeds: a request's ``seed`` (an extension field) wins, then the model's configured seed, else a
fresh one from ``secrets.randbits(63)``; the plan always holds the seed it runs with, so that
the response can report it (``usage.seed``) and the same seed repeats the output exactly. A seed
is taken modulo 2**64 (numpy's generators take non-negative seeds).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final

from imagine_edge import kernels
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import LLMSamplingParams

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "GenerationPlan",
    "SamplingDefaults",
    "fresh_seed",
    "resolve_seed",
]

DEFAULT_MAX_TOKENS: Final = 256


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """A model's defaults for the parameters a request leaves unset."""

    temperature: float = 0.7
    top_k: int = -1
    top_p: float = 1.0
    max_tokens: int = DEFAULT_MAX_TOKENS


@dataclass(frozen=True, slots=True)
class GenerationPlan:
    """Everything the loop needs about one request, validated and frozen."""

    sampling: kernels.SamplingConfig
    # None: the model's default, clipped to the room left in the context.
    max_tokens: int | None = None
    max_seconds: float | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[tuple[int, ...], ...] = ()
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    # The seed of the request's generator (see the module docstring).
    seed: int = 0
    default_max_tokens: int = DEFAULT_MAX_TOKENS

    @classmethod
    def from_params(
        cls,
        params: LLMSamplingParams,
        defaults: SamplingDefaults | None = None,
        *,
        seed: int | None = None,
    ) -> GenerationPlan:
        """The plan of a contract request; unset parameters take ``defaults``."""
        d = defaults or SamplingDefaults()

        def pick(value: float | None, default: float) -> float:
            return default if value is None else value

        try:
            sampling = kernels.SamplingConfig(
                temperature=pick(params.temperature, d.temperature),
                top_k=int(pick(params.top_k, d.top_k)),
                top_p=pick(params.top_p, d.top_p),
                repetition_penalty=pick(params.repetition_penalty, 1.0),
                presence_penalty=pick(params.presence_penalty, 0.0),
                frequency_penalty=pick(params.frequency_penalty, 0.0),
                min_tokens=params.min_tokens or 0,
            )
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
        if params.max_tokens is None and sampling.min_tokens > d.max_tokens:
            raise InvalidRequestError(
                f"min_tokens ({sampling.min_tokens}) must not exceed max_tokens, which is unset: "
                f"the model's default is {d.max_tokens}"
            )
        return cls(
            sampling=sampling,
            max_tokens=params.max_tokens,
            max_seconds=None if params.max_seconds is None else float(params.max_seconds),
            stop=tuple(s for s in params.stop or () if s),
            stop_token_ids=tuple(tuple(s) for s in params.stop_token_ids or ()),
            ignore_eos=bool(params.ignore_eos),
            skip_special_tokens=params.skip_special_tokens is not False,
            seed=resolve_seed(params.seed, seed),
            default_max_tokens=d.max_tokens,
        )


def fresh_seed() -> int:
    """A new random seed for a request that did not give one (63 bits: a JSON-safe integer in
    every client that reads 64-bit integers)."""
    return secrets.randbits(63)


def resolve_seed(requested: int | None, configured: int | None = None) -> int:
    """The seed a request runs with: its own, else the model's configured one, else a fresh one;
    in [0, 2**64)."""
    seed = requested if requested is not None else configured
    return (fresh_seed() if seed is None else seed) % 2**64
