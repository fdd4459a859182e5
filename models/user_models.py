"""The registry of user-added models (``imagine-edge models add``): one small JSON file.

``<data dir>/models.json`` (the data dir is ``$IMAGINE_EDGE_DATA_DIR`` or the user's data
directory) lists each added model: its name, type, the format that read it, the source path, what
it is (architecture, precision), its size, and the store folder its graphs were prepared into.
The prepared graphs themselves live in the model store (``models/store/``), keyed by content, as
the catalog's do; the registry is only the names. Every change takes an exclusive lock on a file
beside it, re-reads it, and writes it as a temporary file that is fsynced and renamed in, so two
processes adding at once both land and a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from imagine_edge.models.store.writer import locked
from imagine_edge.runtime.cache_dir import user_data
from imagine_edge.sdk.errors import InvalidRequestError, ModelNotFoundError
from imagine_edge.sdk.types import ModelType

__all__ = [
    "REGISTRY_FILE",
    "UserModel",
    "find",
    "list_models",
    "register",
    "registry_path",
    "unregister",
]

REGISTRY_FILE: Final = "models.json"
_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class UserModel:
    """One added model. ``store`` is the prepared folder; ``variants`` those it was prepared
    with (served by the model type's usual loader)."""

    name: str
    model_type: ModelType
    format: str
    source: str
    description: str
    size_bytes: int
    store: str
    variants: tuple[str, ...]
    added: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["model_type"] = self.model_type.value
        data["variants"] = list(self.variants)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserModel:
        return cls(
            name=str(data["name"]),
            model_type=ModelType(data["model_type"]),
            format=str(data["format"]),
            source=str(data["source"]),
            description=str(data.get("description", "")),
            size_bytes=int(data.get("size_bytes", 0)),
            store=str(data["store"]),
            variants=tuple(str(v) for v in data.get("variants", ())),
            added=str(data.get("added", "")),
        )


def registry_path() -> Path:
    """The registry file: ``models.json`` in the data directory."""
    return user_data() / REGISTRY_FILE


def _lock_path() -> Path:
    return registry_path().with_name(f".{REGISTRY_FILE}.lock")


def _read() -> dict[str, UserModel]:
    path = registry_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise InvalidRequestError(
            f"the model registry {path} is unreadable ({e}); fix or remove it"
        ) from e
    try:
        models = [UserModel.from_json(m) for m in raw["models"]]
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidRequestError(
            f"the model registry {path} is not a registry this version reads ({e})"
        ) from e
    return {m.name: m for m in models}


def _write(models: dict[str, UserModel]) -> None:
    """Temporary file beside the registry, fsynced, renamed over it, then the folder fsynced."""
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"version": _VERSION, "models": [m.to_json() for m in models.values()]}
    fd, tmp = tempfile.mkstemp(prefix=f".{REGISTRY_FILE}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform can open a folder
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _transaction() -> Iterator[dict[str, UserModel]]:
    """The registry under the lock; what the block leaves in the dict is written back."""
    with locked(_lock_path()):
        models = _read()
        before = dict(models)
        yield models
        if models != before:
            _write(models)


def list_models() -> list[UserModel]:
    """Every added model, in the order they were added."""
    return list(_read().values())


def find(name: str) -> UserModel | None:
    """The added model called ``name`` (case-insensitive), if any."""
    wanted = name.strip().lower()
    return next((m for m in _read().values() if m.name.lower() == wanted), None)


def register(model: UserModel) -> None:
    """Add ``model``; the same name may be re-added only from the same source (an update)."""
    with _transaction() as models:
        old = next((m for m in models.values() if m.name.lower() == model.name.lower()), None)
        if old is not None and old.source != model.source:
            raise InvalidRequestError(
                f"the name {model.name!r} is already taken by a model added from {old.source}; "
                "choose another with --name, or `imagine-edge models remove` it first"
            )
        if old is not None:
            del models[old.name]
        models[model.name] = model


def unregister(name: str) -> UserModel:
    """Remove ``name`` from the registry (its prepared graphs stay in the store); the entry."""
    with _transaction() as models:
        old = next((m for m in models.values() if m.name.lower() == name.strip().lower()), None)
        if old is None:
            known = ", ".join(models) or "none"
            raise ModelNotFoundError(f"no added model is called {name!r}; added models: {known}")
        del models[old.name]
    return old
