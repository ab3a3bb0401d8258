"""One HTTP request's engine requests (its prompts x n choices), as the route handler sees them.

`Generation.start` queues them through the engine loop as one unit and reads their updates
from one asyncio queue. Whatever way the handler ends (every choice finished, a failed
choice, a client that went away, an exception), `close()` aborts the choices still running,
so their KV blocks are freed at the engine's next step. A non-streamed request is raced
against the client's disconnect, since nothing would otherwise notice it leave.
"""
import asyncio
import time
import uuid

from starlette.requests import Request

from engine.server.engine_loop import EngineLoop, Update
from engine.server.errors import APIError


class Generation:
    def __init__(self, loop: EngineLoop, response_id: str, num_requests: int):
        self.loop, self.response_id = loop, response_id
        self.request_ids = [f"{response_id}-{i}" for i in range(num_requests)]
        self.sink: asyncio.Queue[Update] = asyncio.Queue()
        self.final: dict[str, Update] = {}  # the last update of each finished choice
        self.info = None

    @classmethod
    async def start(cls, loop: EngineLoop, prefix: str, num_requests: int, prepare) -> "Generation":
        """Queue the requests; `prepare(engine, request_ids) -> ([(prompt, params)], info)` runs
        on the engine thread. A rejected request is a 400 naming the problem, nothing queued."""
        arrival = time.perf_counter()
        generation = cls(loop, f"{prefix}-{uuid.uuid4().hex}", num_requests)

        def requests(engine):
            prompts_params, info = prepare(engine)
            return [(rid, prompt, params) for rid, (prompt, params) in zip(generation.request_ids, prompts_params)], info

        try:
            generation.info = await loop.add(requests, generation.sink, arrival)
        except (ValueError, TypeError) as e:
            raise APIError(400, str(e)) from None
        except BaseException:
            generation.close()  # e.g. cancelled while being added: whatever was added goes
            raise
        return generation

    async def updates(self):
        """Every update until all the choices have finished."""
        while len(self.final) < len(self.request_ids):
            update = await self.sink.get()
            if update.finished:
                self.final[update.request_id] = update
            yield update

    async def wait(self) -> None:
        """Until every choice has finished; a failed one is a 500 (the others are aborted)."""
        async for update in self.updates():
            if update.finish_reason == "error":
                raise APIError(500, f"the engine failed on this request: {update.error}")

    def close(self) -> None:
        unfinished = [rid for rid in self.request_ids if rid not in self.final]
        if unfinished:
            self.loop.abort(unfinished)


async def until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def completes_before_disconnect(request: Request, awaitable) -> bool:
    """Await `awaitable`; False (and it is cancelled) if the client goes away first."""
    work = asyncio.ensure_future(awaitable)
    watch = asyncio.ensure_future(until_disconnected(request))
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()  # the client left, or this handler itself was cancelled
    if work not in done:
        return False
    work.result()  # raises what the work raised
    return True
