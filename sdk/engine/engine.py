"""The engine: model cards, name resolution, one worker per model, responses, recording.

Everything that serves a request goes through :class:`Engine`, in process or behind the HTTP
server. It resolves a model name (or alias) to a :class:`~imagine_edge.models.base.ModelCard`,
checks limits, admits the request into the model's bounded queue (429 when full), and returns a
:class:`~imagine_edge.sdk.engine.calls.Call` without blocking; the model loads lazily on its own
worker thread (``sdk/engine/worker.py``), builds the response DTOs there and records the request
through the :class:`~imagine_edge.sdk.engine.recorder.Recorder`.

Name resolution (``sdk/engine/names.py``): a card's name or alias, or the official client's
default name of a type, which means that type's local default.

Parts: :class:`Engine` composes the name resolution
(:class:`~imagine_edge.sdk.engine.names.ModelIndex`), the workers
(:class:`~imagine_edge.sdk.engine.workers.WorkerRegistry`) and the usage store; it adds the
contract's endpoints, each validating its request and building the job body that runs on the
worker, and records each job when it ends. Images kept for URL responses live in
``sdk/engine/image_files.py``.

This module stays whole (about 450 lines of code): it is the table of the contract's endpoints,
one short method each, and each method's body is a closure over its request that only composes
the parts above; split across modules, the endpoints would be read in several places.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Never, Self, TypeVar

import numpy as np
from pydantic import BaseModel

from imagine_edge.models.audio import declared_seconds
from imagine_edge.models.base import (
    Embedder,
    ImageGenerator,
    ModelCard,
    Reranker,
    TextGenerator,
    Transcriber,
    Translator,
)
from imagine_edge.models.registry import model_cards
from imagine_edge.runtime.memory import memory_parts, one_malloc_arena
from imagine_edge.runtime.results import GenerationStats
from imagine_edge.runtime.sampling import fresh_seed
from imagine_edge.sdk.engine.batch_queue import BatchLimits, BatchQueues
from imagine_edge.sdk.engine.calls import Call
from imagine_edge.sdk.engine.image_files import find_image, keep_image
from imagine_edge.sdk.engine.memory_report import memory_summary
from imagine_edge.sdk.engine.names import ModelIndex
from imagine_edge.sdk.engine.observe import RequestObserver, RequestReport, current_observer
from imagine_edge.sdk.engine.recorder import (
    Recorder,
    RequestRecord,
    default_data_dir,
    history_keep_from_env,
)
from imagine_edge.sdk.engine.responses import Head, TextFold, new_id, usage_timings
from imagine_edge.sdk.engine.worker import Job, JobContext, ModelState, Outcome
from imagine_edge.sdk.engine.workers import KeepAlive, WorkerRegistry
from imagine_edge.sdk.errors import InvalidRequestError, ModelRunError
from imagine_edge.sdk.limits import Limits
from imagine_edge.sdk.paths import Endpoint
from imagine_edge.sdk.types import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    EmbeddingObject,
    EmbeddingRequest,
    EmbeddingResponse,
    HealthResponse,
    Image,
    ImageRequest,
    ImageResponse,
    ModelType,
    PingResponse,
    ReRankerObject,
    ReRankerRequest,
    ReRankerResponse,
    TranscribeResponse,
    TranslateRequest,
    TranslateResponse,
    UsageInfo,
    UsageResponse,
)

__all__ = ["Engine"]

_R = TypeVar("_R", ChatCompletionRequest, CompletionRequest)

logger = logging.getLogger(__name__)


class Engine:
    """Serves the Imagine contract from a set of model cards; thread-safe.

    It composes a :class:`ModelIndex` (``index``: which card serves a name), a
    :class:`WorkerRegistry` (``workers``: one worker per model) and a :class:`Recorder`
    (``recorder``: usage and history, opened on first use).
    """

    def __init__(
        self,
        cards: Sequence[ModelCard],
        *,
        data_dir: Path | None = None,
        recorder: Recorder | None = None,
        limits: Limits | None = None,
        max_queue: int = 16,
        userid: str = "local",
        history_keep: int | None = None,
        keep_alive: KeepAlive = None,
        embed_batch_tokens: int | None = None,
        embed_batch_requests: int | None = None,
    ) -> None:
        """``history_keep``: request bodies kept per endpoint for the history (0: none; default
        ``IMAGINE_EDGE_HISTORY_KEEP``, else 100); only used when the engine opens the store.
        ``keep_alive``: seconds a loaded model may stay idle before it unloads
        (:class:`~imagine_edge.sdk.engine.workers.WorkerRegistry`; default never).
        ``embed_batch_tokens``, ``embed_batch_requests``: how much one run of concurrent
        embedding or reranker requests may hold (``sdk/engine/batch_queue.py``; default
        ``IMAGINE_EDGE_EMBED_BATCH_TOKENS`` / ``_REQUESTS``, else 8192 padded tokens and 32
        requests; 0 tokens: each request runs alone)."""
        # What the process held before any model: health's "Python at start".
        self.memory_at_start = memory_parts()
        one_malloc_arena()  # so that memory freed after a large request can be given back
        self._history_keep = history_keep_from_env() if history_keep is None else history_keep
        if self._history_keep < 0:
            raise ValueError(f"history_keep must be >= 0, got {history_keep}")
        self.index = ModelIndex(cards)
        self.workers = WorkerRegistry(max_queue, keep_alive)
        self.batches = BatchQueues(BatchLimits.from_env(embed_batch_tokens, embed_batch_requests))
        self.limits = limits or Limits()
        self.data_dir = data_dir if data_dir is not None else default_data_dir()
        self._recorder = recorder
        self._userid = userid
        self._lock = threading.Lock()

    @classmethod
    def from_catalog(cls, names: Sequence[str] | None = None, **kwargs: Any) -> Engine:
        """An engine over the catalog's models (all, or those named), loaded on first use."""
        cards = model_cards()
        if names:
            index = ModelIndex(cards)
            cards = [index.lookup_strict(name) for name in names]
        return cls(cards, **kwargs)

    @property
    def recorder(self) -> Recorder:
        """The usage store, opened on first use."""
        with self._lock:
            if self._recorder is None:
                self._recorder = Recorder(
                    self.data_dir / "usage.sqlite3",
                    userid=self._userid,
                    history_keep=self._history_keep,
                )
            return self._recorder

    # ------------------------------------------------------------------ lifecycle

    def model_states(self) -> list[ModelState]:
        """Load state, execution provider, memory and queue of every model."""
        return self.workers.states(self.index.cards)

    def load(self, names: Sequence[str] | None = None) -> None:
        """Load models now: those named, else each type's default (they otherwise load lazily)."""
        if names is not None:
            cards = [self.index.lookup_strict(n) for n in names]
        else:
            cards = [c for t in ModelType if (c := self.index.default_card(t)) is not None]
        for card in cards:
            self.workers.worker(card).load()

    def unload(self, name: str) -> None:
        """Free a model's sessions after its admitted requests; it reloads on next use."""
        self.workers.unload(self.index.lookup_strict(name))

    def close(self) -> None:
        """Cancel all requests, stop the workers, free every model and close the store."""
        self.workers.close()
        with self._lock:
            if self._recorder is not None:
                self._recorder.close()
                self._recorder = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(
        self,
        card: ModelCard,
        endpoint: Endpoint,
        request: BaseModel | Mapping[str, Any],
        call: Call[Any, Any],
        body: Callable[[Any, Call[Any, Any], JobContext], Any],
    ) -> Call[Any, Any]:
        """Admit ``body`` to run on ``card``'s worker for ``call``; record the request when done."""
        created = time.time()
        request_json = (
            request.model_dump(mode="json", exclude_none=True)
            if isinstance(request, BaseModel)
            else dict(request)
        )

        observer = current_observer.get()

        def on_done(job: Job, out: Outcome) -> None:
            try:
                self.recorder.record(
                    RequestRecord.of(out, call.id, endpoint, card, created, request_json)
                )
            finally:
                if observer is not None:
                    _tell(observer, call.id, endpoint, card.name, out)

        self.workers.worker(card).submit(Job(call, body, on_done))
        if observer is not None:
            try:
                observer.admitted(call.id, endpoint.value, card.name)
            except Exception:
                logger.exception("the observer of request %s failed", call.id)
        return call

    # ------------------------------------------------------------------ state and history

    def ping(self) -> PingResponse:
        """The liveness answer."""
        return PingResponse(message="pong", status="ok")

    def health(self) -> HealthResponse:
        """Store and model health; there is no PostgreSQL or Redis on a device."""
        parts, states = [], self.model_states()
        for card, s in zip(self.index.cards, states, strict=True):
            detail = s.state
            if s.execution_provider is not None:
                mib = (s.resident_bytes or 0) / 2**20
                detail += f" on {s.execution_provider}, {mib:.1f} MiB"
                if s.load_rss_bytes is not None:  # measured, beside the weights' size
                    detail += f" (+{s.load_rss_bytes / 2**20:.1f} MiB resident at load)"
                if s.keep_alive is not None:
                    detail += f", unloads after {s.keep_alive:g} s idle"
                if s.kv_slots is not None:  # as llama-server's /slots: what runs now
                    kv = s.kv_slots
                    detail += f", KV slots {kv.leased} of {kv.total} running a sequence"
            if s.queued:
                detail += f", {s.running} running, {s.queued - s.running} waiting"
            detail += self.batches.stats(card.name).describe()
            parts.append(f"{s.name} ({card.model_type.value}): {detail}")
        parts.append(memory_summary(states, self.memory_at_start))
        return HealthResponse(postgres="not used", redis="not used", models="; ".join(parts))

    def usage(
        self,
        aggregation_duration: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        model: str | None = None,
    ) -> UsageResponse:
        """Usage per model and time bin; ``model`` may be an alias."""
        card = None if model is None else self.index.lookup(model)
        name = card.name if card is not None else model
        return self.recorder.usage(aggregation_duration, since, until, name)

    def history(self, endpoint: Endpoint, max_items: int = 1) -> list[list[Any]]:
        """The last ``max_items`` [response, request] pairs of ``endpoint``, newest first."""
        if not 1 <= max_items <= self.limits.max_history_items:
            raise InvalidRequestError(
                f"max_items must be in [1, {self.limits.max_history_items}], got {max_items}"
            )
        return self.recorder.history(endpoint, max_items)

    def image_path(self, file_id: str) -> Path | None:
        """The PNG file of a generated image, if it still exists."""
        return find_image(self.data_dir / "images", file_id)

    # ------------------------------------------------------------------ text generation

    def chat(
        self, request: ChatCompletionRequest
    ) -> Call[ChatCompletionStreamResponse, ChatCompletionResponse]:
        """Admit a chat completion; events are chunks when ``request.stream``."""
        card = self.index.resolve(request.model, ModelType.LLM)
        if not request.messages:
            raise InvalidRequestError("messages must contain at least one message")
        self.limits.check_count("messages", len(request.messages), self.limits.max_messages)
        request = _seeded(request)
        head, fold = Head(new_id("chatcmpl"), card.name), TextFold(seed=request.seed)
        call: Call[ChatCompletionStreamResponse, ChatCompletionResponse] = Call(
            head.id, lambda _: fold.chunk(head, "", chat=True, first=False, final=True, failed=True)
        )

        def event(text: str, first: bool, final: bool) -> ChatCompletionStreamResponse:
            return fold.chunk(head, text, chat=True, first=first, final=final)

        def body(model: TextGenerator, call: Call[Any, Any], ctx: JobContext) -> Any:
            chunks = model.generate_chat(request, ctx.cancel)
            fold.consume(chunks, call, ctx, event if request.stream else None)
            return fold.chat_response(head)

        return self._submit(card, Endpoint.CHAT, request, call, body)

    def completion(
        self, request: CompletionRequest
    ) -> Call[CompletionStreamResponse, CompletionResponse]:
        """Admit a text completion; events are chunks when ``request.stream``."""
        card = self.index.resolve(request.model, ModelType.LLM)
        request = _seeded(request)
        head, fold = Head(new_id("cmpl"), card.name), TextFold(seed=request.seed)
        call: Call[CompletionStreamResponse, CompletionResponse] = Call(
            head.id,
            lambda _: fold.chunk(head, "", chat=False, first=False, final=True, failed=True),
        )

        def event(text: str, first: bool, final: bool) -> CompletionStreamResponse:
            return fold.chunk(head, text, chat=False, first=first, final=final)

        def body(model: TextGenerator, call: Call[Any, Any], ctx: JobContext) -> Any:
            chunks = model.generate_completion(request, ctx.cancel)
            fold.consume(chunks, call, ctx, event if request.stream else None)
            return fold.completion_response(head, time.monotonic() - ctx.started)

        return self._submit(card, Endpoint.COMPLETIONS, request, call, body)

    def translate(self, request: TranslateRequest) -> Call[Never, TranslateResponse]:
        """Admit a translation (never streamed: the contract has no translate stream)."""
        card = self.index.resolve(request.model, ModelType.TRANSLATE)
        if request.stream:
            raise InvalidRequestError("translate does not stream; send stream: false")
        head, fold = Head(new_id("tr"), card.name), TextFold()

        def body(model: Translator, call: Call[Any, Any], ctx: JobContext) -> Any:
            fold.consume(model.translate(request, ctx.cancel), call, ctx, None)
            return fold.completion_response(
                head,
                time.monotonic() - ctx.started,
                cls=TranslateResponse,
                object_name="translation",
            )

        return self._submit(card, Endpoint.TRANSLATE, request, Call(head.id, None), body)

    # ------------------------------------------------------------------ embeddings, reranker

    def embeddings(self, request: EmbeddingRequest) -> Call[Never, EmbeddingResponse]:
        """Admit an embedding request for one text or a list (vectors in input order)."""
        card = self.index.resolve(request.model, ModelType.EMBEDDING)
        texts = [request.input] if isinstance(request.input, str) else list(request.input)
        if not texts:
            raise InvalidRequestError("input must be a text or a non-empty list of texts")
        self.limits.check_count("input texts", len(texts), self.limits.max_embedding_inputs)
        call_id = new_id("emb")
        call: Call[Never, EmbeddingResponse] = Call(call_id, None)
        queue = self.batches.embedder(card.name)
        ticket = queue.add(call, lambda model: model.encode(texts))

        def body(model: Embedder, call: Call[Any, Any], ctx: JobContext) -> Any:
            out, ran = queue.serve(ticket, model, ctx, lambda: model.embed(texts))
            if out.vectors.shape[0] != len(texts):
                raise ModelRunError(
                    f"{card.name} returned {out.vectors.shape[0]} vectors for {len(texts)} texts"
                )
            ctx.stats = GenerationStats(prompt_tokens=out.prompt_tokens, prefill_seconds=ran)
            data = [
                EmbeddingObject(object="embedding", embedding=vector.tolist(), index=i)
                for i, vector in enumerate(out.vectors)
            ]
            usage = UsageInfo(
                prompt_tokens=out.prompt_tokens,
                total_tokens=out.prompt_tokens,
                timings=usage_timings(ctx, ran),
            )
            return EmbeddingResponse(
                id=call_id, object="list", data=data, model=card.name, usage=usage
            )

        try:
            return self._submit(card, Endpoint.EMBEDDINGS, request, call, body)
        except BaseException:
            queue.discard(ticket)
            raise

    def rerank(self, request: ReRankerRequest) -> Call[Never, ReRankerResponse]:
        """Admit a rerank: documents sorted by descending score, ``top_n`` of them (or all)."""
        card = self.index.resolve(request.model, ModelType.RERANKER)
        docs = request.documents
        if not docs:
            raise InvalidRequestError("documents must contain at least one document")
        self.limits.check_count("documents", len(docs), self.limits.max_rerank_documents)
        call_id = new_id("rr")
        call: Call[Never, ReRankerResponse] = Call(call_id, None)
        queue = self.batches.reranker(card.name)
        ticket = queue.add(call, lambda model: model.encode_rank(request.query, docs))

        def body(model: Reranker, call: Call[Any, Any], ctx: JobContext) -> Any:
            out, ran = queue.serve(ticket, model, ctx, lambda: model.rank(request.query, docs))
            scores = np.asarray(out.scores, dtype=np.float64)
            if scores.shape != (len(docs),):
                raise ModelRunError(
                    f"{card.name} returned scores of shape {scores.shape} for {len(docs)} documents"
                )
            ctx.stats = GenerationStats(prompt_tokens=out.prompt_tokens, prefill_seconds=ran)
            # Stable sort on the negated scores: ties keep the documents' input order.
            order = np.argsort(-scores, kind="stable")[: request.top_n or len(docs)]
            data = [
                ReRankerObject(
                    index=int(i),
                    relevance_score=float(scores[i]),
                    document=docs[i] if request.return_documents else None,
                )
                for i in order
            ]
            usage = UsageInfo(
                prompt_tokens=out.prompt_tokens,
                total_tokens=out.prompt_tokens,
                timings=usage_timings(ctx, ran),
            )
            return ReRankerResponse(
                id=call_id, data=data, model=card.name, object="list", usage=usage
            )

        try:
            return self._submit(card, Endpoint.RERANKER, request, call, body)
        except BaseException:
            queue.discard(ticket)
            raise

    # ------------------------------------------------------------------ images, audio

    def images(
        self, request: ImageRequest, url_for: Callable[[str], str] | None = None
    ) -> Call[ImageResponse, ImageResponse]:
        """Admit an image generation; one event per finished image when ``request.stream``.

        With ``response_format`` 'url' the PNG is kept under the data directory and its URL is
        ``url_for(file_id)`` (a file:// URI by default).
        """
        card = self.index.resolve(request.model, ModelType.TEXT_TO_IMAGE)
        self.limits.check_image_size(request.size)
        count = self.limits.check_images(request.n)
        steps = request.num_inference_steps or 1
        if steps > self.limits.max_image_steps:
            raise InvalidRequestError(
                f"num_inference_steps must be in [1, {self.limits.max_image_steps}], got {steps}"
            )
        fmt = request.response_format or "b64_json"
        if fmt not in ("b64_json", "url"):
            raise InvalidRequestError(f"response_format must be 'b64_json' or 'url', got {fmt!r}")
        head = Head(new_id("img"), card.name)

        def response(data: list[Image], object_name: str = "text_to_image") -> ImageResponse:
            return ImageResponse(
                id=head.id, model=head.model, object=object_name, created=head.created, data=data
            )

        def body(model: ImageGenerator, call: Call[Any, Any], ctx: JobContext) -> Any:
            images = []
            for i in range(count):
                if call.cancelled:
                    break
                png = model.generate_png(request, i, ctx.cancel)
                if fmt == "url":
                    images.append(Image(url=self._save_image(f"{head.id}-{i}", png, url_for)))
                else:
                    images.append(Image(b64_json=base64.b64encode(png).decode("ascii")))
                if request.stream:
                    call.emit(response([images[-1]]))
            return response(images)

        call: Call[ImageResponse, ImageResponse] = Call(head.id, lambda _: response([], "error"))
        return self._submit(card, Endpoint.IMAGES, request, call, body)

    def _save_image(self, file_id: str, png: bytes, url_for: Callable[[str], str] | None) -> str:
        path = keep_image(self.data_dir / "images", file_id, png)
        return url_for(file_id) if url_for is not None else path.resolve().as_uri()

    def transcribe(self, audio: bytes, model: str) -> Call[Never, TranscribeResponse]:
        """Admit a transcription of an audio file (format sniffed by the model)."""
        card = self.index.resolve(model, ModelType.TRANSCRIBE)
        if not audio:
            raise InvalidRequestError("file must not be empty")
        self.limits.check_audio(audio, declared_seconds(audio))
        call_id = new_id("asr")

        def body(loaded: Transcriber, call: Call[Any, Any], ctx: JobContext) -> Any:
            text = loaded.transcribe(audio, ctx.cancel)
            return TranscribeResponse(
                id=call_id,
                text=text,
                generation_time=time.monotonic() - ctx.started,
                ts=dt.datetime.now(dt.UTC).isoformat(),
            )

        request = {"model": model, "file_bytes": len(audio)}
        return self._submit(card, Endpoint.TRANSCRIBE, request, Call(call_id, None), body)


