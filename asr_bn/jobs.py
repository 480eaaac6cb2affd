"""Kaldi's `nj`: one piece of work per part of the data, each in a process of its own, side by side.

`run_jobs(work, n)` runs `work(job, tick)` for jobs 0 … n-1 in forked child processes and returns their results in
job order. A fork shares everything the parent holds (model, graphs, features) without copying or pickling it; only
the results come back, pickled through a pipe. The children never touch the parent's streams, locks or progress bar
(they run `work` with streams of their own and leave with os._exit), so the bar's refresh thread cannot deadlock
them; their `tick(n)` calls reach the parent's `on_tick`. Where fork is missing, or with ASR_BN_IN_PROCESS=1, the
jobs run one after the other in this process, with the same results: callers combine the jobs' results in job order
either way, as Kaldi's sum-accs tools add the jobs' files.
"""

from __future__ import annotations

import os
import pickle
import selectors
import signal
import struct
import sys
import time
import traceback
from typing import Any, Callable, Iterable, Sequence, TypeVar

from asr_bn.errors import AsrBnError

T = TypeVar("T")
Tick = Callable[[int], None]

# One job after the other in this process: where fork is missing, or asked for (ASR_BN_IN_PROCESS=1: benches and
# tests compare the two ways; debuggers and profilers see every job)
IN_PROCESS = not hasattr(os, "fork") or os.environ.get("ASR_BN_IN_PROCESS") == "1"
_TICK_EVERY = 0.1  # seconds between a child's progress messages
_HEADER = struct.Struct("<Q")


def run_jobs(work: Callable[[int, Tick], T], num_jobs: int, on_tick: Tick | None = None) -> list[T]:
    """[work(0, tick), …, work(num_jobs - 1, tick)], in processes side by side when there is more than one job.

    An AsrBnError in a job is raised here as it was raised there (the other jobs are stopped); any other exception
    becomes one naming the job, with the child's traceback; a job whose process dies is an AsrBnError naming the
    signal."""
    tick = on_tick or (lambda n: None)
    if num_jobs <= 1 or IN_PROCESS:
        return [work(job, tick) for job in range(num_jobs)]
    parent = os.getpid()
    die_with_parent = _death_signal()
    children: dict[int, tuple[int, int]] = {}  # read end → (job, pid)
    results: dict[int, Any] = {}
    reaped: set[int] = set()
    try:
        for job in range(num_jobs):
            read, write = os.pipe()
            try:
                pid = os.fork()
            except OSError as e:
                os.close(read), os.close(write)
                raise AsrBnError(f"could not start job {job + 1} of {num_jobs}: {e} (run again with a smaller --nj)"
                                 ) from None
            if pid == 0:  # the child: never returns into the caller's frames
                os.close(read)
                die_with_parent(parent)
                _child(work, job, write)
            os.close(write)
            children[read] = (job, pid)
        _collect(children, results, reaped, tick)
    finally:
        for read, (_, pid) in children.items():  # stop what still runs (an error in another job, Ctrl-C)
            if pid not in reaped:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            os.close(read)
    return [results[job] for job in range(num_jobs)]


