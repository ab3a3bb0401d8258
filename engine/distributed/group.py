"""WorkerGroup: rank 0's handle on the other ranks: it sends them work, notices when one
fails, and ends them.

Failure is never a hang. Rank 0 waits for a control operation in short polls and checks
between polls (POLL) that every worker process is alive;
a collective with a dead peer fails at once on gloo; a worker that raises sends its
traceback through its pipe before exiting. Any error while the ranks run a step leaves them
out of step, so the group is then broken for good: it ends the workers, and every later
call raises the same TensorParallelError naming what happened (a worker's exit status and
last error line, or rank 0's own error). It is no RuntimeError on purpose: code that falls
back from a failed operation (the runner when a CUDA graph cannot be captured) must not
carry on with ranks that are out of step.

Shutdown (close(), garbage collection of the group, or interpreter exit) sends STOP, waits
for the workers to exit, ends those that do not, and destroys the process groups it
created. Workers also exit by themselves when rank 0's process dies (engine.distributed.worker).
"""
import signal
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import wait as wait_for_sentinels

import torch.distributed as dist

from engine.distributed import messages
from engine.distributed.parallel import all_gather_single
from engine.distributed.rank import COLLECTIVE_TIMEOUT, START_TIMEOUT

POLL = timedelta(seconds=0.1)
STOP_TIMEOUT = timedelta(seconds=10)  # how long a worker has to exit after STOP before it is terminated


class TensorParallelError(Exception):
    """The tensor-parallel group failed (a worker died, or the ranks fell out of step); the
    engine cannot run any more."""


@dataclass
class _State:
    """What shutdown needs, kept apart from the WorkerGroup so that a finalizer can hold it."""

    processes: list  # spawned workers (empty under torchrun)
    error_pipes: list  # one receiving end per process
    owns_groups: bool  # whether this engine created the process groups (then it destroys them)
    control: object = None  # the gloo control group, once the ranks have met
    broken: str | None = None
    closed: bool = False
    errors: dict = field(default_factory=dict)  # rank -> last error text a worker sent


