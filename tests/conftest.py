"""Suite-wide options."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite golden files from the current code instead of comparing against them",
    )


@pytest.fixture(scope="session")
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


def pytest_configure(config: pytest.Config) -> None:
    # Tests run third-party ONNX Runtime sessions (the quantizer, onnxruntime-genai) beside ours
    # in one process, which the opt-in process-wide thread pool forbids; tests/runtime checks the
    # shared pool in a process of its own.
    os.environ["IMAGINE_EDGE_SHARED_THREAD_POOL"] = "0"
