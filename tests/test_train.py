"""`asr-bn train` / `asr-bn plot`: the loop learns, writes the model dir, resumes bitwise after SIGKILL, stops
cleanly on SIGTERM, runs under torchrun (2 gloo processes = 1 process), and refuses bad input with one line."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from test_batching import make_prepared_dir
from typer.testing import CliRunner

from asr_bn.batching import PAD_TARGET, Batch
from asr_bn.train import (
    TrainConfig,
    TrainState,
    after_eval,
    compute_loss,
    is_finished,
    learning_rate,
    load_checkpoint,
)
from asr_bn_cli.main import build_app

app = build_app()

KILL_SEED_ENV = "ASR_BN_TEST_KILL_SEED"  # the SIGKILL test's kill point: printed each run, replayed when set
TINY = ["--layers", "1", "--units", "8", "--batch-size", "4", "--num-workers", "0", "--device", "cpu",
        "--lr", "0.02", "--log-every", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A learnable tiny corpus: 16 training and 6 dev utterances of 10–40 frames, 4 pdfs."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    train = make_prepared_dir(root / "train", rng.integers(10, 40, 16).tolist(), seed=1)
    dev = make_prepared_dir(root / "dev", rng.integers(10, 40, 6).tolist(), seed=2)
    return train, dev


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, like the subprocesses (OMP_NUM_THREADS=1): bitwise-comparable, and fast on a busy CPU."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def error_line(out: str) -> str:
    """The one `error: …` line the CLI prints, which must be the last thing it printed."""
    lines = out.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and sum(x.startswith("error") for x in lines) == 1, out
    return lines[-1]


def rows(exp: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (exp / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


# -- schedule and loss ------------------------------------------------------------------------------------------


def test_newbob_halves_on_no_improvement_and_patience_stops() -> None:
    cfg = TrainConfig("d", "v", "e", schedule="newbob", lr=1.0, lr_decay=0.5, patience=2)
    s = TrainState()
    s, best = after_eval(cfg, s, 2.0)
    assert best and learning_rate(cfg, s, 10) == 1.0
    s, best = after_eval(cfg, s, 2.1)
    assert not best and learning_rate(cfg, s, 10) == 0.5 and not is_finished(cfg, s)
    s, best = after_eval(cfg, s, 1.9)
    assert best and s.bad_evals == 0 and learning_rate(cfg, s, 10) == 0.5
    s, _ = after_eval(cfg, s, 1.95)
    s, _ = after_eval(cfg, s, 1.95)
    assert is_finished(cfg, s) and s.best_dev_ce == 1.9
    assert not is_finished(dataclasses.replace(cfg, patience=3), s)  # --resume --patience 3 goes on


def test_exponential_and_constant_schedules() -> None:
    exp = TrainConfig("d", "v", "e", schedule="exponential", lr=1.0, lr_decay=0.1)
    assert learning_rate(exp, TrainState(update=20), 10) == pytest.approx(0.01)
    assert learning_rate(exp, TrainState(update=5), 10) == pytest.approx(0.1**0.5)
    const = TrainConfig.from_options("paper", data="d", dev="v", exp_dir="e", bn="sequence")
    assert (const.optimizer, const.lr, const.momentum, const.batch_size, const.max_train_frames, const.bn) == (
        "sgd", 1e-4, 0.9, 24, 1300, "sequence")  # fmt: skip
    assert learning_rate(const, TrainState(update=10**6, halvings=3), 10) == 1e-4


def test_masked_loss_ignores_padding() -> None:
    from asr_bn.config import ModelConfig
    from asr_bn.model import BnBlstm

    torch.manual_seed(0)
    model = BnBlstm(ModelConfig(input_dim=3, num_pdfs=5, layers=1, units=4)).eval()
    a, b = torch.randn(7, 3), torch.randn(4, 3)
    ta, tb = torch.randint(0, 5, (7,)), torch.randint(0, 5, (4,))
    feats = torch.zeros(2, 7, 3)
    feats[0], feats[1, :4], feats[1, 4:] = a, b, 1e3  # garbage in the padding
    targets = torch.full((2, 7), PAD_TARGET)
    targets[0], targets[1, :4] = ta, tb
    ce, errors, _ = compute_loss(model, Batch(["a", "b"], feats, targets, torch.tensor([7, 4])))
    ce_a, err_a, _ = compute_loss(model, Batch(["a"], a[None], ta[None], torch.tensor([7])))
    ce_b, err_b, _ = compute_loss(model, Batch(["b"], b[None], tb[None], torch.tensor([4])))
    torch.testing.assert_close(ce, ce_a + ce_b)
    assert int(errors) == int(err_a + err_b)


# -- a whole run through the CLI --------------------------------------------------------------------------------


def test_train_learns_and_writes_the_model_dir(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    train, dev = dirs
    exp = tmp_path / "exp"
    code, out = cli("train", train, dev, exp, *TINY, "--epochs", "4", "--eval-every", "3", "--optimizer", "adam")
    assert code == 0, out
    lines = out.splitlines()  # the progress off a terminal: plain lines, epochs counted from 1, done: below the bar
    bars = [i for i, line in enumerate(lines) if line.startswith("epoch ")]
    assert [lines[i].split()[1] for i in bars][-1] == "4/4" and "epoch 0" not in out and "\x1b" not in out
    done = [i for i, line in enumerate(lines) if line.startswith("done: best dev CE")]
    assert len(done) == 1 and bars[-1] < done[0], out
    for name in ("final.pt", "checkpoint.pt", "config.json", "pipeline.json", "priors.vec", "metrics.jsonl",
                 "learning_curve.png", "report.json"):  # fmt: skip
        assert (exp / name).exists(), name
    assert not (exp / ".asr-bn.lock").exists()
    dev_rows = rows(exp, "dev")
    assert dev_rows[-1]["ce"] < 0.75 * dev_rows[0]["ce"]  # it learns
    assert [r["update"] for r in dev_rows] == [3, 4, 6, 8, 9, 12, 15, 16]  # every 3 updates and every epoch (4)
    final = load_checkpoint(exp / "final.pt", "asr-bn model")
    assert final["dev_ce"] == min(r["ce"] for r in dev_rows)
    from asr_bn.alignments import read_counts

    import kaldiio

    targets = [v for _, v in kaldiio.load_scp_sequential(str(train / "pdf.scp"))]
    counts = np.bincount(np.concatenate(targets), minlength=4)
    np.testing.assert_array_equal(read_counts(exp / "priors.vec"), counts)
    assert json.loads((exp / "config.json").read_text())["units"] == 8
    # the same exp dir again without --resume is refused
    code, out = cli("train", train, dev, exp, *TINY)
    assert code == 2 and "already holds a training run; continue it with --resume" in out
    # plot two runs on one PNG
    code, out = cli("plot", exp, exp, "-o", tmp_path / "curves.png", "--labels", "a,b")
    assert code == 0 and (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_population_statistics_are_what_final_pt_holds_and_scores(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """--population-batches: final.pt carries BN statistics pooled over fixed training batches (not the momentum
    averages of checkpoint.pt), and the dev CE it records is the one its statistics give."""
    from asr_bn.batching import BucketingSampler, UtteranceDataset, filter_by_length, make_loader
    from asr_bn.model import reestimate_population_stats
    from asr_bn.report import Report
    from asr_bn.train import load_model

    train, dev = dirs
    exp = tmp_path / "exp"
    code, out = cli("train", train, dev, exp, *TINY, "--bn", "sequence", "--epochs", "2", "--population-batches", "3")
    assert code == 0, out
    model, final = load_model(exp / "final.pt")
    saved = model.layers[0].running_mean.clone()
    utts, lengths = filter_by_length(train, None, Report("t"))
    loader = make_loader(UtteranceDataset(train, 4, utts), BucketingSampler(lengths, 4, seed=0), num_workers=0)
    batches = [(b.feats, b.lengths) for b, _ in zip(loader, range(3))]
    assert reestimate_population_stats(model, batches) == 3
    torch.testing.assert_close(model.layers[0].running_mean, saved, rtol=0, atol=1e-6)
    last = load_checkpoint(exp / "checkpoint.pt")["model"]
    assert not torch.allclose(last["layers.0.running_mean"], saved, atol=1e-3)  # not the momentum averages
    code, out = cli("score", "frames", exp, dev, "--device", "cpu")
    assert code == 0 and f"frame CE {final['dev_ce']:.4f} nats" in out, (out, final["dev_ce"])
    code, out = cli("train", train, dev, tmp_path / "e2", *TINY, "--population-batches", "-1")
    assert code == 2 and "'--population-batches': must be >= 0" in out


def test_length_filter_drops_are_named(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    train, dev = dirs
    code, out = cli("train", train, dev, tmp_path / "exp", *TINY, "--epochs", "1", "--max-train-frames", "20")
    assert code == 0, out
    report = json.loads((tmp_path / "exp" / "report.json").read_text())
    dropped = report["skipped"]["train: longer than --max-train-frames 20"]
    assert dropped and "skipped" in out and dropped[0] in out


def test_max_frames_batches_and_drop_last(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """--max-frames makes the sampler's padded-frame batches; --drop-last drops each epoch's short batch."""
    from asr_bn.batching import BucketingSampler, filter_by_length
    from asr_bn.report import Report

    train, dev = dirs
    no_batch_size = [a for i, a in enumerate(TINY) if "--batch-size" not in TINY[max(0, i - 1) : i + 1]]
    code, out = cli("train", train, dev, tmp_path / "mf", *no_batch_size, "--max-frames", "80", "--epochs", "1")
    assert code == 0, out
    _, lengths = filter_by_length(train, None, Report("t"))
    sampler = BucketingSampler(lengths, None, 80, seed=0)
    batches = sampler.global_batches()
    assert max(len(b) * lengths[b].max() for b in batches) <= 80 and len(batches) != 4  # not --batch-size 4's
    assert len(rows(tmp_path / "mf", "train")) == len(batches)  # logged every update
    code, out = cli("train", train, dev, tmp_path / "dl", *TINY, "--batch-size", "5", "--drop-last", "--epochs", "2")
    assert code == 0, out
    assert [r["update"] for r in rows(tmp_path / "dl", "dev")] == [3, 6]  # 16 utterances: 3 batches of 5, not 4


def test_early_stop_ends_the_run(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """With every evaluation after the first counting as no improvement, --patience 1 stops at the second."""
    train, dev = dirs
    exp = tmp_path / "exp"
    code, out = cli("train", train, dev, exp, *TINY, "--epochs", "20", "--eval-every", "2", "--patience", "1",
                    "--min-improvement", "0.99")  # fmt: skip
    assert code == 0 and "early stop" in out, out
    assert [r["update"] for r in rows(exp, "dev")] == [2, 4]
    assert load_checkpoint(exp / "checkpoint.pt")["state"]["update"] == 4


def test_amp_bf16_trains_on_the_cpu(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """--amp bf16 runs forward and loss under CPU autocast; training still learns and final.pt is float32."""
    train, dev = dirs
    exp = tmp_path / "exp"
    code, out = cli("train", train, dev, exp, *TINY, "--amp", "bf16", "--bn", "sequence", "--epochs", "4",
                    "--optimizer", "adam")  # fmt: skip
    assert code == 0, out
    dev_rows = rows(exp, "dev")
    assert all(math.isfinite(r["ce"]) for r in dev_rows) and dev_rows[-1]["ce"] < 0.85 * dev_rows[0]["ce"]
    final = load_checkpoint(exp / "final.pt", "asr-bn model")
    assert all(v.dtype in (torch.float32, torch.int64) for v in final["model"].values())


def test_tensorboard_logs_what_metrics_jsonl_logs(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, dev = dirs
    exp = tmp_path / "exp"
    code, out = cli("train", train, dev, exp, *TINY, "--epochs", "2", "--tensorboard")
    assert code == 0, out
    events = EventAccumulator(str(exp / "tensorboard"))
    events.Reload()
    for kind in ("train", "dev"):
        logged = [(e.step, e.value) for e in events.Scalars(f"{kind}/ce")]
        expected = [(r["update"], r["ce"]) for r in rows(exp, kind)]
        assert [s for s, _ in logged] == [s for s, _ in expected]
        np.testing.assert_allclose([v for _, v in logged], [v for _, v in expected], rtol=1e-6)


def test_tensorboard_without_the_package_is_refused_up_front(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    from asr_bn.config import TrainConfig
    from asr_bn.errors import UsageError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(UsageError, match="--tensorboard needs the tensorboard package"):
        TrainConfig(str(tmp_path), str(tmp_path), str(tmp_path / "exp"), batch_size=4, tensorboard=True)


# -- faults -----------------------------------------------------------------------------------------------------


def test_corrupt_or_foreign_checkpoint_is_one_line(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    train, dev = dirs
    exp = tmp_path / "exp"
    assert cli("train", train, dev, exp, *TINY, "--epochs", "1")[0] == 0
    ckpt = torch.load(exp / "checkpoint.pt", weights_only=True)
    # another model shape: a checkpoint whose weights are for 16 units but whose config says 8
    other = tmp_path / "other"
    assert cli("train", train, dev, other, *TINY, "--epochs", "1", "--units", "16")[0] == 0
    foreign = torch.load(other / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, "model": foreign["model"]}, exp / "checkpoint.pt")
    before = snapshot(train, dev, exp)
    code, out = cli("train", train, dev, exp, *TINY, "--resume")
    assert code == 1 and "checkpoint.pt does not fit this model (RuntimeError: " in out and "size mismatch" in out
    assert "another model shape" in out
    assert "delete it or train again" in error_line(out)
    assert snapshot(train, dev, exp) == before  # inputs and the model dir untouched: nothing loaded half-way
    # truncated file
    data = (other / "checkpoint.pt").read_bytes()
    (exp / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    before = snapshot(train, dev, exp)
    code, out = cli("train", train, dev, exp, *TINY, "--resume")
    assert code == 1 and "checkpoint.pt is corrupt or not an asr-bn file" in out
    assert "delete it or train again" in error_line(out)
    assert snapshot(train, dev, exp) == before
    no_partial_files(exp)


def test_second_run_on_the_same_dir_is_refused(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    train, dev = dirs
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / ".asr-bn.lock").write_text(str(os.getpid()))  # a live process holds it
    before = snapshot(train, dev, exp)
    code, out = cli("train", train, dev, exp, *TINY)
    assert code == 1 and "in use by another asr-bn run" in error_line(out) and str(os.getpid()) in out
    assert snapshot(train, dev, exp) == before  # nothing written, the holder's lock kept


def test_resume_keeps_the_saved_options_and_refuses_what_it_cannot_change(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """A plain --resume continues with the run's own options (not the defaults); a resumable option given applies
    and is noted; one that would change the model or the optimisation is refused, nothing written."""
    train, dev = dirs
    exp = tmp_path / "exp"
    assert cli("train", train, dev, exp, *TINY, "--epochs", "1", "--checkpoint-every", "3")[0] == 0
    code, out = cli("train", train, dev, exp, "--resume")  # no options: --epochs 20 etc. are defaults, not given
    assert code == 0 and "done:" in out, out
    saved = json.loads((exp / "config.json").read_text())
    assert (saved["epochs"], saved["checkpoint_every"], saved["units"], saved["log_every"]) == (1, 3, 8, 1)
    assert load_checkpoint(exp / "checkpoint.pt")["state"]["epoch"] == 1  # no epoch trained beyond --epochs 1
    for options, refused in ((["--units", "64"], "--units 64 (the run has 8)"), (["--lr", "0.1"], "--lr 0.1")):
        before = snapshot(exp)
        code, out = cli("train", train, dev, exp, *options, "--resume")
        line = error_line(out)
        assert code == 2 and "--resume cannot change" in line and refused in line, out
        assert snapshot(exp) == before
    code, out = cli("train", train, dev, exp, *TINY, "--epochs", "2", "--resume")  # TINY: the run's own values
    assert code == 0 and "changed: --epochs 1 → 2" in out, out
    assert json.loads((exp / "config.json").read_text())["epochs"] == 2
    assert load_checkpoint(exp / "checkpoint.pt")["state"]["epoch"] == 2


def test_out_of_memory_names_the_batch_and_the_flag(
    dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asr_bn import model

    def oom(self: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(model.BnBlstm, "forward", oom)
    before = snapshot(*dirs)
    code, out = cli("train", dirs[0], dirs[1], tmp_path / "exp", *TINY)
    assert code == 1
    assert "out of memory" in out and "padded frames" in out and "lower --batch-size" in out
    error_line(out)
    assert snapshot(*dirs) == before
    assert not (tmp_path / "exp" / "final.pt").exists() and not (tmp_path / "exp" / "checkpoint.pt").exists()
    no_partial_files(tmp_path / "exp")


def snapshot(*dirs: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def no_partial_files(exp: Path) -> None:
    """Nothing half-written under a final name: no temporary files, and no lock left behind."""
    leftovers = [p.name for p in exp.rglob("*") if p.name.endswith(".tmp") or p.name == ".asr-bn.lock"]
    assert not leftovers, leftovers


def test_bad_data_errors(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    train, dev = dirs
    before = snapshot(train, dev)
    code, out = cli("train", train, dev, tmp_path / "a", *TINY, "--num-pdfs", "3")
    assert code == 1 and "pdf.scp has pdf-id 3, outside the model's 3 outputs" in error_line(out)
    code, out = cli("train", train, dev, tmp_path / "b", *TINY, "--max-train-frames", "5")
    assert code == 1 and "no utterance is left to train on (16 longer than --max-train-frames 5)" in error_line(out)
    for exp in (tmp_path / "a", tmp_path / "b"):  # refused before anything was written
        assert not exp.exists() or not any(exp.iterdir())
    import kaldiio

    bad = make_prepared_dir(tmp_path / "bad", [12, 14, 16, 18], seed=3)
    feats = {k: v.copy() for k, v in kaldiio.load_scp_sequential(str(bad / "feats.scp"))}
    feats["spk0-utt002"][3, 0] = np.inf
    from asr_bn.io import write_ark_scp

    write_ark_scp(bad / "feats.ark", bad / "feats.scp", feats.items())
    bad_before = snapshot(bad)
    code, out = cli("train", bad, dev, tmp_path / "c", *TINY, "--num-workers", "1")
    assert code == 1 and "feats.scp: utterance spk0-utt002 has NaN/Inf features" in error_line(out)
    assert not (tmp_path / "c" / "final.pt").exists() and not (tmp_path / "c" / "checkpoint.pt").exists()
    no_partial_files(tmp_path / "c")
    assert snapshot(train, dev) == before and snapshot(bad) == bad_before  # inputs untouched


def test_bad_options_are_usage_errors(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    train, dev = dirs
    for options, message in (
        (["--bn", "none", "--bn-hidden"], "bad model option: ModelConfig.bn_hidden needs bn='frame'"),
        (["--amp", "fp16"], "--amp fp16 needs a CUDA device"),
        (["--max-frames", "400"], "give exactly one of --batch-size and --max-frames"),
        (["--schedule", "cosine"], "'--schedule': 'cosine' is not one of 'constant', 'newbob', 'exponential'"),
        (["--num-feature-masks", "1", "--features-mask-size", "99"], "--features-mask-size 99 must be below the "
         "features' "),
        (["--num-frame-masks", "-1"], "--num-frame-masks"),
    ):
        code, out = cli("train", train, dev, tmp_path / "exp", *TINY, *options)
        assert code == 2 and message in error_line(out), (options, out)
    assert not (tmp_path / "exp").exists() or not any((tmp_path / "exp").iterdir())


def test_divergence_is_one_line(dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from asr_bn.train import run as run_module  # where an update computes its loss

    def nan_loss(model: torch.nn.Module, batch: Batch, soft_weight: float, mmi: None) -> tuple[torch.Tensor, ...]:
        ce, errors, _ = compute_loss(model, batch, soft_weight)
        return ce * float("nan"), errors, None

    monkeypatch.setattr(run_module, "compute_loss", nan_loss)
    code, out = cli("train", *dirs, tmp_path / "exp", *TINY)
    assert code == 1 and "training diverged: the frame CE is nan at update 1; lower --lr" in error_line(out)


def test_disk_full_while_saving_keeps_the_previous_files(
    dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, dev = dirs
    exp = tmp_path / "exp"
    assert cli("train", train, dev, exp, *TINY, "--epochs", "1")[0] == 0
    saved = snapshot(exp)

    def full(obj: object, f: object, *args: object, **kwargs: object) -> None:
        Path(f).write_bytes(b"partial")  # type: ignore[arg-type]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    code, out = cli("train", train, dev, exp, *TINY, "--epochs", "2", "--resume")
    assert code == 1 and "No space left on device" in error_line(out)
    for name in ("final.pt", "checkpoint.pt"):
        assert (exp / name).read_bytes() == saved[exp / name]
    no_partial_files(exp)


# -- processes: SIGKILL + resume, SIGTERM, torchrun -------------------------------------------------------------


def _start(*args: object) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "asr_bn_cli", "train", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux /proc), e.g. a run's DataLoader workers."""
    return [int(c) for f in Path(f"/proc/{pid}/task").glob("*/children") for c in f.read_text().split()]


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal_at(plan: list[tuple[subprocess.Popen, Path, int, int]], timeout: float = 120.0) -> dict[int, list[int]]:
    """Send each (process, exp dir, update, signal) its signal as soon as its metrics.jsonl shows that update (the
    runs log every update), watching all runs at once; returns each signalled pid's children at that moment."""
    end, pending, children = time.monotonic() + timeout, list(plan), {}
    while pending and time.monotonic() < end:
        for item in list(pending):
            proc, exp, update, signum = item
            log = (exp / "metrics.jsonl").read_text() if (exp / "metrics.jsonl").exists() else ""
            rows = log[: log.rfind("\n") + 1].splitlines()  # whole lines only: the run may be writing one
            if rows and json.loads(rows[-1])["update"] >= update:
                children[proc.pid] = _children(proc.pid)
                os.kill(proc.pid, signum)
                pending.remove(item)
            elif proc.poll() is not None:
                raise AssertionError(f"the run ended before update {update}: {proc.communicate()[0][-2000:]}")
        time.sleep(0.005)
    assert not pending, "a run stalled"
    return children


