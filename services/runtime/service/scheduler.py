"""A bounded queue in front of the engine: continuous batching where the engine has a core.

One worker thread LOADS the engine (a CUDA context is current per thread, and the thread
that created it is the one that should launch on it) and then serves:

  * batched (an engine with a batching core: the numpy backend): each admitted request
    runs its decode logic on a thread of its own, up to max_num_seqs at once, and the
    worker runs the core's steps (engine/core.py), one forward pass for all of them;
  * one at a time (an engine whose runner keeps a cache per sequence: CUDA graphs): the
    worker calls engine.generate for one request after the other.

The servicer and the HTTP front only use `submit`, the handle and `ready`.

Queue rules (the ones a client can observe):
  * at most `max_queue` requests wait to be admitted; one more raises QueueFull
    (RESOURCE_EXHAUSTED / 429);
  * a request cancelled or past its deadline while it waits is dropped without running;
  * a running request stops at the next token once cancelled or expired (should_stop);
  * queue time (accepted -> started) is measured here and fills Timings.queue_ms.

Tokens reach asyncio through `loop.call_soon_threadsafe`, so `on_token` runs on the
event loop of the caller of `submit`, in order, and before the handle's future resolves.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from typing import Callable

from inloop.services.common import metrics
from inloop.services.common.logging import get_logger
from inloop.services.contract.errors import InvalidRequest
from inloop.services.contract.generation import GenerateRequest, GenerateResult, TokenEvent

log = get_logger(__name__)
DEFAULT_MAX_QUEUE = 16


class QueueFull(RuntimeError):
    """The wait queue is at max_queue; retry later."""


class NotReady(RuntimeError):
    """The engine is still loading (or failed to load), or the scheduler is closed."""


class RequestCancelled(RuntimeError):
    """Dropped without running: the caller cancelled while it waited."""


class RequestExpired(RuntimeError):
    """Dropped without running: its deadline passed while it waited."""


class RequestHandle:
    """One submitted request: cancel it, or wait for its GenerateResult."""

    def __init__(self, scheduler: "Scheduler", req: GenerateRequest,
                 on_token: Callable[[TokenEvent], None] | None, deadline: float | None):
        self.request = req
        self.deadline = deadline  # time.monotonic() value, or None for no deadline
        self.submitted_at = time.monotonic()
        self.future: concurrent.futures.Future[GenerateResult] = concurrent.futures.Future()
        self._scheduler = scheduler
        self._on_token = on_token
        self._cancelled = threading.Event()
        # asyncio.wrap_future cancels this future when the awaiting task is cancelled;
        # treat that exactly like cancel(), so a dropped awaiter never leaves work behind.
        self.future.add_done_callback(lambda f: f.cancelled() and self.cancel())

    def cancel(self) -> None:
        """Stop this request: dropped if still queued, stopped at the next token if running."""
        if not self._cancelled.is_set():
            self._cancelled.set()
            self._scheduler._drop(self)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def expired(self, now: float | None = None) -> bool:
        return self.deadline is not None and (time.monotonic() if now is None else now) >= self.deadline

    def should_stop(self) -> bool:
        return self.cancelled or self.expired()

    async def wait(self) -> GenerateResult:
        """The result on the caller's event loop (raises what the request raised)."""
        return await asyncio.wrap_future(self.future)

    def _emit(self, event: TokenEvent) -> None:
        if self._on_token is not None:
            self._on_token(event)

    def _resolve(self, result: GenerateResult | None = None, error: BaseException | None = None) -> None:
        _settle(self.future, result, error)


