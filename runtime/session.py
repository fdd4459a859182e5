"""The session factory: the one place that creates onnxruntime inference sessions.

Owns the sessions of the process's one ONNX Runtime environment, EP selection, and the EPContext
cache of compiled QNN graphs.

Threads: by default each session has its own intra-op pool whose workers do not spin. A global
pool shared by every session is available (``IMAGINE_EDGE_SHARED_THREAD_POOL=1``), but onnxruntime's
Python API cannot turn spinning off for it, and spinning workers halved LLM decode speed on a busy
two-core machine (12 against 26 tokens/s, measured side by side): one request's model runs at a
time per model worker, so non-spinning per-session pools lose nothing when idle and win when the
cores are shared.

Placement policy:
- ``target="qnn"``: every node must run on QNNExecutionProvider. CPU fallback is disabled in the
  session config and at run time (``disable_fallback``); anything else raises
  :class:`ModelRunError` (phase ``load``).
- ``target="cpu"``: the CPU EP.
- ``target="auto"``: QNN when it places every node, else the CPU EP, as an explicit decision that
  is logged and kept in ``LoadedSession.fallback_reason`` for health and benchmark output.

EPContext cache: a compiled QNN graph is written next to nothing in the repository but under the
model store's cache directory, keyed by the model file's content hash, the onnxruntime and
onnxruntime-qnn versions and the provider options. Each entry is a small ``.onnx`` wrapper plus
the context binary beside it (``<name>_qnn.bin``): loading the binary from its own file is ~4.5x
faster than parsing it out of a protobuf (0.13 s against 0.60 s for a 93 MB context). Both are
compiled in a temporary folder and renamed binary first, so the wrapper, whose presence marks an
entry as complete, never points at a half-written binary.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import onnxruntime as ort

from imagine_edge.runtime.cache_dir import abandoned, orphaned, user_cache, write_source_record
from imagine_edge.runtime.graph_session import LoadedSession, session_summary
from imagine_edge.runtime.memory import one_malloc_arena
from imagine_edge.runtime.ort_names import SessionConfig
from imagine_edge.runtime.prepacked import prepacked_copy
from imagine_edge.runtime.providers import (
    CPU_EP,
    QNN_EP,
    QnnOptions,
    qnn_devices,
    qnn_unavailable_reason,
    qnn_version,
)
from imagine_edge.runtime.targets import Target
from imagine_edge.sdk.errors import ModelRunError

# LoadedSession (the session contract), session_summary and Target are defined in
# runtime/graph_session.py and runtime/targets.py; they are re-exported here beside the factory.
__all__ = [
    "LoadedSession",
    "SessionFactory",
    "Target",
    "brief_reason",
    "epcontext_dir",
    "file_digest",
    "orphaned_compilations",
    "session_summary",
    "shared_factory",
]

log = logging.getLogger(__name__)
# Before any session starts its threads: freed request memory can then go back to the system.
one_malloc_arena()


def epcontext_dir() -> Path:
    """Where compiled QNN graphs are cached (outside the repository)."""
    return user_cache("epcontext")


def orphaned_compilations(removed: Sequence[Path] = ()) -> list[Path]:
    """Cached compilations whose source graph is gone or in one of the ``removed`` folders (a
    model version since replaced), and leftovers of interrupted compiles: what ``models prune``
    removes."""
    root = epcontext_dir()
    if not root.is_dir():
        return []
    stale = [p for p in root.glob(".compiling-*") if abandoned(p)]
    for wrapper in root.glob("*.onnx"):
        record = _source_record(wrapper)
        if orphaned(record, removed):
            stale += [p for p in (wrapper, _binary(wrapper), record) if p.exists()]
    return sorted(stale)


def _binary(wrapper: Path) -> Path:
    return wrapper.with_name(wrapper.stem + "_qnn.bin")  # the name the compiler gives it


def _source_record(wrapper: Path) -> Path:
    return wrapper.with_name(wrapper.stem + ".source.json")


def file_digest(path: Path) -> str:
    """Hash of the graph and its external-data file (``<name>.data``), if any.

    Memoised per process under each file's (size, mtime, inode): a model is hashed once, not on
    every session it opens.
    """
    parts = [p for p in (path, path.with_name(path.name + ".data")) if p.is_file()]
    stamps = tuple(
        (str(p), st.st_size, st.st_mtime_ns, st.st_ino) for p in parts if (st := p.stat())
    )
    return _digest_of(stamps)


@functools.lru_cache(maxsize=64)
def _digest_of(stamps: tuple[tuple[str, int, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, *_ in stamps:
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _assignment(session: ort.InferenceSession) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for subgraph in session.get_provider_graph_assignment_info():
        counts[subgraph.ep_name] += len(subgraph.get_nodes())
    return dict(counts)


class SessionFactory:
    """Creates sessions that share one environment and one intra-op thread pool."""

    def __init__(self, intra_op_threads: int | None = None, *, shared_pool: bool = True) -> None:
        self.intra_op_threads = intra_op_threads or max(1, min(os.cpu_count() or 1, 4))
        # With a global pool, every session of the process must opt out of per-session threads,
        # including sessions third-party code creates (the quantizer, onnxruntime-genai): so the
        # pool is shared only where this factory creates every session (the server, the engine).
        self.shared_pool = shared_pool
        self._pool_ready = False
        self._lock = threading.Lock()
        self._prepack_lock = threading.Lock()

    def _use_global_pool(self) -> bool:
        with self._lock:
            if not self._pool_ready and self.shared_pool:
                try:
                    ort.set_global_thread_pool_sizes(self.intra_op_threads, 1)
                except Exception as exc:
                    log.warning("no global thread pool (%s): sessions get their own threads", exc)
                    self.shared_pool = False
                self._pool_ready = True
            return self.shared_pool

    def session_options(self, config: dict[str, str] | None = None) -> ort.SessionOptions:
        """Options of this factory's sessions, with the session config entries ``config``."""
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        entries = dict(config or {})
        if self._use_global_pool():
            so.use_per_session_threads = False
        else:
            so.intra_op_num_threads = self.intra_op_threads
            entries.setdefault(SessionConfig.ALLOW_SPINNING, "0")
        for key, value in entries.items():  # once each: onnxruntime warns on an overwrite
            so.add_session_config_entry(str(key), value)
        return so

    def create(
        self,
        model_path: str | os.PathLike[str],
        target: Target = "auto",
        *,
        qnn_options: QnnOptions | None = None,
        session_config: dict[str, str] | None = None,
        free_dimensions: dict[str, int] | None = None,
        prepacked: bool = False,
        cpu_arena: bool = True,
    ) -> LoadedSession:
        """Open ``model_path`` on ``target``; see the module docstring for the policy.

        ``cpu_arena`` False: on the CPU EP, no memory arena and no memory pattern, so every
        tensor's buffer goes back to the allocator when the run ends (for graphs whose working
        memory grows with the request, such as an image generator's at 1024x1024: an arena keeps
        its peak for good).

        ``prepacked``: on the CPU EP, run the cached optimized copy whose pre-packed weights are
        memory-mapped (runtime/prepacked.py), so further sessions of the graph share them. When
        the copy cannot be written the graph is opened as it is, with a warning.
        """
        path = Path(model_path)
        if not path.is_file():
            raise ModelRunError(f"model file {path} does not exist", phase="load")
        if target in ("qnn", "auto"):
            try:
                return self._create_qnn(path, qnn_options or QnnOptions(), session_config)
            except ModelRunError as exc:
                if target == "qnn":
                    raise
                reason = brief_reason(exc.message or "QNN failed")
                label = f"{path.parent.name}/{path.name}"  # "unet/model.onnx", not "model.onnx"
                log.warning("%s: on the CPU EP, not QNN: %s", label, reason)
                loaded = self._create_cpu(
                    path, session_config, free_dimensions, prepacked, cpu_arena
                )
                loaded.fallback_reason = reason
                return loaded
        return self._create_cpu(path, session_config, free_dimensions, prepacked, cpu_arena)

    def _create_cpu(
        self,
        path: Path,
        session_config: dict[str, str] | None,
        free_dimensions: dict[str, int] | None,
        prepacked: bool = False,
        cpu_arena: bool = True,
    ) -> LoadedSession:
        so = self.session_options(
            {SessionConfig.RECORD_EP_GRAPH_ASSIGNMENT: "1", **(session_config or {})}
        )
        so.enable_cpu_mem_arena = so.enable_mem_pattern = cpu_arena
        for name, size in (free_dimensions or {}).items():
            so.add_free_dimension_override_by_name(name, size)
        copy = self._prepacked_copy(path) if prepacked and not free_dimensions else None
        if copy is not None:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            session = ort.InferenceSession(str(copy or path), so, providers=[CPU_EP])
        except Exception as exc:
            raise ModelRunError(f"could not open {path}: {exc}", phase="load") from exc
        return LoadedSession(
            session=session,
            provider=CPU_EP,
            path=path,
            node_assignment=_assignment(session),
            prepacked=copy,
        )

    def _prepacked_copy(self, path: Path) -> Path | None:
        options = self.session_options()
        with self._prepack_lock:  # one writer per process; processes race safely (a rename)
            try:
                return prepacked_copy(path, file_digest(path), options)
            except Exception as exc:
                log.warning("%s: no pre-packed copy (%s); opening the graph as it is", path, exc)
                return None

    def _qnn_session_options(
        self, options: QnnOptions, session_config: dict[str, str] | None
    ) -> ort.SessionOptions:
        devices = qnn_devices()
        if not devices:
            raise ModelRunError(qnn_unavailable_reason() or "QNN unavailable", phase="load")
        so = self.session_options(
            {
                SessionConfig.DISABLE_CPU_EP_FALLBACK: "1",
                SessionConfig.RECORD_EP_GRAPH_ASSIGNMENT: "1",
                **(session_config or {}),
            }
        )
        # Fatal only: QNN's capability check logs every node it cannot take as an error (134 KB
        # for a float UNet); whether the graph fits is the outcome, raised as ModelRunError and
        # logged once, briefly, by ``create`` (or the caller, for target "qnn").
        so.log_severity_level = 4
        so.add_provider_for_devices(devices, options.provider_options())
        return so

    def epcontext_path(self, path: Path, options: QnnOptions) -> Path:
        """The cache file of ``path`` compiled for QNN with ``options``."""
        key = json.dumps(
            {
                "model": file_digest(path),
                "onnxruntime": ort.__version__,
                "onnxruntime_qnn": qnn_version(),
                "options": options.provider_options(),
                "context_binary": "external",
            },
            sort_keys=True,
        )
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return epcontext_dir() / f"{path.stem}-{digest}.onnx"

    def _compile(self, path: Path, options: QnnOptions, cached: Path) -> None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        so = self._qnn_session_options(options, None)
        binary = _binary(cached)
        with tempfile.TemporaryDirectory(dir=cached.parent, prefix=".compiling-") as tmp:
            staged = Path(tmp) / cached.name
            try:
                compiler = ort.ModelCompiler(so, str(path), embed_compiled_data_into_model=False)
                compiler.compile_to_file(str(staged))
                staged_binary = staged.with_name(binary.name)
                if not staged_binary.is_file():
                    raise RuntimeError(f"the compiler wrote no {binary.name}")
                write_source_record(_source_record(staged), path)
                os.replace(staged_binary, binary)
                os.replace(_source_record(staged), _source_record(cached))
                os.replace(staged, cached)
            except Exception as exc:
                raise ModelRunError(
                    f"QNN could not compile {path.name}: {exc}", phase="load"
                ) from exc
        log.info("compiled %s for QNN into %s", path.name, cached)

    def _create_qnn(
        self, path: Path, options: QnnOptions, session_config: dict[str, str] | None
    ) -> LoadedSession:
        compiled = self.epcontext_path(path, options)
        from_cache = compiled.is_file()
        if not from_cache:
            self._compile(path, options, compiled)
        so = self._qnn_session_options(options, session_config)
        try:
            session = ort.InferenceSession(str(compiled), so)
        except Exception as exc:
            raise ModelRunError(f"QNN could not load {path.name}: {exc}", phase="load") from exc
        session.disable_fallback()
        assignment = _assignment(session)
        off_npu = {ep: n for ep, n in assignment.items() if ep != QNN_EP}
        if off_npu or not assignment:
            raise ModelRunError(
                f"{path.name}: not every node runs on {QNN_EP} (assignment {assignment})",
                phase="load",
            )
        return LoadedSession(
            session=session,
            provider=QNN_EP,
            path=path,
            node_assignment=assignment,
            from_epcontext_cache=from_cache,
        )


_ORT_PREFIX: Final = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : ")
_NOT_ALL_ON_QNN: Final = "assigned to the default CPU EP, but fallback to CPU EP has been"


def brief_reason(message: str, limit: int = 200) -> str:
    """One short line of why QNN did not take a graph, for logs and health."""
    if _NOT_ALL_ON_QNN in message:
        return "the QNN EP does not support every node of the graph"
    text = " ".join(_ORT_PREFIX.sub("", message).split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


_shared: SessionFactory | None = None
_shared_lock = threading.Lock()


def shared_factory() -> SessionFactory:
    """The process-wide factory (one environment, one thread pool)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            threads = os.environ.get("IMAGINE_EDGE_THREADS")
            shared_pool = os.environ.get("IMAGINE_EDGE_SHARED_THREAD_POOL", "0") == "1"
            _shared = SessionFactory(int(threads) if threads else None, shared_pool=shared_pool)
        return _shared
