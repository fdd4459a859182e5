"""Engine-facing model cards built from the catalog, with each model type's loader.

A catalog entry (``models/catalog.py``) says how to prepare a model; this module says how to load
a prepared one: ``LOADERS`` maps an entry's name to ``"module:function"``, a function taking the
model's :class:`~imagine_edge.models.store.Manifest` and returning an object that satisfies the
model type's protocol (``models/base.py``). Loaders are imported only when a model is first used.

A model that is not prepared yet is prepared in a child process (``imagine-edge models prepare``)
rather than in the serving one: preparation imports torch and runs the quantizer's own ONNX
Runtime sessions, neither of which belongs in a process that serves requests and shares one
thread pool among its sessions.
"""

from __future__ import annotations

import functools
import importlib
import logging
import subprocess
from collections.abc import Callable
from typing import Final

from imagine_edge.models.base import LoadedModel, ModelCard
from imagine_edge.models.catalog import CATALOG, CatalogEntry, lookup, prepared
from imagine_edge.models.store import Manifest
from imagine_edge.models.user_models import UserModel, list_models
from imagine_edge.python_command import python_module
from imagine_edge.sdk.errors import ImagineException, ModelRunError

__all__ = [
    "LOADERS",
    "catalog_cards",
    "ensure_prepared",
    "ensure_user_prepared",
    "load_entry",
    "load_user_model",
    "model_cards",
    "user_cards",
]

log = logging.getLogger(__name__)

LOADERS: Final[dict[str, str]] = {
    "smollm2-135m-instruct": "imagine_edge.models.llm:load_chat_model",
    "gemma3-270m": "imagine_edge.models.llm:load_chat_model",
    "tiny-sd-random": "imagine_edge.models.text_to_image.pipeline:load_image_generator",
    "whisper-tiny-en": "imagine_edge.models.transcribe:load_transcriber",
    "whisper-base": "imagine_edge.models.transcribe:load_transcriber",
    "bergamot-en-pt-tiny": "imagine_edge.models.translate:load_translator",
    "bergamot-pt-en-tiny": "imagine_edge.models.translate:load_translator",
    "all-minilm-l6-v2": "imagine_edge.models.embedding:load_embedder",
    "minilm-bi-encoder-reranker": "imagine_edge.models.reranker:load_bi_encoder_reranker",
}
# Models whose weights are random: /models and their cards say so.
UNTRAINED: Final = frozenset({"tiny-sd-random"})


def _loader(name: str) -> Callable[[Manifest], LoadedModel]:
    module, _, function = LOADERS[name].partition(":")
    loader: Callable[[Manifest], LoadedModel] = getattr(importlib.import_module(module), function)
    return loader


def _prepare_in_child(name: str) -> None:
    log.info("%s is not prepared yet: preparing it now (once)", name)
    done = subprocess.run(
        python_module("imagine_edge", "models", "prepare", name),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ModelRunError(f"preparing {name} failed: {done.stderr.strip()[-2000:]}", phase="load")


def ensure_prepared(entry: CatalogEntry) -> None:
    """Prepare ``entry``'s default variants (in a child process) unless the store has them."""
    found = lookup(entry.name)
    missing = found.manifest is None or any(
        v not in found.manifest.variants for v in entry.default_variants
    )
    if missing:
        _prepare_in_child(entry.name)


def load_entry(entry: CatalogEntry) -> LoadedModel:
    """Load ``entry``'s prepared model, preparing it first (in a child process) if needed."""
    ensure_prepared(entry)
    return _loader(entry.name)(prepared(entry.name))


def _user_manifest(model: UserModel) -> Manifest:
    """An added model's manifest; prepared again (in a child process) if the store lost it."""
    from imagine_edge.models.adding import prepare_user_model, prepared_manifest

    manifest = prepared_manifest(model)
    if manifest is None:
        _prepare_in_child(model.name)
        manifest = prepare_user_model(model)  # now a cache hit
    return manifest


def ensure_user_prepared(model: UserModel) -> None:
    """Prepare an added model unless the store still has it."""
    _user_manifest(model)


def load_user_model(model: UserModel) -> LoadedModel:
    """Load an added model with its format's loader (the model type's usual one)."""
    from imagine_edge.models.formats import get_format

    manifest = _user_manifest(model)
    module, _, function = get_format(model.format).loader.partition(":")
    loader: Callable[[Manifest], LoadedModel] = getattr(importlib.import_module(module), function)
    return loader(manifest)


def user_cards() -> list[ModelCard]:
    """One card per model in the user registry (``imagine-edge models add``)."""
    return [
        ModelCard(
            name=model.name,
            model_type=model.model_type,
            description=f"{model.description} (added from {model.source})",
            licence="as given by the model's source",
            load=functools.partial(load_user_model, model),
            prepare=functools.partial(ensure_user_prepared, model),
            aliases=(),
            trained=True,
            default=False,
        )
        for model in _registered()
    ]


def _registered() -> list[UserModel]:
    try:
        return list_models()
    except ImagineException as e:  # a damaged registry must not stop the catalog's models
        log.warning("ignoring the added models: %s", e)
        return []


def model_cards() -> list[ModelCard]:
    """One card per catalog entry that has a loader, then one per added model (their names
    never clash: ``models add`` refuses catalog names); loading happens on first use."""
    return catalog_cards() + user_cards()


def catalog_cards() -> list[ModelCard]:
    """One card per catalog entry that has a loader."""
    return [
        ModelCard(
            name=entry.name,
            model_type=entry.model_type,
            description=entry.description,
            licence=entry.licence,
            load=functools.partial(load_entry, entry),
            prepare=functools.partial(ensure_prepared, entry),
            aliases=entry.aliases,
            trained=entry.name not in UNTRAINED,
            default=entry.default,
        )
        for entry in CATALOG
        if entry.name in LOADERS
    ]