class WorkerGroup:
    """`processes` (with their error pipes) are the spawned workers, none under torchrun;
    `attach` gives the group its process groups once the ranks have met."""

    def __init__(self, processes, error_pipes, owns_groups: bool):
        self.tp = self.control = None
        self._state = _State(list(processes), list(error_pipes), owns_groups)
        self._finalizer = weakref.finalize(self, _shutdown, self._state)

    def attach(self, tp, control) -> None:
        self.tp, self.control = tp, control
        self._state.control = control
        if self._state.processes and dist.get_backend(tp.group) == "nccl":
            # a dead peer does not fail an NCCL collective: abort the communicators instead
            threading.Thread(target=_abort_on_worker_death, args=(self._state,), daemon=True).start()

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._state.processes]

    def wait_joined(self, store, keys) -> None:
        """Until every spawned worker has set its key in the rendezvous store."""
        deadline = time.monotonic() + START_TIMEOUT.total_seconds()
        while not store.check(keys):
            self._check_workers()
            if time.monotonic() > deadline:
                raise TensorParallelError(f"tensor-parallel workers did not start within {START_TIMEOUT}")
            time.sleep(POLL.total_seconds())

    # ---- sending work ---------------------------------------------------------------------

    def send(self, header, payload=None) -> None:
        """The header to every worker (control group), then the payload (device group)."""
        self.wait(dist.broadcast(header, 0, group=self.control, async_op=True))
        if payload is not None:
            dist.broadcast(payload, 0, group=self.tp.group)

    def gather(self, values):
        """Every rank's int64 `values`, rank order (control group) -> [size, len]."""
        out = values.new_empty(self.tp.size * values.numel())
        self.wait(all_gather_single(out, values, group=self.control, async_op=True))
        return out.view(self.tp.size, -1)

    def wait(self, work) -> None:
        """Wait for a control operation, checking in polls that the workers are alive; after
        COLLECTIVE_TIMEOUT it is a TensorParallelError."""
        deadline = time.monotonic() + COLLECTIVE_TIMEOUT.total_seconds()
        while True:
            try:
                work.wait(timeout=POLL)
                return
            except RuntimeError:
                if work.is_completed():
                    # it ended between the poll's timeout and this check, or it failed (a peer
                    # gone): waiting again returns at once, or raises its own error
                    work.wait()
                    return
            self._check_workers()
            if time.monotonic() > deadline:
                raise TensorParallelError(f"a tensor-parallel worker did not answer within {COLLECTIVE_TIMEOUT}")

    def _check_workers(self) -> None:
        dead = [p for p in self._state.processes if p.exitcode is not None]
        if dead:
            raise TensorParallelError(self._describe_dead(dead))

    # ---- failures -------------------------------------------------------------------------

    def check_usable(self) -> None:
        state = self._state
        if state.broken is not None:
            raise TensorParallelError(state.broken)
        if state.closed:
            raise TensorParallelError("the tensor-parallel engine is closed")

    @contextmanager
    def step(self):
        """Run rank 0's part of an operation on all ranks: an error inside breaks the group
        (the ranks are out of step) and is raised as a TensorParallelError saying what failed."""
        self.check_usable()
        try:
            yield
        except Exception as error:  # noqa: BLE001 - every error leaves the ranks out of step
            raise self._break(error) from error
        except BaseException as interrupt:  # out of step just the same; the interrupt goes on
            self._break(interrupt)
            raise

    def abort(self, reason: str) -> None:
        """End the workers at once, without STOP (they are not waiting for one)."""
        if self._state.broken is None:
            self._state.broken = reason
        _shutdown(self._state)

    def _break(self, error) -> TensorParallelError:
        state = self._state
        self._read_errors()
        for rank, p in enumerate(state.processes, start=1):  # a failed worker may still be exiting
            p.join(timeout=STOP_TIMEOUT.total_seconds() if rank in state.errors else 1.0)
        dead = [p for p in state.processes if p.exitcode is not None]
        if dead:
            state.broken = self._describe_dead(dead)
        else:
            state.broken = f"tensor-parallel step failed on rank 0, the ranks are out of step: {error!r}"
        _shutdown(state)
        return TensorParallelError(state.broken)

    def _read_errors(self) -> None:
        """What failed workers sent before exiting."""
        state = self._state
        for rank, pipe in enumerate(state.error_pipes, start=1):
            try:
                while pipe.poll():
                    state.errors[rank] = pipe.recv()
            except (EOFError, OSError):  # closed: it sent nothing (more)
                pass

    def _describe_dead(self, dead) -> str:
        state = self._state
        self._read_errors()
        lines = []
        for p in dead:
            rank = state.processes.index(p) + 1
            error = state.errors.get(rank, "").strip().splitlines()
            said = f": {error[-1]}" if error else ""
            lines.append(f"tensor-parallel worker rank {rank} (pid {p.pid}) {_exit_status(p.exitcode)}{said}")
        return "; ".join(lines)

    # ---- shutdown ----------------------------------------------------------------------

    def close(self) -> None:
        self._finalizer()


def _exit_status(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def _shutdown(state: _State) -> None:
    """STOP to the workers (unless broken), wait for them, end stragglers, destroy the groups."""
    if state.closed:
        return
    state.closed = True
    if state.broken is None and state.control is not None:
        try:
            work = dist.broadcast(messages.header(messages.STOP), 0, group=state.control, async_op=True)
            work.wait(timeout=STOP_TIMEOUT)
        except Exception:  # noqa: BLE001 - the workers are ended below either way
            pass
    for p in state.processes:
        p.join(timeout=STOP_TIMEOUT.total_seconds() if state.broken is None else 0)
        if p.is_alive():
            p.terminate()
            p.join(timeout=STOP_TIMEOUT.total_seconds())
        if p.is_alive():
            p.kill()
            p.join()
    for pipe in state.error_pipes:
        pipe.close()
    if state.owns_groups and dist.is_initialized():
        dist.destroy_process_group()


def _abort_on_worker_death(state: _State) -> None:
    """Unblock rank 0 from NCCL collectives a dead worker will never join; the failing
    operation then breaks the group and names the worker."""
    wait_for_sentinels([p.sentinel for p in state.processes])
    if not state.closed:
        dist.distributed_c10d._abort_process_group()
