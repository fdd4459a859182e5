"""Fixtures for the kernel tests: every kernel test runs on each backend (and each native ISA)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imagine_edge import kernels


def _native_isas() -> list[str]:
    if "native" not in kernels.available_backends():
        return []
    from imagine_edge.kernels import _native

    found = []
    for name in ("avx2", "sse2", "neon", "generic"):
        try:
            _native.select_isa(name)
        except ValueError:
            continue
        found.append(name)
    _native.select_isa(None)
    return found


NATIVE_ISAS = _native_isas()


@pytest.fixture(params=["reference", "native"])
def backend(request: pytest.FixtureRequest) -> kernels.Backend:
    """Each backend in turn (native on its best instruction set; `native_isa` covers the rest)."""
    if request.param == "native" and "native" not in kernels.available_backends():
        pytest.skip(f"native kernels not built: {kernels.native_unavailable_reason()}")
    return kernels.get_backend(request.param)


@pytest.fixture
def native() -> kernels.Backend:
    if "native" not in kernels.available_backends():
        pytest.skip(f"native kernels not built: {kernels.native_unavailable_reason()}")
    return kernels.get_backend("native")


@pytest.fixture
def reference() -> kernels.Backend:
    return kernels.get_backend("reference")


@pytest.fixture(params=NATIVE_ISAS or ["missing"])
def native_isa(request: pytest.FixtureRequest) -> Iterator[kernels.Backend]:
    """The native backend once per instruction set this CPU supports."""
    if request.param == "missing":
        pytest.skip(f"native kernels not built: {kernels.native_unavailable_reason()}")
    from imagine_edge.kernels import _native

    _native.select_isa(request.param)
    try:
        yield kernels.get_backend("native")
    finally:
        _native.select_isa(None)
