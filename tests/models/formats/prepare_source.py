"""Preparing a user-supplied source through its ``SourceFormat`` into a test folder.

What ``imagine-edge models add`` does, without the registry: the base into a folder with its
manifest, then each variant into a subfolder listed in the manifest. Tests use it to prepare and
load each format's artifact exactly as the store's loaders will see it.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from imagine_edge.models.formats.base import SourceFormat
from imagine_edge.models.store import Manifest, Source


def prepare_source(
    fmt: SourceFormat, path: Path, root: Path, variants: tuple[str, ...]
) -> Manifest:
    detection = fmt.detect(path)
    assert detection is not None, f"{fmt.name} did not claim {path}"
    digest = hashlib.sha256()
    for f in detection.files:
        digest.update(f.read_bytes())
    base_dir = root / "base"
    base_dir.mkdir(parents=True)
    base = fmt.prepare_base(path, base_dir)
    manifest = Manifest(
        root=base_dir,
        name=f"user-{fmt.name}",
        model_type=fmt.model_type.value,
        key=digest.hexdigest()[:16],
        recipe_version=fmt.recipe_version,
        options={},
        source=Source(package="", version="", file=str(path), sha256=digest.hexdigest()),
        licence="",
        model_card=detection.description,
        tokenizer=base_dir / base.tokenizer,
        chat_template=base.chat_template,
        special_tokens=base.special_tokens,
        context_length=base.context_length,
        architecture=base.architecture,
        float_weights=None if base.float_weights is None else base_dir / base.float_weights,
        variants={},
    )
    manifest.save()
    for name in variants:
        out = base_dir / name
        out.mkdir()
        variant = fmt.variants[name](manifest, out)
        manifest = replace(manifest, variants={**manifest.variants, name: variant})
        manifest.save()
    return Manifest.load(base_dir)
