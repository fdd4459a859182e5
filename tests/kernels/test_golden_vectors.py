"""The golden-vector harness (tests/kernels/golden) on this machine's own instruction sets.

`make check-arm64` runs the same harness cross-compiled for linux-aarch64 under qemu-user; here it
is built for the host with the module's CMake flags, so that a broken harness or generator shows
up in the ordinary test run, and it must reject a file whose expected logits are off by one bit.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_golden", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    build = tmp_path_factory.mktemp("golden-build")
    subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build),
            "-DIMAGINE_EDGE_GOLDEN=ON",
            "-DIMAGINE_EDGE_WERROR=ON",
            "-DCMAKE_BUILD_TYPE=Release",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True, text=True)
    return build / "ie_golden"


def _run(harness: Path, vectors: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(harness), str(vectors)], capture_output=True, text=True, check=False, timeout=300
    )


def test_native_chain_is_bit_equal_to_the_reference(harness: Path, tmp_path: Path) -> None:
    vectors = tmp_path / "golden.bin"
    count = _generator().write(vectors)
    done = _run(harness, vectors)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines, done.stderr
    for line in lines:
        assert line.endswith(f": {count} of {count} golden cases bit-equal to the numpy reference")


def test_a_one_bit_difference_fails(harness: Path, tmp_path: Path) -> None:
    gen = _generator()
    vectors = tmp_path / "one.bin"
    logits = np.linspace(-3.0, 3.0, 64, dtype=np.float32)
    gen.write(vectors, [gen.Case(logits, gen.SamplingConfig(temperature=0.7, top_p=0.9))])
    data = bytearray(vectors.read_bytes())
    data[-4] ^= 1  # the lowest mantissa bit of the last expected output logit
    vectors.write_bytes(bytes(data))
    done = _run(harness, vectors)
    assert done.returncode == 1
    assert "logit 63 is" in done.stdout


def test_a_truncated_file_is_rejected(harness: Path, tmp_path: Path) -> None:
    vectors = tmp_path / "cut.bin"
    _generator().write(vectors)
    vectors.write_bytes(vectors.read_bytes()[:5000])
    done = _run(harness, vectors)
    assert done.returncode == 2
    assert "truncated or malformed" in done.stderr
