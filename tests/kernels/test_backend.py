"""Backend selection (once, at import; env override; warn-once fallback) and the C binding's own
argument checks."""

from __future__ import annotations

import os
import subprocess
import sys
from types import ModuleType

import numpy as np
import pytest

from imagine_edge import kernels

_PROBE = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
{prelude}
from imagine_edge import kernels
print("BACKEND", kernels.active_backend(), kernels.BACKEND)
"""


def _probe(env_value: str | None, prelude: str = "") -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != kernels.ENV_VAR}
    if env_value is not None:
        env[kernels.ENV_VAR] = env_value
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(prelude=prelude)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.split("BACKEND ")[1].split()[0], done.stderr


def test_reference_override() -> None:
    assert _probe("reference") == ("reference", "")


def test_default_prefers_native_when_built() -> None:
    expected = "native" if "native" in kernels.available_backends() else "reference"
    assert _probe(None)[0] == expected


def test_unknown_value_warns_and_uses_auto() -> None:
    backend, log = _probe("fastest")
    assert "'fastest' is not auto, native or reference" in log
    assert backend in ("native", "reference")


def test_missing_extension_warns_once_and_falls_back() -> None:
    block = "sys.modules['imagine_edge.kernels._native'] = None  # as if never built"
    backend, log = _probe("native", prelude=block)
    assert backend == "reference"
    assert log.count("native sampling kernels unavailable") == 1


def test_get_backend_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="'native' or 'reference'"):
        kernels.get_backend("fast")  # type: ignore[arg-type]


def test_active_backend_is_reported() -> None:
    assert kernels.active_backend() == kernels.BACKEND
    assert kernels.BACKEND in kernels.available_backends()
    assert (kernels.native_unavailable_reason() is None) == (
        "native" in kernels.available_backends()
    )


@pytest.fixture
def binding() -> ModuleType:  # the raw extension: only its own checks, no Python wrapper in between
    if "native" not in kernels.available_backends():
        pytest.skip(f"native kernels not built: {kernels.native_unavailable_reason()}")
    from imagine_edge.kernels import _native

    return _native


def _row(
    rep: np.ndarray | None = None, n_gen: int = 0, allowed: np.ndarray | None = None
) -> tuple[object, ...]:
    ids = np.zeros(0, np.int32)
    plan = (1.0, 1.0, 1.5, 0.0, 0.0, 0, False)
    rep = ids if rep is None else rep
    return (plan, False, rep, len(rep), ids, ids, n_gen, allowed)


def test_binding_checks_item_types(binding: ModuleType) -> None:
    ws = np.zeros(binding.workspace_bytes(4), np.uint8)
    with pytest.raises(TypeError, match="logits must hold 4-byte float"):
        binding.sample(np.zeros(4, np.int32), _row(), np.zeros(0, np.int32), 0.5, ws)
    with pytest.raises(TypeError, match="rep_ids must hold 4-byte integer"):
        binding.sample(
            np.zeros(4, np.float32), _row(np.zeros(1, np.int64)), np.zeros(0, np.int32), 0.5, ws
        )


def test_binding_checks_ids_and_workspace(binding: ModuleType) -> None:
    logits = np.zeros(4, np.float32)
    ws = np.zeros(binding.workspace_bytes(4), np.uint8)
    with pytest.raises(ValueError, match=r"outside \[0, vocab\)"):
        binding.sample(logits, _row(np.array([4], np.int32)), np.zeros(0, np.int32), 0.5, ws)
    with pytest.raises(ValueError, match="history lengths exceed"):
        binding.sample(logits, _row(n_gen=1), np.zeros(0, np.int32), 0.5, ws)
    with pytest.raises(ValueError, match="workspace out of range"):
        binding.sample(logits, _row(), np.zeros(0, np.int32), 0.5, ws[:-1])
    with pytest.raises(ValueError, match=r"vocab must be in \[1, 2\*\*23\]"):
        binding.workspace_bytes(0)


def test_binding_checks_the_allowed_mask(binding: ModuleType) -> None:
    logits = np.zeros(40, np.float32)  # 40 tokens: 2 words
    ws = np.zeros(binding.workspace_bytes(40), np.uint8)
    no_ids = np.zeros(0, np.int32)
    with pytest.raises(ValueError, match="allowed must have 2 words for vocab 40, got 1"):
        binding.sample(logits, _row(allowed=np.ones(1, np.uint32)), no_ids, 0.5, ws)
    with pytest.raises(TypeError, match="allowed must hold 4-byte integer"):
        binding.sample(logits, _row(allowed=np.ones(2, np.float32)), no_ids, 0.5, ws)
    with pytest.raises(ValueError, match="allows no token"):
        binding.sample(logits, _row(allowed=np.array([0, 0xFFFFFF00], np.uint32)), no_ids, 0.5, ws)
    only_39 = np.array([0, 1 << 7], np.uint32)
    assert binding.sample(np.zeros(40, np.float32), _row(allowed=only_39), no_ids, 0.5, ws) == 39


def test_binding_reports_and_selects_isa(binding: ModuleType) -> None:
    assert binding.isa() in ("avx2", "sse2", "neon", "generic")
    with pytest.raises(ValueError, match="unavailable"):
        binding.select_isa("avx9000")
    binding.select_isa(None)
