"""onnxruntime-genai's model builder, run with transformers 5's per-layer-type rope parameters.

transformers 5 writes a Gemma 3 config's rope as ``rope_parameters = {"sliding_attention":
{...}, "full_attention": {...}}``; the builder (0.18) reads a flat ``rope_parameters`` with a
``rope_type``, ``rope_theta`` for the global layers and ``rope_local_base_freq`` for the
sliding-window ones (its Gemma 3 graph builds one cos/sin cache for each). This entry point
flattens the nested form into those attributes, then runs the builder's command line unchanged:
``python -m imagine_edge.models.prepare.gguf_builder -i hf -o out ...``.
"""

from __future__ import annotations

import runpy
from typing import Any

__all__ = ["flatten_rope", "main"]


def flatten_rope(config: Any) -> None:
    """Per-layer-type rope parameters as the builder reads them (no-op for the flat form)."""
    rope = getattr(config, "rope_parameters", None)
    if not isinstance(rope, dict) or "rope_type" in rope or "full_attention" not in rope:
        return
    full = dict(rope["full_attention"])
    local = rope.get("sliding_attention", full)
    config.rope_parameters = full
    config.rope_theta = full["rope_theta"]
    config.rope_local_base_freq = local["rope_theta"]


def main() -> None:
    import importlib
    import sys
    from pathlib import Path

    import onnxruntime_genai.models as package

    # The builder imports its exporters as the top-level package ``builders`` from its folder.
    sys.path.insert(0, str(Path(next(iter(package.__path__)))))
    gemma = importlib.import_module("builders.gemma")
    original = gemma.Gemma3Model.__init__

    def init(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
        flatten_rope(config)
        original(self, config, *args, **kwargs)

    gemma.Gemma3Model.__init__ = init
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
