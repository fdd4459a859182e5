"""Error texts shown to clients carry no absolute paths, heap addresses or runtime internals."""

from __future__ import annotations

import pytest

from imagine_edge.server.sanitize import public_message

ORT = (
    "run: RuntimeException: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code "
    "returned while running MatMul node. Name:'/model/layers.0/MatMul' Status Message: "
    "/onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* onnxruntime::BFCArena::"
    "AllocateRawInternal(size_t, bool) Failed to allocate memory for requested buffer of size "
    "131072000000"
)


@pytest.mark.parametrize(
    ("text", "shown", "hidden"),
    [
        (ORT, "run: the model runtime ran out of memory on this request", "bfc_arena"),
        ("load: Fail: [ONNXRuntimeError] : 1 : FAIL : Load model from /x/m.onnx failed",
         "load: the model runtime failed on this request", "/x/"),
        ("cannot decode <_io.BytesIO object at 0x7f3a2b4c5d60>", "<_io.BytesIO object>",
         "0x7f3a"),
        ("pointer 0xdeadbeefcafe here", "pointer 0x… here", "deadbeef"),
        ("failed: No such file: '/home/user/.cache/imagine-edge/llm/abc/model.onnx'",
         "'…/model.onnx'", "/home/user"),
        ("open C:\\Users\\me\\AppData\\model.onnx failed", "…/model.onnx failed", "Users"),
    ],
)  # fmt: skip
def test_internals_are_removed(text: str, shown: str, hidden: str) -> None:
    cleaned = public_message(text)
    assert shown in cleaned
    assert hidden not in cleaned


@pytest.mark.parametrize(
    "text",
    [
        "unknown model 'gpt-5'",
        "temperature must be in [0, 2], got 2.5",
        "the history fills as requests to POST chat/completions succeed",
        "see http://127.0.0.1:8000/api/v2/ping",
        "size must look like '512x512' (<width>x<height>), got '1x'",
    ],
)
def test_ordinary_messages_are_unchanged(text: str) -> None:
    assert public_message(text) == text
