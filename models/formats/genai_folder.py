"""An LLM as an onnxruntime-genai model folder, run on our own engine, KV cache and sampler.

The folder is what onnxruntime-genai's model builder (and the Hugging Face onnx-community CPU
exports) write: ``genai_config.json``, one decoder graph with GroupQueryAttention and past/present
KV inputs/outputs (``past_key_values.%d.key`` ...), its external weights, ``tokenizer.json``, and
``tokenizer_config.json`` whose ``chat_template`` (or a ``chat_template.jinja`` file) is the
model's chat template. Nothing is converted: the base copies the tokenizer and reads the shapes,
special tokens, context and the ``search`` section's sampling (the manifest's
``sampling_defaults``) from genai_config; ``cpu`` hard-links the graph and its weights (a copy
across filesystems).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Final

from imagine_edge.models.formats.base import Detection, SourceFormat
from imagine_edge.models.store import (
    Architecture,
    BaseInfo,
    GraphFile,
    Manifest,
    SpecialTokens,
    Variant,
)
from imagine_edge.runtime.sampling import DEFAULT_MAX_TOKENS, SamplingDefaults
from imagine_edge.sdk.errors import InvalidRequestError
from imagine_edge.sdk.types import ModelType

__all__ = ["FORMAT", "sampling_defaults"]

CONFIG: Final = "genai_config.json"
TOKENIZER: Final = "tokenizer.json"
TOKENIZER_CONFIG: Final = "tokenizer_config.json"
TEMPLATE_FILE: Final = "chat_template.jinja"
# The decoder inputs our CPU decoder binds (runtime/shared_buffer_decoder.py).
_NEEDED_INPUTS: Final = ("input_ids", "attention_mask", "past_key_values.0.key")


def _config(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        decoder = data["model"]["decoder"]
        missing = [
            k
            for k in ("filename", "num_hidden_layers", "num_attention_heads", "head_size")
            if k not in decoder
        ]
        if missing:
            raise KeyError(", ".join(missing))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidRequestError(
            f"{folder / CONFIG} is not an onnxruntime-genai config (expected model.decoder with "
            f"filename, num_hidden_layers, num_attention_heads, head_size): {e!r}"
        ) from e
    return dict(data)


def _files(folder: Path) -> tuple[Path, ...]:
    """Every file of the folder but hidden ones: all of it is the model's content."""
    return tuple(sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")))


def _check_graph(graph: Path) -> str:
    """The graph's quantization in a few words; InvalidRequestError when we cannot run it."""
    try:
        import onnx
    except ImportError:  # the `prepare` extra; checked again when preparing
        return "onnxruntime-genai graph"
    try:
        model = onnx.load(str(graph), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends on a damaged file
        raise InvalidRequestError(f"{graph} is not a readable ONNX graph: {e}") from e
    ops = {n.op_type for n in model.graph.node}
    inputs = {i.name for i in model.graph.input}
    missing = [n for n in _NEEDED_INPUTS if n not in inputs]
    if "GroupQueryAttention" not in ops or missing:
        raise InvalidRequestError(
            f"{graph}: expected a GroupQueryAttention decoder with inputs "
            f"{', '.join(_NEEDED_INPUTS)} (as onnxruntime-genai's builder writes); found "
            f"operators {sorted(ops)[:12]} and inputs {sorted(inputs)[:6]}"
        )
    bits = {
        a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute
        if a.name == "bits"
    }  # fmt: skip
    return f"MatMulNBits int{min(bits)}" if bits else "float"


def detect(path: Path) -> Detection | None:
    """A folder with ``genai_config.json``."""
    if not path.is_dir() or not (path / CONFIG).is_file():
        return None
    config = _config(path)
    decoder = config["model"]["decoder"]
    graph = path / str(decoder["filename"])
    for needed in (graph, path / TOKENIZER):
        if not needed.is_file():
            raise InvalidRequestError(
                f"{path} has {CONFIG} but no {needed.name}, which it needs; found: "
                f"{', '.join(p.name for p in _files(path))}"
            )
    kind = _check_graph(graph)
    arch = config["model"].get("type", "decoder")
    layers = decoder["num_hidden_layers"]
    return Detection(files=_files(path), description=f"{arch} ({layers} layers), {kind}")


def _chat_template(folder: Path) -> str | None:
    if (folder / TEMPLATE_FILE).is_file():
        return (folder / TEMPLATE_FILE).read_text(encoding="utf-8")
    try:
        data = json.loads((folder / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = data.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) else None


def _ids(value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    return tuple(int(v) for v in values if v is not None)


def _special_tokens(folder: Path, model: dict[str, Any]) -> SpecialTokens:
    tokenizer = json.loads((folder / TOKENIZER).read_text(encoding="utf-8"))
    ids = {
        t["content"]: int(t["id"]) for t in tokenizer.get("added_tokens", []) if t.get("special")
    }
    bos = _ids(model.get("bos_token_id"))
    pad = _ids(model.get("pad_token_id"))
    return SpecialTokens(
        bos_token_id=bos[0] if bos else None,
        eos_token_ids=_ids(model.get("eos_token_id")),
        pad_token_id=pad[0] if pad else None,
        ids=ids,
    )


def prepare_base(folder: Path, out: Path) -> BaseInfo:
    """Copy the tokenizer; read the template, special tokens and shapes (no conversion)."""
    config = _config(folder)
    model, decoder = config["model"], config["model"]["decoder"]
    shutil.copyfile(folder / TOKENIZER, out / TOKENIZER)
    (out / "source").mkdir()
    for f in _files(folder):  # the folder as given: the cpu variant links from here
        _link(f, out / "source" / f.name)
    heads = int(decoder["num_attention_heads"])
    head_size = int(decoder["head_size"])
    return BaseInfo(
        tokenizer=Path(TOKENIZER),
        chat_template=_chat_template(folder),
        special_tokens=_special_tokens(folder, model),
        context_length=int(model.get("context_length") or config["search"]["max_length"]),
        architecture=Architecture(
            num_layers=int(decoder["num_hidden_layers"]),
            hidden_size=int(decoder.get("hidden_size") or heads * head_size),
            num_attention_heads=heads,
            num_kv_heads=int(decoder.get("num_key_value_heads") or heads),
            head_dim=head_size,
            vocab_size=int(model["vocab_size"]),
        ),
        float_weights=None,
        sampling_defaults=sampling_defaults(dict(config.get("search", {}))),
    )


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem
        shutil.copyfile(src, dst)


def sampling_defaults(search: dict[str, Any]) -> SamplingDefaults:
    """genai_config's ``search`` section as the model's sampling defaults: ``do_sample`` false
    is greedy (temperature 0); its ``max_length`` is the whole context, not a reply's length, so
    max_tokens stays the runtime's default."""
    greedy = not bool(search.get("do_sample", False))
    return SamplingDefaults(
        temperature=0.0 if greedy else float(search.get("temperature", 1.0)),
        top_k=int(search.get("top_k", 0)) or -1,
        top_p=float(search.get("top_p", 1.0)),
        max_tokens=DEFAULT_MAX_TOKENS,
    )


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """The folder's own graph and weights, linked."""
    source = manifest.root / "source"
    config = _config(source)
    for f in _files(source):
        _link(f, out / f.name)
    graph = out / str(config["model"]["decoder"]["filename"])
    kind = _check_graph(graph)
    import onnx

    proto = onnx.load(str(graph), load_external_data=False)
    return Variant(
        ep="cpu",
        dir=out,
        quantization=f"as given by the onnxruntime-genai folder ({kind})",
        graphs={
            "decoder": GraphFile(
                path=graph,
                inputs=tuple(i.name for i in proto.graph.input),
                outputs=tuple(o.name for o in proto.graph.output),
            )
        },
        notes="An onnxruntime-genai model folder run as it is on our decoder and KV cache.",
    )


FORMAT: Final = SourceFormat(
    name="onnxruntime-genai",
    model_type=ModelType.LLM,
    detect=detect,
    prepare_base=prepare_base,
    variants={"cpu": prepare_cpu},
    default_variants=("cpu",),
    loader="imagine_edge.models.llm:load_chat_model",
    recipe_version=1,
    expects="a folder with genai_config.json and a GroupQueryAttention model.onnx",
)
