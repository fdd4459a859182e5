"""``imagine-edge models``: add your own models, prepare packaged ones, list them all.

``add SOURCE [--name N] [--type T] [--variant cpu|qnn]`` prepares a model file or folder you have
(docs/own-models.md lists the formats) and registers it under a name; ``remove NAME`` forgets
it (its prepared graphs stay in the store until ``prune``). ``prepare [NAME ...]`` prepares the
named models (default: the catalog's defaults) and prints where each landed and whether it was a
cache hit; ``list`` prints the catalog and the added models with what is prepared; ``prune
[--dry-run]`` removes older model versions and the graphs derived from them
(models/prune.py). Output goes to stdout; progress bars to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from imagine_edge.models import catalog
from imagine_edge.models.catalog import default_entries, get_entry, lookup, prepared
from imagine_edge.models.store import cache_root
from imagine_edge.models.user_models import find, list_models
from imagine_edge.sdk.errors import ImagineException
from imagine_edge.sdk.types import ModelType

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
    add = sub.add_parser("add", help="prepare a model file or folder and register it by name")
    add.add_argument("source", type=Path, metavar="SOURCE", help="the model's file or folder")
    add.add_argument("--name", help="the name to serve it by (default: from the file name)")
    add.add_argument(
        "--type",
        dest="model_type",
        choices=[t.value for t in ModelType],
        help="the model type (default: inferred from the files)",
    )
    add.add_argument("--variant", help="graph variant to build, cpu or qnn (default: cpu)")
    remove = sub.add_parser("remove", help="forget an added model (the store keeps its graphs)")
    remove.add_argument("name", metavar="NAME")
    sub.add_parser("list", help="list the catalog and the added models, and what is prepared")
    prune = sub.add_parser("prune", help="remove older model versions and their derived graphs")
    prune.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    return parser


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes < 2**30 else f"{nbytes / 2**30:.2f} GiB"


def _add(args: argparse.Namespace) -> int:
    from imagine_edge.models.adding import add_model  # imports the formats and their recipes

    start = time.perf_counter()
    model_type = None if args.model_type is None else ModelType(args.model_type)
    done = add_model(args.source, name=args.name, model_type=model_type, variant=args.variant)
    took = time.perf_counter() - start
    state = f"cache hit ({took * 1000:.0f} ms)" if done.cache_hit else f"prepared in {took:.1f} s"
    model = done.model
    _emit(f"added {model.name} [{model.model_type.value}]: {model.description}; {state}")
    _emit(f"  source {model.source} ({model.format}, {_size(model.size_bytes)})")
    _emit(f"  prepared {', '.join(model.variants)} in {model.store}")
    return 0


def _remove(name: str) -> int:
    from imagine_edge.models.adding import catalog_folder_of, remove_model

    model = remove_model(name)
    _emit(f"removed {model.name} from the registry")
    twin = catalog_folder_of(model)
    if twin is not None:
        _emit(
            f"  it was served from the catalog model {twin}'s own folder ({model.store}), "
            "which stays in the store"
        )
        return 0
    _emit(
        f"  its prepared graphs stay in the store ({model.store}): adding the same files again "
        "reuses them; delete that folder to free the space (`models prune` leaves it alone)"
    )
    return 0


def _prepare_user(name: str) -> bool:
    """Prepare an added model called ``name``; False when there is none."""
    from imagine_edge.models.adding import prepare_user_model

    model = find(name)
    if model is None:
        return False
    start = time.perf_counter()
    steps: list[str] = []
    manifest = prepare_user_model(model, on_prepare=steps.append)
    took = time.perf_counter() - start
    state = f"prepared in {took:.1f} s" if steps else f"cache hit ({took * 1000:.0f} ms)"
    _emit(f"{model.name}: {state}: {manifest.root}")
    return True


def _prepare(names: Sequence[str], variants: Sequence[str] | None) -> int:
    if not names:
        entries = default_entries()
    else:  # added models first: their names never clash with the catalog's
        entries = [get_entry(n) for n in names if not _prepare_user(n)]
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
    _list_user()
    return 0


def _list_user() -> int:
    models = list_models()
    _emit(f"added models ({len(models)}):" if models else "added models: none")
    for model in models:
        from imagine_edge.models.adding import prepared_manifest

        where = model.store if prepared_manifest(model) is not None else "not prepared"
        _emit(f"{model.name} [{model.model_type.value}] {model.description}")
        _emit(f"  source {model.source} ({model.format}, {_size(model.size_bytes)})")
        _emit(f"  prepared: {', '.join(model.variants)} ({where})")
    return 0


def _prune(dry_run: bool) -> int:
    # Imported here: it reads the onnxruntime-side caches, and the CLI must start without it.
    from imagine_edge.models.prune import remove, stale_files

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
        if args.action == "add":
            return _add(args)
        if args.action == "remove":
            return _remove(args.name)
        return _list()
    except ImagineException as e:
        sys.stderr.write(f"imagine-edge models: {e}\n")
        return 1
    except OSError as e:  # a source that cannot be read: say which, without a traceback
        sys.stderr.write(f"imagine-edge models: cannot read {e.filename}: {e.strerror}\n")
        return 1
