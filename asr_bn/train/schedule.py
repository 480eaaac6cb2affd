"""Where training stands (`TrainState`, saved in every checkpoint) and the schedule as pure functions of (options,
state): the learning rate of the next update, what a dev evaluation changes, when training is over."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from asr_bn.config import TrainConfig


@dataclass
class TrainState:
    """Where training stands: all the schedule and early stopping depend on (saved in every checkpoint)."""

    update: int = 0
    epoch: int = 0
    halvings: int = 0
    best_dev_ce: float = math.inf
    best_update: int = -1
    bad_evals: int = 0
    last_eval_update: int = -1


def learning_rate(cfg: TrainConfig, state: TrainState, updates_per_epoch: int) -> float:
    """The learning rate of the next update: constant, newbob (× lr_decay per halving) or exponential decay
    (× lr_decay per epoch, smoothly over updates)."""
    if cfg.schedule == "newbob":
        return cfg.lr * cfg.lr_decay**state.halvings
    if cfg.schedule == "exponential":
        return cfg.lr * cfg.lr_decay ** (state.update / max(1, updates_per_epoch))
    return cfg.lr


def after_eval(cfg: TrainConfig, state: TrainState, dev_ce: float) -> tuple[TrainState, bool]:
    """The state after a dev evaluation, and whether it is the best so far (→ final.pt).

    No improvement (relative gain below min_improvement) counts towards early stopping and, under newbob,
    halves the learning rate. Under --criterion mmi each evaluation is the best (Kaldi's sequence training runs its
    epochs and keeps the last model).
    """
    improved = dev_ce < state.best_dev_ce * (1.0 - cfg.min_improvement)  # the first finite CE improves on inf
    best = dev_ce < state.best_dev_ce
    if cfg.criterion == "mmi":  # sequence training lowers WER, not frame CE: every epoch runs, the last model counts
        improved = best = True
    new = dataclasses.replace(
        state,
        best_dev_ce=dev_ce if best else state.best_dev_ce,
        best_update=state.update if best else state.best_update,
        bad_evals=0 if improved else state.bad_evals + 1,
        halvings=state.halvings + (cfg.schedule == "newbob" and not improved),
        last_eval_update=state.update,
    )
    return new, best


def is_finished(cfg: TrainConfig, state: TrainState) -> bool:
    """Training is over: `cfg.epochs` epochs done, or `cfg.patience` evaluations in a row without improvement
    (a function of the options, so --resume with more --epochs or --patience continues a finished run)."""
    return state.epoch >= cfg.epochs or bool(cfg.patience and state.bad_evals >= cfg.patience)