def _weights(exp: Path) -> dict[str, torch.Tensor]:
    return torch.load(exp / "checkpoint.pt", weights_only=True)["model"]


def test_sigkill_then_resume_is_bitwise_and_sigterm_saves(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """Two runs in subprocesses (one thread, as here): one SIGKILLed at a random update, one sent SIGTERM; both
    resumed here reach bitwise the weights and metrics of an uninterrupted run made here (dropout and SpecAugment
    masks included)."""
    train, dev = dirs
    args = [*TINY, "--layers", "2", "--units", "16", "--dropout", "0.3", "--optimizer", "sgd", "--lr", "0.2",
            "--epochs", "6", "--patience", "0", "--checkpoint-every", "3", "--eval-every", "5", "--num-workers", "1",
            "--schedule", "newbob", "--num-frame-masks", "2", "--frames-mask-size", "5", "--num-feature-masks", "1",
            "--features-mask-size", "2"]  # fmt: skip
    seed = int(os.environ.get(KILL_SEED_ENV) or secrets.randbits(32))
    kill_at = int(np.random.default_rng(seed).integers(4, 18))  # a random update among the 24
    replay = f"kill at update {kill_at}: replay with {KILL_SEED_ENV}={seed}"
    print(replay)  # pytest shows it with a failure
    ref, killed, termed = (tmp_path / n for n in ("ref", "killed", "termed"))
    inputs = snapshot(train, dev)
    procs = [_start(train, dev, d, *args) for d in (killed, termed)]
    workers = _signal_at([(procs[0], killed, kill_at, signal.SIGKILL), (procs[1], termed, 7, signal.SIGTERM)])
    assert workers[procs[0].pid], "the run has no DataLoader worker to orphan"
    end = time.monotonic() + 2  # the kernel kills the worker with its run (parent-death signal; torch polls every 5 s)
    while any(map(_alive, workers[procs[0].pid])) and time.monotonic() < end:
        time.sleep(0.01)
    assert not any(map(_alive, workers[procs[0].pid])), "a worker outlived its SIGKILLed run"
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert procs[0].returncode == -signal.SIGKILL, replay
    assert procs[1].returncode == 143 and "stopped by a signal at update" in outs[1], outs[1][-3000:]
    assert not (termed / ".asr-bn.lock").exists()
    assert load_checkpoint(termed / "checkpoint.pt")["state"]["update"] >= 7
    assert cli("train", train, dev, ref, *args)[0] == 0
    for d in (killed, termed):
        code, out = cli("train", train, dev, d, *args, "--resume")
        assert code == 0, (replay, out)
    reference = _weights(ref)
    for d in (killed, termed):
        for name, value in _weights(d).items():
            assert torch.equal(value, reference[name]), (d.name, name, replay)
        for kind in ("train", "dev"):  # the metrics log is whole again: the rows of the lost updates are redone
            assert [(r["update"], r["ce"], r["fer"]) for r in rows(d, kind)] == [
                (r["update"], r["ce"], r["fer"]) for r in rows(ref, kind)
            ], (d.name, kind, replay)
        no_partial_files(d)
    assert snapshot(train, dev) == inputs


def test_two_gloo_processes_follow_one_process(
    dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--nproc 2` launches torchrun (gloo on the CPU); its trajectory is the 1-process one with the same batches."""
    train, dev = dirs
    args = [*map(str, (train, dev)), *TINY, "--bn", "none", "--batch-size", "6", "--epochs", "2", "--optimizer", "sgd",
            "--lr", "0.05", "--clip-norm", "0"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli("train", *args[:2], one, *args[2:])[0] == 0
    argv = ["train", *args[:2], str(two), *args[2:], "--nproc", "2"]
    monkeypatch.setattr(sys, "argv", ["asr-bn", *argv])  # what the launcher passes on to torchrun
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, out = cli(*argv)
    assert code == 0, out
    a, b = rows(one, "train"), rows(two, "train")
    assert [r["update"] for r in a] == [r["update"] for r in b] and len(a) >= 6
    np.testing.assert_allclose([r["ce"] for r in b], [r["ce"] for r in a], rtol=1e-4)
    np.testing.assert_allclose([r["ce"] for r in rows(two, "dev")], [r["ce"] for r in rows(one, "dev")], rtol=1e-4)
    assert sorted(p.name for p in two.iterdir() if p.suffix == ".pt") == ["checkpoint.pt", "final.pt"]
    assert not math.isnan(load_checkpoint(two / "final.pt", "asr-bn model")["dev_ce"])


RANK_EXIT = """
import os, sys, weakref
import torch.distributed as td
from asr_bn.errors import AsrBnError
from asr_bn.train import TrainConfig, train

groups = []
init = td.init_process_group
td.init_process_group = lambda *a, **k: (init(*a, **k), groups.append(weakref.ref(td.group.WORLD)))
try:
    train(TrainConfig(sys.argv[1], sys.argv[2], sys.argv[3], layers=1, units=8, batch_size=6, epochs=1, num_workers=0,
                      device="cpu", bn="sequence", lr=float(sys.argv[4]), clip_norm=0, log_every=1))
except AsrBnError as e:  # checked while the error (its traceback: the run's frames) is alive, as in a crash
    line = f"rank {os.environ['RANK']} {str(e)[:18]} group freed: {groups[0]() is None}\\n"
else:
    line = f"rank {os.environ['RANK']} group freed: {groups[0]() is None}\\n"
os.write(1, line.encode())  # one write: the two ranks' lines share a pipe and must not interleave
"""


@pytest.mark.parametrize("lr, raises", [(1e-3, False), (1e30, True)], ids=["returns", "raises"])
def test_each_rank_frees_its_process_group_before_it_exits(
    dirs: tuple[Path, Path], tmp_path: Path, lr: float, raises: bool
) -> None:
    """A gloo group still alive at interpreter exit can abort the process (SIGABRT: a worker thread releases a
    tensor during finalization); train() frees it, DDP's hold included, whether it returns or raises (at lr 1e30 the
    CE diverges: every rank raises right after the all-reduce of the train CE)."""
    train, dev = dirs
    script = tmp_path / "rank.py"
    script.write_text(RANK_EXIT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(train), str(dev), str(tmp_path / "exp"), str(lr)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = done.stdout + done.stderr[-3000:]
    assert done.returncode == 0, out
    assert done.stdout.count("group freed: True") == 2, out
    assert done.stdout.count("training diverged") == (2 if raises else 0), out


def test_two_gloo_processes_score_dev_with_rank_0s_bn_statistics(
    dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sequence BN under torchrun: batch statistics per rank, running averages rank 0's. Each rank scores its
    share of dev, so the dev CE final.pt records is `score frames` of final.pt only if every rank held rank 0's
    statistics at evaluation (after their last update the ranks' running averages differ)."""
    train, dev = dirs
    exp = tmp_path / "two"
    argv = ["train", str(train), str(dev), str(exp), *TINY, "--bn", "sequence", "--batch-size", "6", "--epochs", "2",
            "--nproc", "2"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["asr-bn", *argv])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, out = cli(*argv)
    assert code == 0, out
    final = load_checkpoint(exp / "final.pt", "asr-bn model")
    code, out = cli("score", "frames", exp, dev, "--device", "cpu")
    assert code == 0 and f"frame CE {final['dev_ce']:.4f} nats" in out, (out, final["dev_ce"])


def test_kept_models_average_into_a_model_dir(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """--keep-models keeps each evaluation's model (final.pt's format) without changing the run; `asr-bn average`
    writes the mean of the last K up to the best as a model dir that score frames reads; too few, another run's
    models or EXP_DIR as OUT_DIR are one-line errors."""
    from asr_bn.train.average import kept_models

    train, dev = dirs
    plain, kept = tmp_path / "plain", tmp_path / "kept"
    opts = [*TINY, "--epochs", "4", "--eval-every", "3", "--optimizer", "adam", "--patience", "0"]
    assert cli("train", train, dev, plain, *opts)[0] == 0
    code, out = cli("train", train, dev, kept, *opts, "--keep-models")
    assert code == 0, out
    models = kept_models(kept)
    assert list(models) == [r["update"] for r in rows(kept, "dev")] == [3, 4, 6, 8, 9, 12, 15, 16]
    final = load_checkpoint(kept / "final.pt", "asr-bn model")
    plain_final = load_checkpoint(plain / "final.pt", "asr-bn model")
    assert final["update"] == plain_final["update"] and all(  # the same run, bit for bit
        torch.equal(t, plain_final["model"][k]) for k, t in final["model"].items())
    best = load_checkpoint(models[final["update"]], "asr-bn model")
    assert all(torch.equal(t, final["model"][k]) for k, t in best["model"].items())
    upto = [u for u in models if u <= final["update"]]
    assert len(upto) >= 2, upto  # the tiny run learns until late: several models to average
    code, out = cli("average", kept, tmp_path / "avg", "--last", "2")
    assert code == 0, out
    averaged = load_checkpoint(tmp_path / "avg" / "final.pt", "asr-bn model")
    pair = [load_checkpoint(models[u], "asr-bn model")["model"] for u in upto[-2:]]
    for name, tensor in averaged["model"].items():
        if tensor.is_floating_point():
            expected = ((pair[0][name].double() + pair[1][name].double()) / 2).to(tensor.dtype)
            assert torch.equal(tensor, expected), name
        else:
            assert torch.equal(tensor, final["model"][name]), name
    assert averaged["averaged"] == upto[-2:] and averaged["dev_ce"] is None
    for name in ("pipeline.json", "priors.vec", "config.json", "report.json"):
        assert (tmp_path / "avg" / name).is_file(), name
    code, out = cli("score", "frames", tmp_path / "avg", dev)
    assert code == 0 and "CE" in out, out
    code, out = cli("average", kept, tmp_path / "many", "--last", str(len(upto) + 1))
    assert code == 2 and f"holds {len(upto)} model(s) up to the best update" in error_line(out)
    assert not (tmp_path / "many" / "final.pt").exists()
    code, out = cli("average", plain, tmp_path / "none", "--last", "1")
    assert code == 2 and "train with --keep-models" in error_line(out)
    code, out = cli("average", kept, kept)
    assert code == 2 and "is EXP_DIR itself" in error_line(out)
    foreign = kept / "models" / f"update-{upto[-2]}.pt"  # another run's model in its place: refused
    other = load_checkpoint(foreign, "asr-bn model")
    torch.save({**other, "priors": other["priors"] * 2}, foreign)
    code, out = cli("average", kept, tmp_path / "mixed", "--last", "2")
    assert code == 1 and "has another priors than" in error_line(out)
