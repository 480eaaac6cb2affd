"""Timing of whole processes for the benches: wall and CPU seconds of one child, with asr-bn's bytecode cached."""

from __future__ import annotations

import os
import resource
import subprocess
import time

# Without PYTHONDONTWRITEBYTECODE (set on the project's machines): asr-bn's modules are timed from their cached
# bytecode, as every installed copy runs them, not recompiled in each process (about 30 ms of start-up).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], env: dict[str, str] | None = None, check: bool = True) -> tuple[float, float]:
    """(wall, CPU) seconds of one whole process (CPU: user + system of the child, which machine load barely
    changes); with `check`, a failing command stops the bench with the end of its stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, env=env or ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if check and result.returncode:
        raise SystemExit(f"{cmd[0]} failed:\n{result.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
