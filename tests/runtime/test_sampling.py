"""The sampling plan: contract parameters plus a model's defaults become the kernels' plan."""

from __future__ import annotations

import pytest

from imagine_edge.runtime.sampling import DEFAULT_MAX_TOKENS, GenerationPlan, SamplingDefaults
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import CompletionRequest

GREEDY = SamplingDefaults(temperature=0.0)


def _plan(defaults: SamplingDefaults = GREEDY, **params) -> GenerationPlan:
    request = CompletionRequest(prompt="", model="tiny", stream=False, **params)
    return GenerationPlan.from_params(request, defaults)


def test_plan_maps_every_contract_parameter():
    plan = _plan(
        temperature=0.7,
        top_k=50,
        top_p=0.9,
        repetition_penalty=1.1,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        stop=["\n", ""],
        stop_token_ids=[[1, 2]],
        ignore_eos=True,
        skip_special_tokens=False,
        max_tokens=7,
        max_seconds=3,
    )
    s = plan.sampling
    assert (s.temperature, s.top_k, s.top_p) == (0.7, 50, 0.9)
    assert (s.repetition_penalty, s.presence_penalty, s.frequency_penalty) == (1.1, 0.5, -0.5)
    assert plan.stop == ("\n",)
    assert plan.stop_token_ids == ((1, 2),)
    assert plan.ignore_eos
    assert not plan.skip_special_tokens
    assert (plan.max_tokens, plan.max_seconds) == (7, 3.0)
    defaults = _plan()
    assert defaults.sampling.is_greedy
    assert defaults.skip_special_tokens
    assert not defaults.ignore_eos
    assert defaults.max_tokens is None


def test_unset_parameters_take_the_models_defaults():
    defaults = SamplingDefaults(temperature=0.2, top_k=20, top_p=0.9, max_tokens=64)
    s = _plan(defaults).sampling
    assert (s.temperature, s.top_k, s.top_p) == (0.2, 20, 0.9)
    assert (s.repetition_penalty, s.presence_penalty, s.frequency_penalty) == (1.0, 0.0, 0.0)
    assert _plan(defaults).default_max_tokens == 64
    assert _plan(defaults, temperature=1.0, top_k=5).sampling.temperature == 1.0
    assert (
        GenerationPlan.from_params(
            CompletionRequest(prompt="", model="t", stream=False)
        ).default_max_tokens
        == DEFAULT_MAX_TOKENS
    )


@pytest.mark.parametrize("off", [-1, 0])
def test_top_k_minus_one_and_zero_both_turn_top_k_off(off):
    # One rule for the DTO, the plan and the kernels (docs/sampling.md): -1 or 0 is off.
    plan = _plan(SamplingDefaults(temperature=1.0, top_k=50), top_k=off)
    assert plan.sampling.top_k == off
    assert not plan.sampling.has_top_k
    assert (
        plan.sampling.native_plan
        == _plan(SamplingDefaults(temperature=1.0), top_k=-1).sampling.native_plan
    )


def test_min_tokens_unset_is_zero_and_set_reaches_the_kernels_config():
    assert _plan(max_tokens=5).sampling.min_tokens == 0
    assert _plan(max_tokens=5, min_tokens=5).sampling.min_tokens == 5
    assert _plan(min_tokens=DEFAULT_MAX_TOKENS).sampling.min_tokens == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"min_tokens": -1}, "min_tokens must be in"),
        ({"min_tokens": 6, "max_tokens": 5}, r"min_tokens \(6\) must not exceed max_tokens \(5\)"),
    ],
)
def test_min_tokens_out_of_range_is_refused_by_the_dto(params, message):
    with pytest.raises(ValueError, match=message):
        CompletionRequest(prompt="", model="t", stream=False, **params)


def test_min_tokens_beyond_the_models_default_max_tokens_is_refused():
    with pytest.raises(InvalidRequestError, match="the model's default is 64"):
        _plan(SamplingDefaults(max_tokens=64), min_tokens=65)
    assert _plan(SamplingDefaults(max_tokens=64), min_tokens=64).sampling.min_tokens == 64
