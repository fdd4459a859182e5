"""Shared preparation steps: a GGUF into a float transformers folder, the CPU graph via the
onnxruntime-genai model builder, and ONNX graph introspection.

Everything heavy is imported inside the functions (torch and transformers are preparation-time
dependencies only).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

from imagine_edge.models.prepare.gguf_exact import reencode_builder_graph
from imagine_edge.models.store import (
    Architecture,
    BaseInfo,
    GraphFile,
    SpecialTokens,
    Variant,
)
from imagine_edge.python_command import python_module

__all__ = ["build_cpu_graph", "graph_file", "hf_from_gguf", "steps"]

logger = logging.getLogger(__name__)

HF_DIR: Final = "hf"
ENCODINGS: Final = {
    "q4": "4-bit MatMulNBits plus float block offsets (exact)",
    "u8": "8-bit MatMulNBits with zero points on the Q4_1 grid (offsets to d/32)",
}
TOKENIZER: Final = "tokenizer.json"
_LOG_TAIL: Final = 4000


@contextmanager
def steps(desc: str, total: int) -> Iterator[Any]:
    """A tqdm bar over the named steps of one preparation (silent when stderr is no terminal)."""
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="step", disable=None, leave=False) as bar:
        yield bar


def graph_file(path: Path) -> GraphFile:
    """The graph at ``path`` with its input and output names (weights are not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return GraphFile(
        path=path,
        inputs=tuple(i.name for i in model.graph.input),
        outputs=tuple(o.name for o in model.graph.output),
    )


def _special_tokens(tokenizer: Any, config: Any, generation_config: Any) -> SpecialTokens:
    ids = {
        tok.content: int(i)
        for i, tok in sorted(tokenizer.added_tokens_decoder.items())
        if getattr(tok, "special", False)
    }
    eos: list[int] = []
    for source in (config.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        for e in source if isinstance(source, list) else [source]:
            if e is not None and int(e) not in eos:
                eos.append(int(e))
    return SpecialTokens(
        bos_token_id=config.bos_token_id,
        eos_token_ids=tuple(eos),
        pad_token_id=config.pad_token_id,
        ids=ids,
    )


def hf_from_gguf(gguf: Path, out: Path) -> BaseInfo:
    """Dequantize a Llama-family GGUF to a float32 transformers folder ``out/hf``.

    Writes ``out/hf/{model.safetensors, config.json, generation_config.json, tokenizer.json,
    ...}`` and ``out/tokenizer.json``. transformers refuses ``save_pretrained`` on a GGUF-loaded
    model, so the state dict is saved with safetensors (the tied lm_head once, as the embedding)
    and ``quantization_config`` is dropped from the config so loaders treat it as plain float.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = out / HF_DIR
    hf.mkdir(parents=True)
    with steps(f"converting {gguf.name}", 3) as bar:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        bar.update()
        cfg = model.config
        tied = bool(cfg.tie_word_embeddings)
        state = {
            k: v.detach().contiguous()
            for k, v in model.state_dict().items()
            if not (tied and k == "lm_head.weight")
        }
        save_file(state, str(hf / "model.safetensors"), metadata={"format": "pt"})
        bar.update()
        config = cfg.to_dict()
        config.pop("quantization_config", None)
        # The builder picks its exporter from ``architectures``, which a GGUF load leaves empty.
        config["architectures"] = [type(model).__name__]
        (hf / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        model.generation_config.save_pretrained(str(hf))
        tokenizer.save_pretrained(str(hf))
        shutil.copyfile(hf / TOKENIZER, out / TOKENIZER)
        bar.update()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return BaseInfo(
        tokenizer=Path(TOKENIZER),
        chat_template=tokenizer.chat_template,
        special_tokens=_special_tokens(tokenizer, cfg, model.generation_config),
        context_length=int(cfg.max_position_embeddings),
        architecture=Architecture(
            num_layers=cfg.num_hidden_layers,
            hidden_size=cfg.hidden_size,
            num_attention_heads=cfg.num_attention_heads,
            num_kv_heads=cfg.num_key_value_heads,
            head_dim=int(head_dim),
            vocab_size=cfg.vocab_size,
        ),
        float_weights=Path(HF_DIR),
    )


def build_cpu_graph(
    hf: Path, out: Path, precision: str, num_layers: int, gguf: Path | None = None
) -> Variant:
    """Run onnxruntime-genai's model builder on the float folder ``hf`` into ``out``.

    ``precision`` "int4" or "int8" picks the builder graph whose weights ``gguf_exact`` then
    re-encodes from the GGUF grid: "int4" exactly with block-offset corrections, "int8" as 8-bit
    with zero points (see that module for the trade-off). The CPU EP's default accuracy level 4
    computes with int8 activations. The result is one graph with GroupQueryAttention and
    past/present KV inputs/outputs that may share one buffer, plus ``genai_config.json`` so
    onnxruntime-genai can run the same folder. The LM head runs on the last position only
    (``logits`` is [batch, 1, vocab]). With ``gguf``, every weight is re-encoded from that
    file's own blocks instead (``gguf_graph``: any supported block type, any architecture).
    """
    if precision not in ("int4", "int8"):
        raise ValueError(f"cpu precision must be 'int4' or 'int8', got {precision!r}")
    with tempfile.TemporaryDirectory(prefix="builder-cache-") as cache:
        cmd = [
            *python_module("imagine_edge.models.prepare.gguf_builder"),
            "-i", str(hf), "-o", str(out), "-p", precision, "-e", "cpu", "-c", cache,
            # The LM head on the last position only: a prompt chunk no longer computes (and
            # writes) 49,152 logits for every token, a fifth of a prefill's work.
            "--extra_options", "prune_lm_head=true",
        ]  # fmt: skip
        _run_with_bar(cmd, f"building the {precision} CPU graph", total=num_layers * 5 + 1)
    for junk in ("cache_dir",):  # the builder may leave its default cache folder behind
        shutil.rmtree(out / junk, ignore_errors=True)
    builder = version("onnxruntime-genai")
    if gguf is not None:
        from imagine_edge.models.prepare.gguf_graph import describe, reencode_from_gguf

        quantization = describe(reencode_from_gguf(out / "model.onnx", gguf))
        return _variant(out, quantization, precision, builder)
    layers = "q4" if precision == "int4" else "u8"
    errors = reencode_builder_graph(out / "model.onnx", hf, layers)
    quantization = (
        f"GGUF Q4_1 layers as {ENCODINGS[layers]}; Q8_0 head and tied embedding as 8-bit "
        f"MatMulNBits/GatherBlockQuantized (max weight error: layers {errors['layers']:.2g}, "
        f"head {errors['head']:.2g})"
    )
    return _variant(out, quantization, precision, builder)


def _variant(out: Path, quantization: str, precision: str, builder: str) -> Variant:
    return Variant(
        ep="cpu",
        dir=out,
        quantization=quantization,
        graphs={"decoder": graph_file(out / "model.onnx")},
        options={"precision": precision, "builder": f"onnxruntime-genai {builder}"},
        notes=(
            "Exported by onnxruntime-genai's model builder: GroupQueryAttention with past/present "
            "KV cache (past_present_share_buffer), attention_mask int64 [batch, total_length]. "
            "genai_config.json is kept so onnxruntime-genai can run this folder as a reference."
        ),
    )


def _run_with_bar(cmd: list[str], desc: str, total: int) -> None:
    """Run ``cmd``, advancing a bar on each quantized MatMul; raise with the log tail on error."""
    from tqdm import tqdm

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    lines: list[str] = []
    with (
        subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        ) as proc,
        tqdm(total=total, desc=desc, unit="matmul", disable=None, leave=False) as bar,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "complete quantization" in line:
                bar.update()
        rc = proc.wait()
    if rc != 0:
        tail = "".join(lines)[-_LOG_TAIL:]
        raise RuntimeError(f"{' '.join(cmd[:4])} exited with {rc}:\n{tail}")
    logger.debug("model builder output:\n%s", "".join(lines)[-_LOG_TAIL:])
