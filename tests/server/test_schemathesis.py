"""Property-based fuzzing of the app's OpenAPI document with every schemathesis check.

Bounded: a few valid and a few invalid examples per operation, derandomized, on the fakes. Each
response must pass all of schemathesis' checks (no server error, documented status codes and
headers, response schemas, schema-valid data accepted and schema-violating data rejected, the
Allow header of a 405, ...): the ranges the code enforces are stated in the schema.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection

from imagine_edge.sdk.engine import Engine
from imagine_edge.sdk.testing import fake_cards
from imagine_edge.server.app import create_app

EXAMPLES = 8
# Rules between two parameters (docs/structured.md, Errors), which OpenAPI cannot state.
_CROSS_FIELD_RULES = (
    "must not be after to",
    "which is not in tools",
    "needs at least one tool",
    "cannot apply when a tool call is required",
    "cannot be combined with tools",
    "top_logprobs needs logprobs",
    "not supported with stream",
    "must not exceed max_tokens",
)


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    engine = Engine(fake_cards(), data_dir=tmp_path_factory.mktemp("fuzz"))
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(engine))
    engine.close()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
def test_no_input_causes_a_server_error(schema, mode):
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20  # every route of CONTRACT §2 plus /v1 is documented
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def call(case: schemathesis.Case) -> None:
            response = case.call()
            if response.status_code >= 500:
                failures.append(f"{case.operation.label}: {response.status_code} {response.text}")
            if any(rule in response.text for rule in _CROSS_FIELD_RULES):
                return  # a rule between two parameters, which OpenAPI cannot state
            # A multipart part is bytes on the wire: a "number" sent as the audio file is a file
            # of those bytes, so transcribe cannot reject it as schema-violating.
            excluded = [negative_data_rejection] if "transcribe" in case.operation.label else []
            try:
                case.validate_response(response, excluded_checks=excluded)
            except BaseException as e:  # schemathesis raises a group of check failures
                if isinstance(e, KeyboardInterrupt):
                    raise
                failures.append(f"{case.operation.label}: {response.status_code} {response.text}")

        try:
            call()
        except Unsatisfiable:
            # An operation without parameters or body has no invalid input to generate.
            assert mode is GenerationMode.NEGATIVE
    assert not failures, "\n".join(failures)
