"""The training loop, top to bottom: `train` holds the output dir, the process group and the stop signals around
`_train`, which runs `train_one_epoch` until the schedule says training is over."""

from __future__ import annotations

import contextlib
import math
import time

import torch

from asr_bn.config import TrainConfig
from asr_bn.errors import AsrBnError
from asr_bn.io import OutputLock, check_output_dir
from asr_bn.train.mmi import MmiObjective
from asr_bn.train.processes import Dist, StopSignals
from asr_bn.train.run import Run
from asr_bn.train.schedule import TrainState, is_finished, learning_rate


def train_one_epoch(run: Run) -> None:
    """Train until the epoch ends, training finishes (early stop) or a stop signal arrives; evaluate, log and
    checkpoint on the way."""
    cfg, sampler = run.cfg, run.sampler  # run.state is replaced by each evaluation: no local alias
    sampler.set_epoch(run.state.epoch)
    meter = Meter(run)
    batches = iter(run.train_loader)
    run.progress_start(len(sampler), sampler.position)
    while not run.stop_requested():
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            break
        meter.waited(time.perf_counter() - t0)
        batch = run.augmented(batch.check()).to(run.device)
        lr = learning_rate(cfg, run.state, len(sampler))
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        ce_sum, errors, mmi = run.step(batch, sampler.batch_num_frames(sampler.position))
        run.state.update += 1
        sampler.position += 1
        meter.add(ce_sum, errors, batch.num_frames, mmi)
        if run.state.update % cfg.log_every == 0:
            meter.log(lr)  # syncs with the GPU and the other ranks
        if cfg.eval_every and run.state.update % cfg.eval_every == 0:
            run.evaluate_and_schedule()
        if run.state.update % cfg.checkpoint_every == 0:
            run.save_checkpoint()
        if is_finished(cfg, run.state):  # early stop
            run.save_checkpoint()
            return
    else:
        return  # stopped by a signal: the caller saves the checkpoint
    if meter.frames:
        meter.log(learning_rate(cfg, run.state, len(sampler)))
    if run.state.last_eval_update != run.state.update:
        run.evaluate_and_schedule()
    run.state.epoch += 1
    run.save_checkpoint()


def train(cfg: TrainConfig, resume: bool = False, given: set[str] | None = None) -> tuple[TrainConfig, TrainState]:
    """Train (or with `resume`, continue from EXP_DIR/checkpoint.pt) until `cfg.epochs` or early stop.

    On resume the checkpoint's options hold, but for the options named in `given` (None: all of `cfg`), which
    apply where TrainConfig.resumed allows (each change is printed) and are refused otherwise.

    SIGTERM / SIGINT save a checkpoint and return early (`is_finished` False); under torchrun, all ranks take part and
    only rank 0 writes. Returns the run's options (on resume, the checkpoint's with the changes applied) and its
    final state (best dev CE and its update).
    """
    dist = Dist.from_env()
    check_output_dir(cfg.exp_dir, "EXP_DIR")
    lock = OutputLock(cfg.exp_dir) if dist.main else contextlib.nullcontext()
    with lock, dist.group(cfg.device), StopSignals() as stop:
        return _train(cfg, resume, given, dist, stop)  # the run (and its DDP wrapper) is gone before the group ends


def _train(
    cfg: TrainConfig, resume: bool, given: set[str] | None, dist: Dist, stop: StopSignals
) -> tuple[TrainConfig, TrainState]:
    """Epochs until done or stopped by a signal, then the learning curve and the closing line."""
    run = Run.setup(cfg, resume, given, dist, stop)
    try:
        while not is_finished(run.cfg, run.state) and not run.stop_requested():
            train_one_epoch(run)
        run.progress_stop()  # the last epoch's bar ends before the closing line
        run.plot()
        if not is_finished(run.cfg, run.state):
            run.save_checkpoint()
            run.say(f"stopped by a signal at update {run.state.update}; continue with --resume")
        else:
            best = run.state
            run.say(f"done: best dev CE {best.best_dev_ce:.4f} at update {best.best_update} → {run.exp / 'final.pt'}")
    finally:
        run.close()
    return run.cfg, run.state


class Meter:
    """Train CE/FER, frames/s and the share of time spent waiting for data since the last log line."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._reset()

    def _reset(self) -> None:
        self.ce = torch.zeros((), dtype=torch.float64, device=self.run.device)
        self.errors = torch.zeros((), dtype=torch.int64, device=self.run.device)
        self.frames = 0
        self.mmi: list[float] = []  # --criterion mmi: the objective and the dropped frames, summed
        self.wait = 0.0
        self.start = time.perf_counter()

    def waited(self, seconds: float) -> None:
        self.wait += seconds

    def add(self, ce_sum: torch.Tensor, errors: torch.Tensor, frames: int, mmi: MmiObjective | None = None) -> None:
        self.ce += ce_sum
        self.errors += errors
        self.frames += frames
        if mmi is not None:
            self.mmi = [a + b for a, b in zip(self.mmi or [0.0, 0.0], [mmi.objective, mmi.dropped])]
        if self.run.progress is not None:
            self.run.progress.advance(self.run.task)

    def log(self, lr: float) -> None:
        ce, errors, frames, *mmi = self.run.all_reduce([self.ce.item(), self.errors.item(), self.frames, *self.mmi])
        if not math.isfinite(ce):
            raise AsrBnError(
                f"training diverged: the frame CE is {ce} at update {self.run.state.update}; "
                f"lower --lr (now {lr:g}) or clip gradients with --clip-norm, and start again or --resume"
            )
        seconds = time.perf_counter() - self.start
        row = dict(
            kind="train", ce=ce / frames, fer=errors / frames, lr=lr, frames_per_s=frames / seconds,
            data_wait=self.wait / seconds,
        )  # fmt: skip
        if mmi:
            row.update(mmi=mmi[0] / frames, dropped=mmi[1] / frames)
        self.run.log(**row)
        if self.run.progress is not None:
            info = f"CE {row['ce']:.3f} FER {row['fer']:.1%} lr {lr:.2g} {row['frames_per_s']:,.0f} fr/s"
            info = info if not mmi else f"MMI {row['mmi']:.4f} {info}"
            self.run.progress.update(self.run.task, info=info)
        self._reset()
