"""One training process's set-up and bookkeeping (`Run`): data, model, optimiser and state built or resumed, one
update, dev evaluation with the best model kept, checkpoints, what the user sees, agreement between ranks."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_bn import __version__
from asr_bn.augment import SpecAugment
from asr_bn.batching import Batch, BucketingSampler, UtteranceDataset, filter_by_length, make_loader, read_targets
from asr_bn.config import ModelConfig, TrainConfig
from asr_bn.device import parse_device
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.features import FeaturePipeline
from asr_bn.io import file_in, write_text
from asr_bn.model import BnBlstm, reestimate_population_stats
from asr_bn.report import Report
from asr_bn.score import FrameScores, frame_scores
from asr_bn.train.checkpoint import (
    CHECKPOINT_FORMAT, MODEL_FORMAT, MODELS, load_checkpoint, load_state, rng_state, save_atomic, saved_model_config,
    set_rng_state,
)
from asr_bn.train.curves import plot_runs, read_metrics
from asr_bn.train.loss import compute_loss
from asr_bn.train.mmi import Mmi, MmiObjective
from asr_bn.train.processes import Dist, StopSignals
from asr_bn.train.schedule import TrainState, after_eval


def pdf_counts(cfg: TrainConfig, utts: list[str]) -> np.ndarray:
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
class Run:
    """Everything one training process holds: config, data, model, optimiser, state, and the places it writes."""

    cfg: TrainConfig
    dist: Dist
    device: torch.device
    stop: StopSignals
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
    mmi: Mmi | None = None  # --criterion mmi: the denominator lattices and what scores them
    tb: Any = None
    progress: Any = None
    task: Any = None
    _stop_seen: bool = field(default=False)

    # ---- set-up

    @classmethod
    def setup(cls, cfg: TrainConfig, resume: bool, given: set[str] | None, dist: Dist, stop: StopSignals) -> "Run":
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
        init = _init_model(cfg) if cfg.init and not ckpt else None
        dev_utts, dev_lengths = filter_by_length(cfg.dev, None, report, role="dev")
        pipeline = FeaturePipeline.load(Path(cfg.data) / "pipeline.json")
        dev_pipeline = FeaturePipeline.load(Path(cfg.dev) / "pipeline.json")
        if dev_pipeline != pipeline:
            raise AsrBnError(
                f"{cfg.dev}/pipeline.json differs from {cfg.data}/pipeline.json in {pipeline.mismatch(dev_pipeline)}"
            )
        saved = ckpt or init
        priors = [int(c) for c in ckpt["priors"]] if ckpt else [int(c) for c in pdf_counts(cfg, utts)]
        if init and len(priors) != len(init["priors"]):
            raise AsrBnError(f"{cfg.data}'s targets have {len(priors)} pdfs but {init['path']} {len(init['priors'])} "
                             "outputs (--init a model trained on this alignment model's targets)")
        mmi = Mmi.for_training(cfg, np.array(priors)) if cfg.criterion == "mmi" else None
        if mmi is not None:
            utts, lengths = mmi.with_lattices(utts, lengths, report)
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

        if saved:
            where = exp / "checkpoint.pt" if ckpt else Path(saved["path"])
            if saved["pipeline"] != pipeline.to_dict():
                trained_on = FeaturePipeline.from_dict(saved["pipeline"]).mismatch(pipeline)
                raise AsrBnError(
                    f"{cfg.data}/pipeline.json differs from the features {where} was trained on in {trained_on}"
                )
            model_config = saved_model_config(saved, where)
        else:
            model_config = cfg.model_config(pipeline.output_dim, len(priors))
        augment = SpecAugment(cfg.num_frame_masks, cfg.frames_mask_size, cfg.num_feature_masks, cfg.features_mask_size)
        augment.check(model_config.input_dim)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        raw_model = BnBlstm(model_config).to(device)
        optimizer = make_optimizer(cfg, raw_model)
        scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        state = TrainState()
        if ckpt:
            path = exp / "checkpoint.pt"
            load_state(raw_model, ckpt["model"], path)
            load_state(optimizer, ckpt["optimizer"], path)
            if ckpt["scaler"]:  # empty when saved without --amp fp16
                scaler.load_state_dict(ckpt["scaler"])
            state = TrainState(**ckpt["state"])
            sampler.load_state_dict(ckpt["sampler"])
            rng = ckpt["rng"]
            set_rng_state(rng[dist.rank] if len(rng) == dist.world else rng[0])
        else:
            if init:
                load_state(raw_model, init["model"], Path(init["path"]))
            torch.manual_seed(cfg.seed + 1 + dist.rank)  # dropout masks differ between ranks
        model = raw_model
        if dist.world > 1:
            device_ids = [device.index] if device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(raw_model, device_ids=device_ids)

        run = cls(
            cfg, dist, device, stop, train_set, sampler, train_loader, dev_loader, population_loader, model,
            raw_model, optimizer, scaler, state, model_config, pipeline, priors, exp, augment, mmi,
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

    def step(self, batch: Batch, global_frames: int) -> tuple[torch.Tensor, torch.Tensor, MmiObjective | None]:
        """Forward, backward, clip, optimizer step on one batch; returns (CE sum, errors) on the device and, with
        --criterion mmi, the batch's MMI pass (whose loss was minimised)."""
        try:
            with self.autocast():
                ce_sum, errors, mmi = compute_loss(self.model, batch, self.cfg.soft_weight, self.mmi)
            # Each rank divides by the global frame count; DDP averages gradients over ranks, hence × world.
            loss = (ce_sum if mmi is None else mmi.loss) * (self.dist.world / global_frames)
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
        return ce_sum.detach(), errors, mmi

    # ---- evaluation, schedule, best model

    def evaluate_and_schedule(self) -> None:
        """Dev CE/FER now; update the schedule state; keep the best model as final.pt."""
        self.sync_buffers()
        model = self.inference_model()
        scores = self.dev_scores(model)
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

    def dev_scores(self, model: torch.nn.Module) -> FrameScores:
        """Frame CE and FER of `model` on the whole dev set (all ranks' shares summed)."""
        was_training = model.training
        model.eval()
        scores = FrameScores()
        with torch.no_grad(), self.autocast():
            for batch in self.dev_loader:
                batch = batch.check().to(self.device)
                log_probs = model(batch.feats, batch.lengths).float()
                scores = scores + frame_scores(log_probs, batch.targets, batch.lengths)
        model.train(was_training)
        total = self.all_reduce([scores.ce_sum, scores.errors, scores.frames])
        return FrameScores(total[0], int(total[1]), int(total[2]))

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
        rng = self.gather(rng_state())
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


def _init_model(cfg: TrainConfig) -> dict[str, Any]:
    """The final.pt that --init names (a model dir or the file), with its path under "path"."""
    try:
        path = file_in(cfg.init, "final.pt", "model", "give the dir of an `asr-bn train` run or its final.pt to --init")  # type: ignore[arg-type]
    except AsrBnError as e:
        raise UsageError(str(e)) from None  # an option's value, refused where it is parsed
    return {**load_checkpoint(path, MODEL_FORMAT), "path": str(path)}


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

