"""The content-addressed store of prepared models.

Modules: ``lookup`` (where an entry is, its content key, and preparing it on a miss) and
``writer`` (the per-model lock and the folders built aside then renamed in). A catalog model by
name is ``models/catalog.py``'s ``lookup`` and ``prepared``; what ``imagine-edge models prune``
removes is ``models/prune.py``.
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
    locate,
    lock_file,
    prepare_found,
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
    "locate",
    "lock_file",
    "prepare_found",
    "source_of",
    "user_lookup",
    "user_source",
]
