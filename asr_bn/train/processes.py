"""A run's processes: torchrun's ranks (`Dist`, the process group), `launch` of N of them, and SIGTERM/SIGINT turned
into a flag the loop reads (`StopSignals`)."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Iterator

from asr_bn.device import parse_device


def launch(nproc: int, argv: list[str]) -> int:
    """Run `python -m asr_bn_cli ARGV` in `nproc` processes through torchrun on this machine; returns its exit
    status. SIGTERM/SIGINT are passed on (each process then saves its part and exits)."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "asr_bn_cli", *argv]  # fmt: skip
    proc = subprocess.Popen(cmd)

    def forward(signum: int, _frame: object) -> None:
        proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)



@dataclass
class Dist:
    """This process's place under torchrun (rank 0 of 1 without it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    @contextlib.contextmanager
    def group(self, device: str) -> Iterator[None]:
        """The process group (NCCL on GPUs, gloo on CPUs) for the duration of the run."""
        if self.world == 1:
            yield
            return
        import torch.distributed as td
        # Its functions take group.WORLD as a default argument: imported after init (as DDP does), it would hold
        # the group for good, and destroy_process_group could not free it.
        import torch.distributed.nn.functional  # noqa: F401

        chosen = parse_device(device, self.local_rank)
        on_gpu = chosen.type == "cuda"
        if on_gpu:
            torch.cuda.set_device(chosen)  # NCCL's communicator lives on this rank's GPU
        td.init_process_group("nccl" if on_gpu else "gloo")
        # Free the group on the way out, joining its threads: one left to interpreter exit may still release a
        # tensor, and a thread that takes the GIL during finalization aborts the process (SIGABRT, seen in CI).
        try:
            yield
        except BaseException as e:
            traceback.clear_frames(e.__traceback__)  # the failed run's frames hold it (through the DDP wrapper)
            raise
        finally:
            gc.collect()  # a DDP wrapper in a reference cycle holds the group too
            td.destroy_process_group()


class StopSignals:
    """SIGTERM / SIGINT set a flag (the loop saves a checkpoint and returns) instead of killing the run."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        self.requested = True

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

