"""asr_bn.jobs: Kaldi's nj as forked processes side by side: results in job order, the same as in one process,
errors and dead jobs named, no child left behind, no deadlock under a live progress bar."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from asr_bn import jobs
from asr_bn.errors import AsrBnError
from asr_bn.jobs import run_jobs


@pytest.fixture(params=[False, True], ids=["forked", "in-process"])
def in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(jobs, "IN_PROCESS", request.param)
    return request.param


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the children run_jobs forks (this process may have other children: other tests' workers)."""
    pids: list[int] = []
    real = os.fork

    def fork() -> int:
        pid = real()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return pids


def _reaped(pids: list[int]) -> bool:
    """Every one of `pids` is gone and waited for (no zombie, nothing still running)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        return False
    return True


def test_results_in_job_order_with_every_tick(in_process: bool, forked: list[int]) -> None:
    """Each job's result, pickled back in job order (arrays too), and every tick reaches on_tick."""
    ticks = []
    parent = os.getpid()

    def work(job: int, tick) -> tuple[int, np.ndarray, bool]:  # noqa: ANN001
        for _ in range(job + 1):
            tick(2)
        return job, np.arange(job * 1000, dtype=np.float64), os.getpid() == parent

    results = run_jobs(work, 4, ticks.append)
    assert [r[0] for r in results] == [0, 1, 2, 3]
    for job, (_, array, here) in enumerate(results):
        np.testing.assert_array_equal(array, np.arange(job * 1000))
        assert here is in_process  # forked jobs run in other processes
    assert sum(ticks) == 2 * (1 + 2 + 3 + 4)
    assert _reaped(forked) and len(forked) == (0 if in_process else 4)


def test_a_job_error_is_raised_as_it_was_and_the_others_stop(in_process: bool, forked: list[int]) -> None:
    """An AsrBnError in one job is the run's error, with its message; a job still running is killed, not waited
    for (job 0 would sleep a minute)."""
    def work(job: int, tick) -> None:  # noqa: ANN001
        if job == 1:
            raise AsrBnError("utterance u7: no alignment (job two)")
        if not in_process:
            time.sleep(60)

    start = time.monotonic()
    with pytest.raises(AsrBnError, match=r"^utterance u7: no alignment \(job two\)$"):
        run_jobs(work, 3)
    assert time.monotonic() - start < 30
    assert _reaped(forked) and len(forked) == (0 if in_process else 3)


def test_a_bug_in_a_job_comes_back_with_its_traceback(forked: list[int]) -> None:
    def work(job: int, tick) -> float:  # noqa: ANN001
        return 1 / job

    with pytest.raises(RuntimeError, match=r"(?s)job 1 of 2 failed:.*ZeroDivisionError"):
        run_jobs(work, 2)
    assert _reaped(forked) and len(forked) == 2


def test_a_job_whose_process_dies_is_named(forked: list[int]) -> None:
    """A job killed by a signal (e.g. the OOM killer's SIGKILL) is one AsrBnError naming the job and the signal."""
    def work(job: int, tick) -> int:  # noqa: ANN001
        if job == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return job

    with pytest.raises(AsrBnError, match=r"job 2 of 3 died \(signal 9\).*smaller --nj"):
        run_jobs(work, 3)
    assert _reaped(forked) and len(forked) == 3


def test_one_job_runs_here() -> None:
    assert run_jobs(lambda job, tick: os.getpid(), 1) == [os.getpid()]


def test_no_deadlock_under_a_live_progress_bar(tmp_path) -> None:  # noqa: ANN001
    """Forks while rich's refresh thread draws the bar on stderr: 300 rounds of 3 jobs, each printing a warning on
    stderr, finish, in a child Python with a deadline (a deadlock would hang it)."""
    script = textwrap.dedent("""
        import warnings
        from asr_bn.jobs import run_jobs
        from asr_bn.progress import progress_bar

        def work(job, tick):
            warnings.warn(f"job {job} warns")
            tick(1)
            return job

        with progress_bar() as bar:
            task = bar.add_task("forks", total=900, info="")
            for _ in range(300):
                assert run_jobs(work, 3, lambda n: bar.advance(task, n)) == [0, 1, 2]
        print("done")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "done"


def test_job_parts_leave_no_key_out() -> None:
    """Each job's keys among those given, in the keys' order (as a Kaldi job reads the data); a key of no job joins
    the last part; one part without jobs."""
    from asr_bn.jobs import job_parts

    assert job_parts(["a", "b", "c", "d", "e"], [["b", "a", "x"], ["d"]]) == [["a", "b"], ["c", "d", "e"]]
    assert job_parts(["a", "b"], None) == [["a", "b"]]
    assert job_parts(["a", "b"], []) == [["a", "b"]]
    assert job_parts({"a": 1, "b": 2}, [["b"], ["a"]]) == [["b"], ["a"]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_jobs_die_with_their_parent(tmp_path) -> None:  # noqa: ANN001
    """A run killed outright (SIGKILL: no `finally` runs) takes its jobs with it: the kernel kills them (Linux's
    parent-death signal) instead of leaving them to compute for nobody."""
    script = textwrap.dedent(f"""
        import os, time
        from asr_bn.jobs import run_jobs

        def work(job, tick):
            open(f"{tmp_path}/job{{job}}.pid", "w").write(str(os.getpid()))
            time.sleep(60)

        run_jobs(work, 2)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    pids = []
    deadline = time.monotonic() + 60
    while len(pids) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [int(p.read_text()) for p in tmp_path.glob("job*.pid") if p.read_text()]
    assert len(pids) == 2
    parent.kill()
    parent.wait()

    def running(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
        except (FileNotFoundError, IndexError):
            return False
        return state != "Z"  # a zombie is dead, waiting for init to reap it

    deadline = time.monotonic() + 10
    while any(map(running, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(running, pids))


def test_ctrl_c_stops_every_job(tmp_path) -> None:  # noqa: ANN001
    """Ctrl-C (SIGINT to the whole foreground group: the run and its jobs) ends the run with KeyboardInterrupt and
    leaves no job behind."""
    script = textwrap.dedent(f"""
        import os, time
        from asr_bn.jobs import run_jobs

        def work(job, tick):
            open(f"{tmp_path}/job{{job}}.pid", "w").write(str(os.getpid()))
            time.sleep(60)

        try:
            run_jobs(work, 2)
        except KeyboardInterrupt:
            print("interrupted")
    """)
    run = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stdout=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pids = []
    deadline = time.monotonic() + 60
    while len(pids) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [int(p.read_text()) for p in tmp_path.glob("job*.pid") if p.read_text()]
    os.killpg(run.pid, signal.SIGINT)
    assert run.communicate(timeout=30)[0].strip() == "interrupted"
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
