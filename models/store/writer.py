"""Writing into the model store: the per-model lock, and folders built aside then renamed in.

Every step of a preparation writes into a temporary ``.tmp-*`` folder inside the store and renames
it into place when complete, so a reader sees a complete folder or none; an interrupted
preparation leaves only a ``.tmp-*`` folder, which the next one deletes. A base is a new model
folder (with its manifest); a variant is a new subfolder, then the manifest is replaced
atomically to list it. The caller (:func:`imagine_edge.models.store.prepare_found`) holds the lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from imagine_edge.models.entry import CatalogEntry
from imagine_edge.models.manifest import TMP_PREFIX, Manifest, Source
from imagine_edge.sdk.errors import ModelNotFoundError

__all__ = ["add_variant", "clean_stale_tmp", "locked", "write_base"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (advisory; a no-op where fcntl is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            import fcntl  # POSIX only
        except ImportError:  # Windows: the atomic renames still keep the store consistent
            yield
            return
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def clean_stale_tmp(root: Path, stem: str) -> None:
    """Delete what interrupted preparations of ``stem`` left in ``root``."""
    for p in root.glob(f"{TMP_PREFIX}{stem}-*"):
        logger.info("removing an interrupted preparation: %s", p)
        shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def _tmp_dir(root: Path, stem: str) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{stem}-", dir=root))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_base(entry: CatalogEntry, source: Source, weights: Path, final: Path) -> Manifest:
    """Run the entry's base recipe and rename its folder, with a manifest, to ``final``."""
    root = final.parent
    with _tmp_dir(root, final.name) as tmp:
        base = entry.prepare_base(weights, tmp)
        manifest = Manifest(
            root=tmp,
            name=entry.name,
            model_type=entry.model_type.value,
            key=final.name.rsplit("-", 1)[-1],
            recipe_version=entry.recipe_version,
            options=dict(entry.options),
            source=source,
            licence=entry.licence,
            model_card=entry.model_card,
            tokenizer=tmp / base.tokenizer,
            chat_template=base.chat_template,
            special_tokens=base.special_tokens,
            context_length=base.context_length,
            architecture=base.architecture,
            float_weights=None if base.float_weights is None else tmp / base.float_weights,
            variants={},
            sampling_defaults=entry.sampling_defaults or base.sampling_defaults,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        manifest.save()
        os.rename(tmp, final)  # atomic; the lock guarantees ``final`` does not exist yet
    return Manifest.load(final)


def add_variant(entry: CatalogEntry, manifest: Manifest, name: str) -> Manifest:
    """Build variant ``name`` into its subfolder and list it in the manifest; the new manifest."""
    try:
        preparer = entry.variants[name]
    except KeyError:
        raise ModelNotFoundError(
            f"model {entry.name!r} has no variant {name!r}; valid: {sorted(entry.variants)}"
        ) from None
    final = manifest.root / name
    clean_stale_tmp(manifest.root, name)
    shutil.rmtree(final, ignore_errors=True)  # not in the manifest, so a leftover of a crash
    with _tmp_dir(manifest.root, name) as tmp:
        variant = preparer(manifest, tmp)
        os.rename(tmp, final)
    # Re-root the variant's paths from the temporary folder to the final one.
    variant = replace(
        variant,
        dir=final,
        graphs={
            r: replace(g, path=final / g.path.relative_to(tmp)) for r, g in variant.graphs.items()
        },
    )
    updated = replace(manifest, variants={**manifest.variants, name: variant})
    updated.save()
    return Manifest.load(manifest.root)
