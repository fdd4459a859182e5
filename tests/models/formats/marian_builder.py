"""A tiny Marian (opus-mt layout) with random weights, built by the tests.

A SentencePiece model trained here on a few sentences serves as both ``source.spm`` and
``target.spm``; ``vocab.json`` lists its pieces with Marian's ids (``</s>`` 0, ``<unk>`` 1, the
pieces, ``<pad>`` last), as opus-mt's conversion writes them; ``MarianTokenizer`` and
``MarianMTModel.save_pretrained`` write the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["SENTENCES", "build_marian"]

SENTENCES = [
    "The ferry to the island leaves twice a day in winter.",
    "How do I reset the router without losing my settings?",
    "Tigers are solitary hunters that patrol large territories.",
    "The library opens at nine and closes at six on weekdays.",
    "She planted tomatoes, beans and basil in the small garden.",
    "Rain is expected tomorrow afternoon across the whole region.",
]


def build_marian(folder: Path, seed: int = 0, eos_bias: float = 0.0) -> Path:
    """Write the tiny Marian into ``folder``; ``eos_bias`` is added to ``</s>``'s logit bias
    (a large one makes translations end early, to test the stop at ``</s>``)."""
    import sentencepiece
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel, MarianTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    work = folder.parent / f"{folder.name}-spm"
    work.mkdir(exist_ok=True)
    text = work / "text.txt"
    text.write_text("\n".join(SENTENCES * 4) + "\n", encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(work / "spm"),
        vocab_size=60,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
    )
    sp = sentencepiece.SentencePieceProcessor(model_file=str(work / "spm.model"))
    pieces = [
        sp.IdToPiece(i)
        for i in range(sp.GetPieceSize())
        if not (sp.IsControl(i) or sp.IsUnknown(i))
    ]
    vocab = {"</s>": 0, "<unk>": 1, **{p: i + 2 for i, p in enumerate(pieces)}}
    vocab["<pad>"] = len(vocab)
    (work / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = MarianTokenizer(
        vocab=str(work / "vocab.json"),
        source_spm=str(work / "spm.model"),
        target_spm=str(work / "spm.model"),
    )
    tokenizer.save_pretrained(str(folder))
    pad = vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=pad,
        eos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=0,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias[0, 0] += eos_bias
    model.generation_config = GenerationConfig(
        bad_words_ids=[[pad]],
        decoder_start_token_id=pad,
        eos_token_id=0,
        pad_token_id=pad,
        forced_eos_token_id=0,
        max_length=64,
        num_beams=4,
    )
    model.save_pretrained(str(folder))
    return folder
