"""What an error text may show a client: no absolute paths, heap addresses or runtime internals.

:func:`public_message` is applied at the error boundary (every error body, stream failure event
and the health answer). The full text still goes to the server log. Rules, in order:

- an ONNX Runtime failure (``[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : …`` with node names,
  source files and arena sizes) becomes one plain sentence, saying "out of memory" when the
  runtime could not allocate;
- object reprs ``<_io.BytesIO object at 0x7f…>`` lose their address, other long hex numbers too;
- absolute file paths (POSIX, and Windows drive paths) keep only their last component.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["public_message"]

_ORT: Final = re.compile(
    r"(?:[\w.]*(?:Exception|Fail|Error|InvalidArgument)\s*:\s*)?\[ONNXRuntimeError\].*",
    re.DOTALL,
)
_ORT_NAMES: Final = re.compile(r"onnxruntime[\w.]*")
_REPR: Final = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")
_HEX: Final = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
_PART: Final = r"[^\s/\\'\",;:()\[\]{}<>]+"
_POSIX_PATH: Final = re.compile(rf"(?<![\w.:/~-])/(?:{_PART}/)+({_PART})?")
_WINDOWS_PATH: Final = re.compile(rf"\b[A-Za-z]:\\(?:{_PART}\\)*({_PART})?")


def _last_part(match: re.Match[str]) -> str:
    return f"…/{match.group(1) or ''}"


def public_message(text: str) -> str:
    """``text`` with paths, addresses and runtime internals removed (see the module doc)."""

    def runtime(match: re.Match[str]) -> str:
        failed = match.group().lower()
        if "alloc" in failed or "out of memory" in failed:
            return "the model runtime ran out of memory on this request"
        return "the model runtime failed on this request"

    text = _ORT.sub(runtime, text)
    text = _ORT_NAMES.sub("the model runtime", text)
    text = _REPR.sub(r"<\1 object>", text)
    text = _HEX.sub("0x…", text)
    text = _POSIX_PATH.sub(_last_part, text)
    return _WINDOWS_PATH.sub(_last_part, text)
