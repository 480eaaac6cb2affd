"""`asr-bn train`: frame cross-entropy training of a BN-BLSTM on a prepared data dir, crash-safe and resumable.

    asr-bn train data/train_prep data/dev_prep exp/blstm_bn --preset paper --bn sequence
    asr-bn train data/train_prep data/dev_prep exp/blstm_bn --resume                # after a crash or SIGTERM
    asr-bn train data/train_prep data/dev_prep exp/blstm_bn --nproc 4               # 4 GPUs (torchrun)

Reads the prepared dirs of `asr-bn prep` (feats.scp, cmvn.scp, pdf.scp, utt2num_frames, pipeline.json) and writes
EXP_DIR/{final.pt (best by dev CE), checkpoint.pt (latest), config.json, pipeline.json, priors.vec, metrics.jsonl,
learning_curve.png, report.json} (docs/ARCHITECTURE.md).

The code reads top to bottom: `TrainConfig` (options, presets) → schedule (pure functions of `TrainState`) →
`compute_loss` / `evaluate` → `train_one_epoch` → `train`; checkpoints and set-up helpers follow.

Under DistributedDataParallel every global batch (`--batch-size` / `--max-frames` mean the same with 1 or N
processes) is split between the ranks and each rank's CE sum is divided by the global frame count, so N processes
follow the 1-process trajectory. Batch normalisation uses each rank's own sub-batch statistics (the paper's
per-minibatch statistics on a smaller minibatch); running averages are those of rank 0 (DDP broadcasts buffers).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import itertools
import json
import math
import os
import random
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from asr_bn import __version__
from asr_bn.augment import SpecAugment
from asr_bn.batching import (
    PAD_TARGET,
    Batch,
    BucketingSampler,
    UtteranceDataset,
    filter_by_length,
    make_loader,
    read_targets,
)
from asr_bn.config import PRESETS, ModelConfig, TrainConfig
from asr_bn.device import parse_device
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.features import FeaturePipeline
from asr_bn.io import OutputLock, atomic_path, check_output_dir, check_output_file, error_detail, write_text
from asr_bn.model import BnBlstm, reestimate_population_stats
from asr_bn.report import Report
from asr_bn.score import FrameScores, frame_scores

__all__ = [
    "TrainConfig",
    "TrainState",
    "PRESETS",
    "learning_rate",
    "after_eval",
    "is_finished",
    "compute_loss",
    "evaluate",
    "train",
    "launch",
    "load_checkpoint",
    "load_model",
    "save_atomic",
    "MODELS",
    "read_metrics",
    "plot_runs",
]

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


# -- schedule: pure functions of (config, state) ------------------------------------------------------------------


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
    halves the learning rate.
    """
    improved = dev_ce < state.best_dev_ce * (1.0 - cfg.min_improvement)  # the first finite CE improves on inf
    best = dev_ce < state.best_dev_ce
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


# -- loss and evaluation ------------------------------------------------------------------------------------------


