"""Perplexity of a graph against its float model, shared by the LLM perplexity tests."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from imagine_edge.models.store import Manifest


def perplexity(logits: npt.NDArray[np.float32], ids: list[int]) -> float:
    """exp of the mean next-token negative log-likelihood, in float64."""
    x = logits[:-1].astype(np.float64)
    top = x.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(x - top).sum(axis=-1)) + top[:, 0]
    target = np.asarray(ids[1:])
    return float(np.exp(np.mean(log_z - x[np.arange(len(target)), target])))


def float_logits(manifest: Manifest, ids: list[int]) -> npt.NDArray[np.float32]:
    import torch
    from transformers import AutoModelForCausalLM

    assert manifest.float_weights is not None
    model = AutoModelForCausalLM.from_pretrained(str(manifest.float_weights), dtype=torch.float32)
    with torch.inference_mode():
        out = model.eval()(torch.tensor([ids])).logits[0].numpy()
    return np.asarray(out, np.float32)