def _seeded(request: _R) -> _R:
    """``request`` with the seed it runs with: its own, else a fresh one (docs/sampling.md), so
    that its usage and its record say how to reproduce it. Logprobs on a stream are refused
    (docs/structured.md)."""
    if request.stream and request.logprobs:
        raise InvalidRequestError("logprobs are not supported with stream: send stream false")
    if request.seed is not None:
        return request
    return request.model_copy(update={"seed": fresh_seed()})


def _tell(
    observer: RequestObserver, call_id: str, endpoint: Endpoint, model: str, out: Outcome
) -> None:
    """Hand ``observer`` the report of a finished job; its failure never reaches the request."""
    stats = out.context.stats
    decode = stats.decode_seconds
    if not decode and stats.completion_tokens:  # ended inside the decode loop: as usage does
        decode = max(0.0, out.generation_seconds - stats.prefill_seconds)
    report = RequestReport(
        id=call_id,
        endpoint=endpoint.value,
        model=model,
        status=out.status.value,
        prompt_tokens=stats.prompt_tokens,
        completion_tokens=stats.completion_tokens,
        queue_seconds=out.queue_seconds,
        load_seconds=out.load_seconds,
        prefill_seconds=stats.prefill_seconds,
        decode_seconds=decode,
        generation_seconds=out.generation_seconds,
        error=None if out.error is None else type(out.error).__name__,
    )
    try:
        observer.finished(report)
    except Exception:
        logger.exception("the observer of request %s failed", call_id)