def compute_loss(
    model: torch.nn.Module, batch: Batch, soft_weight: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked frame cross-entropy of a padded batch: (CE summed over real frames, frame errors), both on the
    device, no host sync. Padded frames (target PAD_TARGET, soft weight 0) never count. With `soft_weight` w the
    CE is (1 - w) x that toward the alignment + w x that toward the batch's soft targets (−Σ weight · log p)."""
    log_probs = model(batch.feats, batch.lengths)  # (B, T, S) log-softmax
    errors = ((log_probs.argmax(-1) != batch.targets) & (batch.targets != PAD_TARGET)).sum()
    log_probs = log_probs.float()
    ce_sum = F.nll_loss(log_probs.transpose(1, 2), batch.targets, ignore_index=PAD_TARGET, reduction="sum")
    if soft_weight:
        soft = -(batch.soft_weights * log_probs.gather(-1, batch.soft_pdfs)).sum()  # type: ignore[arg-type, operator]
        ce_sum = (1 - soft_weight) * ce_sum + soft_weight * soft
    return ce_sum, errors


def evaluate(model: torch.nn.Module, loader: torch.utils.data.DataLoader, run: "_Run") -> FrameScores:
    """Frame CE and FER of `model` on a whole dev loader (all ranks' shares summed)."""
    was_training = model.training
    model.eval()
    scores = FrameScores()
    with torch.no_grad(), run.autocast():
        for batch in loader:
            batch = batch.check().to(run.device)
            log_probs = model(batch.feats, batch.lengths).float()
            scores = scores + frame_scores(log_probs, batch.targets, batch.lengths)
    model.train(was_training)
    total = run.all_reduce([scores.ce_sum, scores.errors, scores.frames])
    return FrameScores(total[0], int(total[1]), int(total[2]))


# -- one epoch ----------------------------------------------------------------------------------------------------


def train_one_epoch(run: "_Run") -> None:
    """Train until the epoch ends, training finishes (early stop) or a stop signal arrives; evaluate, log and
    checkpoint on the way."""
    cfg, sampler = run.cfg, run.sampler  # run.state is replaced by each evaluation: no local alias
    sampler.set_epoch(run.state.epoch)
    meter = _Meter(run)
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
        ce_sum, errors = run.step(batch, sampler.batch_num_frames(sampler.position))
        run.state.update += 1
        sampler.position += 1
        meter.add(ce_sum, errors, batch.num_frames)
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


# -- the whole run ------------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, resume: bool = False, given: set[str] | None = None) -> tuple[TrainConfig, TrainState]:
    """Train (or with `resume`, continue from EXP_DIR/checkpoint.pt) until `cfg.epochs` or early stop.

    On resume the checkpoint's options hold, but for the options named in `given` (None: all of `cfg`), which
    apply where TrainConfig.resumed allows (each change is printed) and are refused otherwise.

    SIGTERM / SIGINT save a checkpoint and return early (`is_finished` False); under torchrun, all ranks take part and
    only rank 0 writes. Returns the run's options (on resume, the checkpoint's with the changes applied) and its
    final state (best dev CE and its update).
    """
    dist = _Dist.from_env()
    check_output_dir(cfg.exp_dir, "EXP_DIR")
    lock = OutputLock(cfg.exp_dir) if dist.main else contextlib.nullcontext()
    with lock, dist.group(cfg.device), _StopSignals() as stop:
        return _train(cfg, resume, given, dist, stop)  # the run (and its DDP wrapper) is gone before the group ends


def _train(
    cfg: TrainConfig, resume: bool, given: set[str] | None, dist: _Dist, stop: _StopSignals
) -> tuple[TrainConfig, TrainState]:
    """Epochs until done or stopped by a signal, then the learning curve and the closing line."""
    run = _Run.setup(cfg, resume, given, dist, stop)
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


# -- checkpoints --------------------------------------------------------------------------------------------------

_ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of every file torch.save writes
_UNPICKLER = "WeightsUnpickler error:"
CHECKPOINT_FORMAT = "asr-bn checkpoint"
MODEL_FORMAT = "asr-bn model"
MODELS = "models"  # EXP_DIR/models/update-N.pt: each evaluation's model, with --keep-models
_MODEL_KEYS = ("version", "model", "model_config", "pipeline", "priors", "train_config")
_KEYS = {
    MODEL_FORMAT: (*_MODEL_KEYS, "update", "epoch", "dev_ce", "dev_fer"),
    CHECKPOINT_FORMAT: (*_MODEL_KEYS, "optimizer", "scaler", "state", "sampler", "rng"),
}


def load_checkpoint(path: str | Path, expect: str = CHECKPOINT_FORMAT) -> dict[str, Any]:
    """Read a checkpoint.pt / final.pt written by `train`; anything else (truncated, corrupt, foreign) is a
    one-line AsrBnError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError as e:
        raise AsrBnError(f"{path} does not exist (train a model first, or drop --resume)") from e
    except OSError as e:
        raise AsrBnError(f"cannot read {path}: {e.strerror or e}") from e
    if magic != _ZIP_MAGIC:  # torch.save writes zip files; a JSON, text or empty file is no checkpoint at all
        raise AsrBnError(
            f"{path} is not an asr-bn model or checkpoint (not a PyTorch zip file); give a model dir of "
            "`asr-bn train` or its final.pt (a damaged checkpoint.pt: delete it or train again)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files (pickle, zip, EOF, runtime)
        text = str(e)  # weights_only failures: a paragraph of advice, then what was found after this marker
        found = text.split(_UNPICKLER)[-1].strip().splitlines()[0].split(". ")[0] if _UNPICKLER in text else ""
        detail = found or error_detail(e, 160)
        raise AsrBnError(f"{path} is corrupt or not an asr-bn file ({detail}); delete it or train again") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != expect:
        raise AsrBnError(f"{path} is not an {expect} file; delete it or train again")
    missing = [k for k in _KEYS[expect] if k not in ckpt]
    if missing:
        version = ckpt.get("version", "?")
        raise AsrBnError(f"{path} lacks {', '.join(missing)} (written by asr-bn {version}); train again")
    return ckpt


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a final.pt (or checkpoint.pt), in eval mode, and the file's contents (model_config,
    pipeline, priors, dev scores)."""
    path = Path(path)
    try:
        ckpt = load_checkpoint(path, MODEL_FORMAT)
    except AsrBnError:
        ckpt = load_checkpoint(path, CHECKPOINT_FORMAT)
    model = BnBlstm(_saved_model_config(ckpt, path))
    _load_state(model, ckpt["model"], path)
    return model.eval(), ckpt


def _saved_model_config(ckpt: dict[str, Any], path: Path) -> ModelConfig:
    try:
        return ModelConfig.from_dict(ckpt["model_config"])
    except (ValueError, TypeError, KeyError) as e:
        raise AsrBnError(f"{path} holds an invalid model config ({e}); delete it or train again") from e


def _load_state(module: torch.nn.Module | torch.optim.Optimizer, state: dict, path: Path) -> None:
    """load_state_dict that turns a mismatch into one line, never a partial load (strict for modules)."""
    try:
        if isinstance(module, torch.nn.Module):
            module.load_state_dict(state, strict=True)
        else:
            module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as e:
        raise AsrBnError(
            f"{path} does not fit this model ({error_detail(e, 200)}); it was written for another model shape: delete "
            "it or train again"
        ) from e


def _rng_state() -> dict[str, Any]:
    """Every RNG training touches (python, numpy, torch, cuda), in a form torch.load(weights_only=True) reads."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(path: Path, obj: dict[str, Any]) -> None:
    """torch.save to a temporary name, fsync, rename: `path` is always a whole file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


# -- set-up and bookkeeping of a run ------------------------------------------------------------------------------


@dataclass
class _Dist:
    """This process's place under torchrun (rank 0 of 1 without it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "_Dist":
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


class _StopSignals:
    """SIGTERM / SIGINT set a flag (the loop saves a checkpoint and returns) instead of killing the run."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        self.requested = True

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


def _pdf_counts(cfg: TrainConfig, utts: list[str]) -> np.ndarray:
    """Frames per pdf of the training targets, as long as the model's output layer: --num-pdfs, else the pdf
    count of the alignment model (the data dir's targets report), else the largest pdf-id + 1."""
    from asr_bn.alignments import TARGETS_REPORT, count_pdfs

    num_pdfs = cfg.num_pdfs
    report = Path(cfg.data) / TARGETS_REPORT
    if num_pdfs is None and report.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            num_pdfs = int(json.loads(report.read_text(encoding="utf-8"))["counts"]["num_pdfs"])
    counts = count_pdfs(read_targets(cfg.data, utts).values(), num_pdfs or 0)
    if num_pdfs is not None and len(counts) > num_pdfs:
        raise AsrBnError(
            f"{Path(cfg.data) / 'pdf.scp'} has pdf-id {len(counts) - 1}, outside the model's {num_pdfs} outputs "
            "(targets from another tree? re-align, or give the right --num-pdfs)"
        )
    if not counts.sum():
        raise AsrBnError(f"{Path(cfg.data) / 'pdf.scp'} holds no targets (run the alignment step of `asr-bn prep`)")
    return counts


@dataclass
class _Run:
    """Everything one training process holds: config, data, model, optimiser, state, and the places it writes."""

    cfg: TrainConfig
    dist: _Dist
    device: torch.device
    stop: _StopSignals
    train_set: UtteranceDataset
    sampler: BucketingSampler
    train_loader: torch.utils.data.DataLoader
    dev_loader: torch.utils.data.DataLoader
    population_loader: torch.utils.data.DataLoader | None  # --population-batches: fixed training batches
    model: torch.nn.Module  # the DDP wrapper under torchrun, else the model itself
    raw_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: TrainState
    model_config: ModelConfig
    pipeline: FeaturePipeline
    priors: list[int]
    exp: Path
    augment: SpecAugment
    tb: Any = None
    progress: Any = None
    task: Any = None
    _stop_seen: bool = field(default=False)

    # ---- set-up

    @classmethod
    def setup(cls, cfg: TrainConfig, resume: bool, given: set[str] | None, dist: _Dist, stop: _StopSignals) -> "_Run":
        exp = Path(cfg.exp_dir)
        ckpt = None
        changes: list[str] = []
        if resume:
            ckpt = load_checkpoint(exp / "checkpoint.pt")
            try:
                cfg, changes = cfg.resumed(ckpt["train_config"], given)
            except (TypeError, ValueError) as e:
                raise AsrBnError(f"{exp / 'checkpoint.pt'} holds an invalid training config ({e}); train again") from e
        elif (exp / "checkpoint.pt").exists():
            raise UsageError(f"{exp} already holds a training run; continue it with --resume, or choose a new EXP_DIR")
        device = parse_device(cfg.device, dist.local_rank)
        if cfg.amp == "fp16" and device.type != "cuda":
            raise UsageError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")

        report = Report("train")
        utts, lengths = filter_by_length(cfg.data, cfg.max_train_frames, report, soft=cfg.soft_weight > 0)
        dev_utts, dev_lengths = filter_by_length(cfg.dev, None, report, role="dev")
        pipeline = FeaturePipeline.load(Path(cfg.data) / "pipeline.json")
        dev_pipeline = FeaturePipeline.load(Path(cfg.dev) / "pipeline.json")
        if dev_pipeline != pipeline:
            raise AsrBnError(
                f"{cfg.dev}/pipeline.json differs from {cfg.data}/pipeline.json in {pipeline.mismatch(dev_pipeline)}"
            )
        priors = [int(c) for c in ckpt["priors"]] if ckpt else [int(c) for c in _pdf_counts(cfg, utts)]
        train_set = UtteranceDataset(cfg.data, len(priors), utts, cache=cfg.cache, soft=cfg.soft_weight > 0)
        dev_set = UtteranceDataset(cfg.dev, len(priors), dev_utts, cache=cfg.cache)
        sampler = BucketingSampler(
            lengths, cfg.batch_size, cfg.max_frames, seed=cfg.seed, drop_last=cfg.drop_last, rank=dist.rank,
            world_size=dist.world,
        )
        dev_sampler = BucketingSampler(
            dev_lengths, cfg.batch_size, cfg.max_frames, shuffle=False, rank=dist.rank, world_size=dist.world
        )
        train_loader = make_loader(train_set, sampler, cfg.num_workers, pin_memory=device.type == "cuda")
        dev_loader = make_loader(dev_set, dev_sampler, cfg.num_workers, pin_memory=device.type == "cuda")
        population_loader = None
        if cfg.population_batches and cfg.bn != "none":  # the same batches on every rank and every evaluation
            population_sampler = BucketingSampler(lengths, cfg.batch_size, cfg.max_frames, seed=cfg.seed)
            population_loader = make_loader(train_set, population_sampler, 0, pin_memory=device.type == "cuda")

        if ckpt:
            if ckpt["pipeline"] != pipeline.to_dict():
                trained_on = FeaturePipeline.from_dict(ckpt["pipeline"]).mismatch(pipeline)
                raise AsrBnError(
                    f"{cfg.data}/pipeline.json differs from the features {exp / 'checkpoint.pt'} was trained on "
                    f"in {trained_on}"
                )
            model_config = _saved_model_config(ckpt, exp / "checkpoint.pt")
        else:
            model_config = cfg.model_config(pipeline.output_dim, len(priors))
        augment = SpecAugment(cfg.num_frame_masks, cfg.frames_mask_size, cfg.num_feature_masks, cfg.features_mask_size)
        augment.check(model_config.input_dim)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        raw_model = BnBlstm(model_config).to(device)
        optimizer = _make_optimizer(cfg, raw_model)
        scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        state = TrainState()
        if ckpt:
            path = exp / "checkpoint.pt"
            _load_state(raw_model, ckpt["model"], path)
            _load_state(optimizer, ckpt["optimizer"], path)
            if ckpt["scaler"]:  # empty when saved without --amp fp16
                scaler.load_state_dict(ckpt["scaler"])
            state = TrainState(**ckpt["state"])
            sampler.load_state_dict(ckpt["sampler"])
            rng = ckpt["rng"]
            _set_rng_state(rng[dist.rank] if len(rng) == dist.world else rng[0])
        else:
            torch.manual_seed(cfg.seed + 1 + dist.rank)  # dropout masks differ between ranks
        model = raw_model
        if dist.world > 1:
            device_ids = [device.index] if device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(raw_model, device_ids=device_ids)

        run = cls(
            cfg, dist, device, stop, train_set, sampler, train_loader, dev_loader, population_loader, model,
            raw_model, optimizer, scaler, state, model_config, pipeline, priors, exp, augment,
        )  # fmt: skip
        if dist.main:
            run._write_run_files(report, resumed=changes if ckpt is not None else None)
        return run

    def _write_run_files(self, report: Report, resumed: list[str] | None) -> None:
        """config.json, pipeline.json, priors.vec, report.json and the metrics log; `resumed`: the options the
        resume changed (None for a new run)."""
        from asr_bn.alignments import write_counts

        self.exp.mkdir(parents=True, exist_ok=True)
        write_text(self.exp / "config.json", json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        self.pipeline.save(self.exp / "pipeline.json")
        write_counts(self.exp / "priors.vec", np.array(self.priors))
        report.save(self.exp / "report.json")
        for line in report.lines():
            self.say(line)
        metrics = self.exp / "metrics.jsonl"
        if resumed is not None:  # rows logged after the checkpoint are redone: drop them
            rows = [r for r in read_metrics(self.exp) if r["update"] <= self.state.update] if metrics.exists() else []
            write_text(metrics, "".join(json.dumps(r) + "\n" for r in rows))
            changed = f"; changed: {', '.join(resumed)}" if resumed else ""
            self.say(f"resuming at epoch {self.state.epoch + 1}, update {self.state.update}{changed}")
        else:
            write_text(metrics, "")
            self.say(
                f"training {self.model_config.layers} x {self.model_config.units} BLSTM (bn {self.model_config.bn}) "
                f"on {len(self.train_set)} utterances, {len(self.sampler)} updates per epoch, device {self.device}"
            )
        if self.cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = self.state.update + 1 if resumed else None  # drop the events of lost updates
            self.tb = SummaryWriter(str(self.exp / "tensorboard"), purge_step=purge)

    # ---- one update

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision per --amp (bf16 / fp16), or nothing."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.amp)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def augmented(self, batch: Batch) -> Batch:
        """`batch` with this update's SpecAugment masks, drawn from (seed, rank, update): the same on resume."""
        return self.augment(batch, np.random.default_rng([self.cfg.seed, self.dist.rank, self.state.update]))

    def step(self, batch: Batch, global_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward, clip, optimizer step on one batch; returns (CE sum, errors) on the device."""
        try:
            with self.autocast():
                ce_sum, errors = compute_loss(self.model, batch, self.cfg.soft_weight)
            # Each rank divides by the global frame count; DDP averages gradients over ranks, hence × world.
            loss = ce_sum * (self.dist.world / global_frames)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        except RuntimeError as e:
            flag = "--max-frames" if self.cfg.max_frames else "--batch-size (or use --max-frames)"
            oom = batch.out_of_memory(e, self.device, f"lower {flag} or --max-train-frames")
            if oom is None:
                raise
            raise oom from e
        if self.cfg.clip_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.cfg.clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return ce_sum.detach(), errors

    # ---- evaluation, schedule, best model

    def evaluate_and_schedule(self) -> None:
        """Dev CE/FER now; update the schedule state; keep the best model as final.pt."""
        self.sync_buffers()
        model = self.inference_model()
        scores = evaluate(model, self.dev_loader, self)
        self.state, best = after_eval(self.cfg, self.state, scores.ce)
        self.log(kind="dev", ce=scores.ce, fer=scores.fer, frames=scores.frames)
        self.say(
            f"update {self.state.update} (epoch {self.state.epoch + 1}): dev CE {scores.ce:.4f} FER {scores.fer:.2%}"
            + (" (best)" if best else f" (best {self.state.best_dev_ce:.4f})")
            + (" — early stop" if self.cfg.patience and self.state.bad_evals >= self.cfg.patience else "")
        )
        if not self.dist.main or not (best or self.cfg.keep_models):
            return
        saved = {
            "format": MODEL_FORMAT, "version": __version__, "model": model.state_dict(),
            "model_config": self.model_config.to_dict(), "pipeline": self.pipeline.to_dict(),
            "priors": self.priors, "update": self.state.update, "epoch": self.state.epoch,
            "dev_ce": scores.ce, "dev_fer": scores.fer, "train_config": self.cfg.to_dict(),
        }  # fmt: skip
        if best:
            save_atomic(self.exp / "final.pt", saved)
        if self.cfg.keep_models:  # for checkpoint averaging (asr-bn average)
            (self.exp / MODELS).mkdir(exist_ok=True)
            save_atomic(self.exp / MODELS / f"update-{self.state.update}.pt", saved)

    def inference_model(self) -> torch.nn.Module:
        """The model dev scores and final.pt use: the trained one, or (--population-batches) a copy whose BN
        running statistics are replaced by population statistics over the fixed training batches."""
        if self.population_loader is None:
            return self.raw_model
        model = copy.deepcopy(self.raw_model)
        batches = (b.to(self.device) for b in itertools.islice(self.population_loader, self.cfg.population_batches))
        with self.autocast():
            reestimate_population_stats(model, ((b.feats, b.lengths) for b in batches))
        return model

    def save_checkpoint(self) -> None:
        """Everything needed to continue bitwise: weights, optimiser, scaler, schedule state, sampler position,
        every rank's RNG states, features, priors, configs, version (rank 0 writes)."""
        rng = self.gather(_rng_state())
        if not self.dist.main:
            return
        save_atomic(self.exp / "checkpoint.pt", {
            "format": CHECKPOINT_FORMAT, "version": __version__, "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "state": dataclasses.asdict(self.state), "sampler": self.sampler.state_dict(), "rng": rng,
            "pipeline": self.pipeline.to_dict(), "priors": self.priors, "model_config": self.model_config.to_dict(),
            "train_config": self.cfg.to_dict(),
        })  # fmt: skip

    # ---- what the user sees

    def say(self, text: str) -> None:
        if self.dist.main:
            from rich.console import Console

            (self.progress.console if self.progress else Console(stderr=True)).print(text, highlight=False)

    def log(self, **row: Any) -> None:
        """One metrics.jsonl row (and TensorBoard scalars) at the current update."""
        if not self.dist.main:
            return
        row = {"update": self.state.update, "epoch": self.state.epoch, **row}
        with open(self.exp / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for key in ("ce", "fer", "lr", "frames_per_s", "data_wait"):
                if key in row:
                    self.tb.add_scalar(f"{row['kind']}/{key}", row[key], self.state.update)

    def progress_start(self, total: int, done: int) -> None:
        if not self.dist.main:
            return
        from asr_bn.progress import progress_bar

        if self.progress is None:
            self.progress = progress_bar()
            self.progress.start()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            f"epoch {self.state.epoch + 1}/{self.cfg.epochs}", total=total, completed=done, info=""
        )

    def progress_stop(self) -> None:
        """End the epoch bar (what is said next goes below it)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress, self.task = None, None

    def plot(self) -> None:
        if self.dist.main and read_metrics(self.exp):  # none yet when a signal stopped the run before its first row
            plot_runs([self.exp], self.exp / "learning_curve.png")

    def close(self) -> None:
        self.progress_stop()
        if self.tb is not None:
            self.tb.close()

    # ---- between ranks

    def stop_requested(self) -> bool:
        """True once SIGTERM/SIGINT arrived; ranks agree at log intervals (a collective each), so all stop at the
        same update."""
        if self.dist.world == 1 or self._stop_seen:
            self._stop_seen = self._stop_seen or self.stop.requested
            return self._stop_seen
        if self.state.update % self.cfg.log_every == 0:
            self._stop_seen = self.all_reduce([float(self.stop.requested)], op="max")[0] > 0
        return self._stop_seen

    def all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Sum (or max) numbers over ranks; the numbers themselves with one process."""
        if self.dist.world == 1:
            return [float(v) for v in values]
        import torch.distributed as td

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        td.all_reduce(t, op=td.ReduceOp.MAX if op == "max" else td.ReduceOp.SUM)
        return t.tolist()

    def sync_buffers(self) -> None:
        """Give every rank rank 0's BN running statistics (DDP copies them only at the next training forward)."""
        if self.dist.world > 1:
            import torch.distributed as td

            for buffer in self.raw_model.buffers():
                td.broadcast(buffer, 0)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (on every rank)."""
        if self.dist.world == 1:
            return [obj]
        import torch.distributed as td

        out: list[Any] = [None] * self.dist.world
        td.all_gather_object(out, obj)
        return out


class _Meter:
    """Train CE/FER, frames/s and the share of time spent waiting for data since the last log line."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self._reset()

    def _reset(self) -> None:
        self.ce = torch.zeros((), dtype=torch.float64, device=self.run.device)
        self.errors = torch.zeros((), dtype=torch.int64, device=self.run.device)
        self.frames = 0
        self.wait = 0.0
        self.start = time.perf_counter()

    def waited(self, seconds: float) -> None:
        self.wait += seconds

    def add(self, ce_sum: torch.Tensor, errors: torch.Tensor, frames: int) -> None:
        self.ce += ce_sum
        self.errors += errors
        self.frames += frames
        if self.run.progress is not None:
            self.run.progress.advance(self.run.task)

    def log(self, lr: float) -> None:
        ce, errors, frames = self.run.all_reduce([self.ce.item(), self.errors.item(), self.frames])  # GPU sync
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
        self.run.log(**row)
        if self.run.progress is not None:
            info = f"CE {row['ce']:.3f} FER {row['fer']:.1%} lr {lr:.2g} {row['frames_per_s']:,.0f} fr/s"
            self.run.progress.update(self.run.task, info=info)
        self._reset()


def _make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


# -- learning curves ----------------------------------------------------------------------------------------------


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of RUN_DIR/metrics.jsonl (a torn last line from a killed run is ignored)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise AsrBnError(f"{path} is missing: {run_dir} is not an `asr-bn train` directory")
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():  # bad bytes: a bad line, skipped
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows


def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """Train (dashed) and dev (solid) frame CE and FER against updates, one colour per run, on one PNG — the
    paper's learning-curve figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = check_output_file(out, "--out")
    labels = labels or [Path(d).name for d in run_dirs]
    fig, (ax_ce, ax_fer) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (run_dir, label) in enumerate(zip(run_dirs, labels)):
        rows = read_metrics(run_dir)
        if not rows:
            raise AsrBnError(f"{Path(run_dir) / 'metrics.jsonl'} holds no metrics rows (a run stopped before its first "
                             "--log-every updates, or not a metrics file); train further or leave it out")
        color = f"C{i}"
        for kind, style in (("train", "--"), ("dev", "-")):
            pts = [r for r in rows if r.get("kind") == kind]
            if pts:
                x = [r["update"] for r in pts]
                ax_ce.plot(x, [r["ce"] for r in pts], style, color=color, label=f"{label} {kind}")
                ax_fer.plot(x, [100 * r["fer"] for r in pts], style, color=color, label=f"{label} {kind}")
    for ax, name in ((ax_ce, "frame cross-entropy (nats)"), (ax_fer, "frame error rate (%)")):
        ax.set_xlabel("updates")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    ax_ce.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