class Scheduler:
    """A bounded FIFO queue in front of one worker thread that owns the engine."""

    def __init__(self, load_engine: Callable[[], object], max_queue: int = DEFAULT_MAX_QUEUE):
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_queue = max_queue
        self.ready: concurrent.futures.Future = concurrent.futures.Future()  # -> the engine
        self._load_engine = load_engine
        self._engine = None
        self._queue: collections.deque[RequestHandle] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._running: RequestHandle | None = None
        self._active: set[RequestHandle] = set()   # admitted into the batch (batched mode)
        self._thread = threading.Thread(target=self._work, name="runtime-worker", daemon=True)

    # ---- caller side --------------------------------------------------------------
    def start(self) -> "Scheduler":
        self._thread.start()
        return self

    @property
    def engine(self):
        """The loaded engine (raises NotReady before `ready` resolves)."""
        if self._engine is None:
            raise NotReady("the model is still loading")
        return self._engine

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def depth(self) -> int:
        """Requests waiting plus the one running (the inloop_queue_depth gauge reads this)."""
        with self._cond:
            return len(self._queue) + (self._running is not None) + len(self._active)

    def submit(self, req: GenerateRequest, on_token: Callable[[TokenEvent], None] | None = None,
               timeout_s: float | None = None) -> RequestHandle:
        """Queue `req`; `on_token` runs on the caller's event loop when there is one.

        Raises NotReady before the engine is loaded or after close, QueueFull when
        max_queue requests already wait.
        """
        handle = RequestHandle(self, req, _on_loop(on_token),
                               None if timeout_s is None else time.monotonic() + timeout_s)
        with self._cond:
            if self._closed:
                raise NotReady("the runtime is shutting down")
            if self._engine is None:
                raise NotReady("the model is still loading")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"the runtime queue is full ({self.max_queue} waiting); retry later")
            self._queue.append(handle)
            self._cond.notify()
        return handle

    def close(self, timeout_s: float = 10.0) -> None:
        """Fail the waiting requests, stop the running one, join the worker."""
        with self._cond:
            self._closed = True
            waiting, running = list(self._queue), [self._running, *self._active]
            self._queue.clear()
            self._cond.notify_all()
        for handle in waiting:
            handle._cancelled.set()
            handle._resolve(error=NotReady("the runtime is shutting down"))
        for handle in running:
            if handle is not None:
                handle.cancel()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _drop(self, handle: RequestHandle) -> None:
        with self._cond:
            try:
                self._queue.remove(handle)
            except ValueError:  # already running or finished: should_stop() handles it
                return
        handle._resolve(error=RequestCancelled("cancelled while queued"))

    # ---- worker side --------------------------------------------------------------
    def _work(self) -> None:
        try:
            engine = self._load_engine()
        except BaseException as exc:  # the CLI reports it and exits; nothing to serve
            _settle(self.ready, error=exc)
            return
        with self._cond:
            self._engine = engine
        metrics.observe_gpu_memory(engine)  # weights and graphs are resident now (cuda only)
        core = getattr(engine, "core", None)
        if core is not None:
            with self._cond:  # one lock for the queue and the core, so a submit wakes the loop
                core.cond = self._cond
                core.loop_thread = threading.current_thread()
            metrics.track_batching(core.counts, self.queued)
            _settle(self.ready, result=engine)
            try:
                self._serve_batched(engine, core)
            finally:  # no loop any more: the core runs a caller's feeds on its own thread again
                with self._cond:
                    core.loop_thread = None
            return
        _settle(self.ready, result=engine)
        while (handle := self._next()) is not None:
            try:
                self._run(engine, handle)
            finally:
                with self._cond:
                    self._running = None

    def _serve_batched(self, engine, core) -> None:
        """Admit queued requests while fewer than max_num_seqs run, and step the core.
        After close, the admitted requests (cancelled) run to their next token and end."""
        with self._cond:
            while True:
                while self._queue and len(self._active) < core.max_num_seqs and not self._closed:
                    handle = self._queue.popleft()
                    self._active.add(handle)
                    threading.Thread(target=self._run_admitted, args=(engine, handle), daemon=True,
                                     name=f"seq-{handle.request.request_id or id(handle)}").start()
                if self._closed and not self._active:
                    return
                if not core.step():
                    self._cond.wait(0.1)

    def _run_admitted(self, engine, handle: RequestHandle) -> None:
        try:
            self._run(engine, handle)
        finally:
            with self._cond:
                self._active.discard(handle)
                self._cond.notify_all()

    def _next(self) -> RequestHandle | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            self._running = self._queue.popleft()
            return self._running

    def _run(self, engine, handle: RequestHandle) -> None:
        started = time.monotonic()
        queue_ms = (started - handle.submitted_at) * 1e3
        if handle.cancelled or handle.expired(started):
            why = "cancelled" if handle.cancelled else "expired"
            log.info("request_dropped", request_id=handle.request.request_id, reason=why,
                     queue_ms=round(queue_ms, 2))
            handle._resolve(error=RequestCancelled("cancelled while queued") if handle.cancelled else
                            RequestExpired(f"the deadline passed after {queue_ms:.0f} ms in the queue"))
            return
        try:
            result = engine.generate(handle.request, on_token=handle._emit, should_stop=handle.should_stop)
        except InvalidRequest as exc:
            handle._resolve(error=exc)
            return
        except Exception as exc:  # one bad request must not end the worker
            log.exception("generate_failed", request_id=handle.request.request_id)
            handle._resolve(error=exc)
            return
        result.timings.queue_ms = queue_ms
        # The engine times from its own start; a client's TTFT starts when we accepted it.
        result.timings.ttft_ms += queue_ms
        _log_done(handle.request, result)
        metrics.observe_generation(str(engine.info.get("name", "")), handle.submitted_at, result)
        metrics.observe_gpu_memory(engine)  # on this thread: it has the device context current
        handle._resolve(result)


def _settle(future: concurrent.futures.Future, result=None, error: BaseException | None = None) -> None:
    """Set a future from the worker, unless its awaiter cancelled it (nobody listens then)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


def _log_done(req: GenerateRequest, result: GenerateResult) -> None:
    t = result.timings
    log.info("request_done", request_id=req.request_id, finish_reason=result.finish_reason,
             prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
             queue_ms=round(t.queue_ms, 2), prefill_ms=round(t.prefill_ms, 2),
             decode_ms=round(t.decode_ms, 2), ttft_ms=round(t.ttft_ms, 2))


def _on_loop(on_token: Callable[[TokenEvent], None] | None) -> Callable[[TokenEvent], None] | None:
    """Wrap on_token so the worker thread hands each event to the caller's event loop."""
    if on_token is None:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # a plain thread caller: call it on the worker thread
        return on_token

    def post(event: TokenEvent) -> None:
        try:
            loop.call_soon_threadsafe(on_token, event)
        except RuntimeError:  # the loop is closed: the caller is gone
            pass
    return post