def summed(results: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The jobs' results (tuples of counts, sums, arrays) added field by field in job order, as Kaldi's sum tools
    (gmm-sum-accs, sum-lda-accs, sum-mllt-accs) add the jobs' files."""
    first, *others = results
    return tuple(sum((other[i] for other in others), start=first[i]) for i in range(len(first)))


def job_parts(keys: Iterable[str], jobs: Sequence[Sequence[str]] | None) -> list[list[str]]:
    """The `keys` (e.g. utterances) of each of Kaldi's `jobs`, jobs in order, each part in the keys' own order (a
    Kaldi job reads its features in the data's order, its random draws too); keys no job names go to the last part,
    so none is left out; all of them as one part without jobs."""
    keys = list(keys)
    if not jobs:
        return [keys]
    job_of = {k: j for j, job in enumerate(jobs) for k in job}
    parts: list[list[str]] = [[] for _ in jobs]
    for k in keys:
        parts[job_of.get(k, len(jobs) - 1)].append(k)
    return parts


def _death_signal() -> Callable[[int], None]:
    """What a child calls first: on Linux, have the kernel SIGKILL it when the parent dies (killed, or gone without
    its `finally`), so no job outlives its run; leave at once if the parent is already gone."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the parent's `finally` stops the jobs
        return lambda parent: None

    def die_with_parent(parent: int) -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return die_with_parent


def _child(work: Callable[[int, Tick], Any], job: int, fd: int) -> None:
    """Run one job in a forked child, send (kind, value) messages on `fd`, and leave without unwinding."""
    code = 0
    # Fresh stream objects: another thread of the parent (the progress bar's) may have held the old ones' locks at
    # the fork, and a warning printed here must not wait for them for ever.
    sys.stdout, sys.stderr = (open(os.dup(std), "w", buffering=1, encoding="utf-8", errors="replace") for std in (1, 2))
    try:
        last = [time.monotonic(), 0]

        def tick(n: int) -> None:
            last[1] += n
            if time.monotonic() - last[0] >= _TICK_EVERY:
                _send(fd, ("tick", last[1]))
                last[:] = [time.monotonic(), 0]

        result = work(job, tick)
        if last[1]:
            _send(fd, ("tick", last[1]))
        _send(fd, ("ok", result))
    except BaseException as e:  # noqa: BLE001 - everything goes back to the parent, which raises it
        code = 1
        try:
            _send(fd, ("error", e if isinstance(e, AsrBnError) else traceback.format_exc()))
        except BaseException:  # noqa: BLE001 - an unpicklable error: its text
            _send(fd, ("error", traceback.format_exc()))
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)


def _send(fd: int, message: tuple[str, Any]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _collect(children: dict[int, tuple[int, int]], results: dict[int, Any], reaped: set[int], tick: Tick) -> None:
    """Read every child's messages until each has sent its result (or failed)."""
    pending = {read: _Message() for read in children}
    with selectors.DefaultSelector() as sel:
        for read in children:
            sel.register(read, selectors.EVENT_READ)
        while len(results) < len(children):
            for key, _ in sel.select():
                read = key.fd
                job, pid = children[read]
                message = pending[read].read_from(read)
                if message is None:
                    continue
                if message is _Message.EOF:
                    sel.unregister(read)
                    if job not in results:
                        _, status = os.waitpid(pid, 0)
                        reaped.add(pid)
                        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                               else f"exit {os.WEXITSTATUS(status)}")
                        hint = " (killed: out of memory? run again with a smaller --nj)" if how == "signal 9" else ""
                        raise AsrBnError(f"job {job + 1} of {len(children)} died ({how}) before sending its "
                                         f"result{hint}")
                    continue
                pending[read] = _Message()
                kind, value = message
                if kind == "tick":
                    tick(value)
                elif kind == "ok":
                    results[job] = value
                elif isinstance(value, AsrBnError):
                    raise value
                else:
                    raise RuntimeError(f"job {job + 1} of {len(children)} failed:\n{value}")


class _Message:
    """One length-prefixed pickle arriving on a pipe, read straight into its buffer as the bytes come."""

    EOF = object()

    def __init__(self) -> None:
        self.data = bytearray(_HEADER.size)
        self.at, self.in_header = 0, True

    def read_from(self, fd: int) -> Any:
        """Read what `fd` has: the message once complete, `EOF` at the end of the pipe, else None."""
        got = os.readv(fd, [memoryview(self.data)[self.at:]])
        if not got:
            return self.EOF
        self.at += got
        if self.at < len(self.data):
            return None
        if self.in_header:
            self.data, self.at, self.in_header = bytearray(_HEADER.unpack(self.data)[0]), 0, False
            return None
        return pickle.loads(self.data)
