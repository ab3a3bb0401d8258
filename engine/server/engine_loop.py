"""The engine loop: one thread owns the Engine and drives `step()` for every client.

The Engine is not thread-safe, so everything that touches it (adding and aborting requests,
the tokenizer, stepping, reading its counters) runs on this one thread. The asyncio front end
hands it jobs through a FIFO queue: `await loop.call(fn)` runs `fn(engine)` between two steps
and returns its result or raises its exception; `loop.add(...)` queues a client's requests and
routes their outputs to that client's asyncio queue (its sink), delivering each step's
outputs in one `call_soon_threadsafe`. While requests are unfinished the thread alternates
"run every queued job, take one step"; when idle it sleeps on the job queue.

Each output is copied into an `Update` here (its text read on this thread, so a lazily
detokenized text is decoded where the tokenizer lives). A request that fails inside the
engine finishes with finish_reason "error"; if `step()` itself raises, every live request
fails with that message and is aborted, and the loop goes on serving new requests.
"""
import asyncio
import concurrent.futures
import logging
import queue
import threading
from dataclasses import dataclass

from engine.detokenizer import decode_texts

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Update:
    """A request's state after a step (cumulative, like RequestOutput)."""

    request_id: str
    token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None
    error: str | None = None
    logprobs: list[dict[int, float]] | None = None
    num_prompt_tokens: int = 0

    @classmethod
    def of(cls, out) -> "Update":
        return cls(out.request_id, out.token_ids, out.text, out.finished, out.finish_reason,
                   out.error, out.logprobs, len(out.prompt_token_ids))

    @classmethod
    def failure(cls, request_id: str, message: str) -> "Update":
        return cls(request_id, [], "", True, "error", message)


@dataclass
class _Live:
    sink: asyncio.Queue
    tokens_counted: int = 0


class EngineLoop:
    def __init__(self, engine, metrics):
        self.engine, self.metrics = engine, metrics
        self.stats = engine.stats()  # the latest Engine.stats(), refreshed after every step
        self._jobs = queue.SimpleQueue()  # (fn, concurrent Future or None), or None to wake a stop
        self._live: dict[str, _Live] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None

    # ---- the front end's side (asyncio thread) ------------------------------------------

    def start(self) -> None:
        """Start the thread; outputs are delivered to the running asyncio loop."""
        self._event_loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """End the thread after its current step; jobs still queued fail."""
        self._stopping.set()
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job[1] is not None and job[1].set_running_or_notify_cancel():
                job[1].set_exception(RuntimeError("the server is shutting down"))

    @property
    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping.is_set()

    async def call(self, fn):
        """Run fn(engine) on the engine thread between two steps; its result or exception."""
        if not self.healthy:
            raise RuntimeError("the engine loop is not running")
        future = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return await asyncio.wrap_future(future)

    async def add(self, prepare, sink: asyncio.Queue, arrival_time: float):
        """Queue a client's requests as one unit; returns what `prepare` returned with them.

        `prepare(engine) -> ([(request_id, prompt, params), ...], info)` runs on the engine
        thread (tokenization belongs there). If any request is rejected, those already added
        are aborted and the error (ValueError / TypeError naming the problem) is raised here.
        Their outputs go to `sink` as `Update`s.
        """
        def add_all(engine):
            requests, info = prepare(engine)
            added = []
            try:
                for request_id, prompt, params in requests:
                    engine.add_request(prompt, params, request_id=request_id, arrival_time=arrival_time)
                    added.append(request_id)
            except BaseException:
                for request_id in added:
                    engine.abort_request(request_id)
                raise
            for request_id in added:
                self._live[request_id] = _Live(sink)
            return info

        return await self.call(add_all)

    def abort(self, request_ids) -> None:
        """Abort those of `request_ids` still unfinished; returns at once (any thread)."""
        request_ids = list(request_ids)
        self._jobs.put((lambda engine: self._abort(engine, request_ids), None))

    # ---- the engine thread ----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._run_jobs(wait=not self.engine.has_unfinished())
            if self._stopping.is_set():
                return
            if self.engine.has_unfinished():
                self._step()
            self.stats = self.engine.stats()

    def _run_jobs(self, wait: bool) -> None:
        """Run every queued job; first wait for one when the engine has nothing to do."""
        try:
            job = self._jobs.get(block=wait)
            while job is not None:
                self._run_job(*job)
                job = self._jobs.get_nowait()
        except queue.Empty:
            pass

    def _run_job(self, fn, future) -> None:
        if future is not None and not future.set_running_or_notify_cancel():
            return  # its client went away before it ran
        try:
            result = fn(self.engine)
        except BaseException as e:
            if future is None:
                logger.exception("engine-loop job failed")
            else:
                future.set_exception(e)
        else:
            if future is not None:
                future.set_result(result)

    def _abort(self, engine, request_ids) -> None:
        for request_id in request_ids:
            if self._live.pop(request_id, None) is not None:
                engine.abort_request(request_id)
                self.metrics.on_finished("abort")

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as e:  # a failed batch must not take the server down
            logger.exception("engine step failed")
            self._fail_all(f"the engine failed on this batch: {type(e).__name__}: {e}")
            return
        try:
            decode_texts([out for out in outputs if out.request_id in self._live])
        except Exception:  # noqa: BLE001 - each output is then read, and fails, on its own
            logger.exception("decoding a step's texts in one call failed")
        deliveries = []
        for out in outputs:
            live = self._live.get(out.request_id)
            if live is None:
                continue
            update = self._read(out)
            self.metrics.on_tokens(len(update.token_ids) - live.tokens_counted)
            live.tokens_counted = len(update.token_ids)
            if update.finished:
                del self._live[out.request_id]
                self.metrics.on_finished(update.finish_reason, out if update.error is None else None)
            deliveries.append((live.sink, update))
        self._deliver(deliveries)

    def _read(self, out) -> Update:
        """The output as an Update; reading it (its text is decoded lazily) may fail, and then
        only this request fails."""
        try:
            return Update.of(out)
        except Exception as e:
            logger.exception("reading the output of %s failed", out.request_id)
            if not out.finished:
                self.engine.abort_request(out.request_id)
            return Update.failure(out.request_id, f"{type(e).__name__}: {e}")

    def _fail_all(self, message: str) -> None:
        deliveries = []
        for request_id, live in self._live.items():
            try:
                self.engine.abort_request(request_id)
            except Exception:
                logger.exception("aborting %s after a failed step failed too", request_id)
            self.metrics.on_finished("error")
            deliveries.append((live.sink, Update.failure(request_id, message)))
        self._live.clear()
        self._deliver(deliveries)

    def _deliver(self, deliveries) -> None:
        if deliveries:
            self._event_loop.call_soon_threadsafe(_put_all, deliveries)


def _put_all(deliveries) -> None:
    for sink, update in deliveries:
        sink.put_nowait(update)
