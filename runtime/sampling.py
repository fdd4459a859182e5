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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from imagine_edge import kernels
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import LLMSamplingParams

__all__ = ["DEFAULT_MAX_TOKENS", "GenerationPlan", "SamplingDefaults"]

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
    # None: derived from the prompt's token ids (see the module docstring).
    seed: int | None = None
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
            seed=seed,
            default_max_tokens=d.max_tokens,
        )

    def seed_for(self, prompt: npt.NDArray[np.int64]) -> int:
        if self.seed is not None:
            return self.seed
        return int.from_bytes(hashlib.blake2b(prompt.tobytes(), digest_size=8).digest(), "little")
