"""Request limits, checked before a request takes a queue slot.

The rule for status codes: too much *input* (body bytes, messages, texts, documents, audio bytes
or seconds) is a :class:`PayloadTooLargeError` (413); a *parameter* out of range (image size,
number of images, response format) is an :class:`InvalidRequestError` (422). Every message names
the value and the limit.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from imagine_edge.sdk.errors import InvalidRequestError, PayloadTooLargeError

__all__ = ["Limits", "parse_image_size", "wav_seconds"]

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds on one request; the defaults suit a phone-class device."""

    max_body_bytes: int = 32 * 1024 * 1024
    max_messages: int = 512
    max_embedding_inputs: int = 512
    max_rerank_documents: int = 512
    max_audio_bytes: int = 25 * 1024 * 1024
    max_audio_seconds: float = 30 * 60.0
    max_images: int = 4
    max_image_steps: int = 100
    min_image_side: int = 64
    max_image_side: int = 1024
    max_history_items: int = 100

    def check_count(self, what: str, count: int, limit: int) -> None:
        """Raise 413 when ``count`` items of ``what`` exceed ``limit``."""
        if count > limit:
            raise PayloadTooLargeError(f"too many {what}: {count}, the limit is {limit}")

    def check_audio(self, audio: bytes, seconds: float | None) -> None:
        """Raise 413 for audio over the byte or duration limit. ``seconds`` is the duration its
        container declares (models/audio.py's ``declared_seconds``, for every format the
        transcriber reads); None, audio it cannot read, is left to the model, whose decoder
        refuses it with the reason."""
        if len(audio) > self.max_audio_bytes:
            raise PayloadTooLargeError(
                f"audio file is {len(audio)} bytes, the limit is {self.max_audio_bytes}"
            )
        if seconds is not None and seconds > self.max_audio_seconds:
            raise PayloadTooLargeError(
                f"audio is {seconds:.1f} s long, the limit is {self.max_audio_seconds:.0f} s"
            )

    def check_image_size(self, size: str | None) -> tuple[int, int]:
        """(width, height) of ``size``; 422 unless both sides are multiples of 8 in range."""
        width, height = parse_image_size(size or "512x512")
        low, high = self.min_image_side, self.max_image_side
        for side in (width, height):
            if not low <= side <= high or side % 8:
                raise InvalidRequestError(
                    f"size must be '<width>x<height>' with each side a multiple of 8 in "
                    f"[{low}, {high}], got {size!r}"
                )
        return width, height

    def check_images(self, n: int | None) -> int:
        """The number of images, 422 when above ``max_images``."""
        count = 1 if n is None else n
        if not 1 <= count <= self.max_images:
            raise InvalidRequestError(f"n must be in [1, {self.max_images}], got {n}")
        return count


def parse_image_size(size: str) -> tuple[int, int]:
    """Parse '<width>x<height>'."""
    match = _SIZE.match(size)
    if match is None:
        raise InvalidRequestError(f"size must look like '512x512' (<width>x<height>), got {size!r}")
    return int(match.group(1)), int(match.group(2))


def wav_seconds(data: bytes) -> float | None:
    """Duration of a RIFF/WAVE file from its header, or None when ``data`` is not WAV.

    A header cut short (a ``fmt `` chunk that ends before its byte rate) is a 422.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    byte_rate, pos = 0, 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if chunk_id == b"fmt " and size >= 16:
            if pos + 20 > len(data):
                raise InvalidRequestError(
                    f"the WAV file is truncated: its format chunk needs {size} bytes, the file "
                    f"has {len(data) - pos - 8} after the chunk header"
                )
            byte_rate = struct.unpack_from("<I", data, pos + 16)[0]
        elif chunk_id == b"data":
            # Streamed WAVs may carry a placeholder size: trust the bytes actually present.
            available = min(size, len(data) - pos - 8)
            return available / byte_rate if byte_rate else None
        pos += 8 + size + (size & 1)
    return None
