"""The content-addressed store of prepared models.

Modules: ``lookup`` (where a model is, its content key, and preparing it on a miss), ``writer``
(the per-model lock and the folders built aside then renamed in) and ``prune`` (what
``imagine-edge models prune`` removes; imported on use, since it reaches into runtime caches).
The public names of ``lookup`` (with the manifest types it re-exports) are re-exported here,
where recipes and loaders import them from.
"""

from imagine_edge.models.store.lookup import (
    SCHEMA_VERSION,
    Architecture,
    BaseInfo,
    GraphFile,
    Lookup,
    Manifest,
    OptionValue,
    Source,
    SpecialTokens,
    Variant,
    VariantPreparer,
    cache_root,
    entry_key,
    lock_file,
    lookup,
    prepare_found,
    prepared,
    source_of,
    user_lookup,
    user_source,
)

__all__ = [
    "SCHEMA_VERSION",
    "Architecture",
    "BaseInfo",
    "GraphFile",
    "Lookup",
    "Manifest",
    "OptionValue",
    "Source",
    "SpecialTokens",
    "Variant",
    "VariantPreparer",
    "cache_root",
    "entry_key",
    "lock_file",
    "lookup",
    "prepare_found",
    "prepared",
    "source_of",
    "user_lookup",
    "user_source",
]
