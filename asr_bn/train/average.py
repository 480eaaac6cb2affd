"""`asr-bn average EXP_DIR OUT_DIR --last K`: checkpoint averaging of a training run (icefall's `--avg`, Kaldi
nnet3's `nnet3-average`): the element-wise mean of the last K models `asr-bn train --keep-models` kept up to and
including the best one (final.pt's update), written as a model dir that `forward`, `score frames` and `decode` use
as any other. Averaging the weights of nearby points of one run smooths the noise of the last updates.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import OutputLock, atomic_path, begin_run, check_output_dir, file_in
from asr_bn.report import Report
from asr_bn.train.checkpoint import MODEL_FORMAT, MODELS, load_checkpoint, save_atomic

__all__ = ["average_models", "kept_models"]

# Beside final.pt in a model dir: what forward and score frames read (pipeline.json, priors.vec) and the run's options.
_COPIED = ("pipeline.json", "priors.vec", "config.json")


def kept_models(exp_dir: str | Path) -> dict[int, Path]:
    """EXP_DIR/models/update-N.pt by update N, in order (empty without --keep-models)."""
    found = {}
    for path in (Path(exp_dir) / MODELS).glob("update-*.pt"):
        match = re.fullmatch(r"update-(\d+)\.pt", path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def average_models(exp_dir: str | Path, out_dir: str | Path, last: int) -> Report:
    """Write OUT_DIR/final.pt, the mean of the `last` kept models of EXP_DIR up to and including its best (final.pt's
    update), with EXP_DIR's pipeline.json, priors.vec and config.json beside it; report.json names the updates.
    Floating-point tensors (weights, BN running statistics) are averaged in double; the others (BN's batch counts)
    are the best model's. Models of another shape, features or targets than final.pt's are refused."""
    exp_dir = Path(exp_dir)
    if last < 1:
        raise UsageError(f"--last must be at least 1, got {last}")
    final = file_in(exp_dir, "final.pt", "model dir", "give the dir of an `asr-bn train` run")
    out_dir = check_output_dir(out_dir, "OUT_DIR")
    if out_dir.resolve() == exp_dir.resolve():
        raise UsageError(f"OUT_DIR {out_dir} is EXP_DIR itself; choose another dir for the averaged model")
    best = load_checkpoint(final, MODEL_FORMAT)
    kept = {u: p for u, p in kept_models(exp_dir).items() if u <= best["update"]}
    if len(kept) < last:
        raise UsageError(
            f"{exp_dir / MODELS} holds {len(kept)} model(s) up to the best update {best['update']}, fewer than "
            f"--last {last}: train with --keep-models (or --eval-every N for more of them), or ask for fewer"
        )
    chosen = list(kept.items())[-last:]
    if chosen[-1][0] != best["update"]:
        raise AsrBnError(f"{exp_dir / MODELS} lacks the best model (update {best['update']}, final.pt): was "
                         "--keep-models turned on after it? Train again with --keep-models from the start")
    total: dict[str, torch.Tensor] = {}
    for update, path in chosen:
        ckpt = load_checkpoint(path, MODEL_FORMAT)
        for key in ("model_config", "pipeline", "priors"):
            if ckpt[key] != best[key]:
                raise AsrBnError(f"{path} has another {key.replace('_', ' ')} than {final}: average the models of "
                                 "one training run")
        for name, tensor in ckpt["model"].items():
            if tensor.is_floating_point():
                total[name] = total.get(name, 0) + tensor.double()
    model = {name: (total[name] / last).to(t.dtype) if t.is_floating_point() else t
             for name, t in best["model"].items()}
    updates = [u for u, _ in chosen]
    report = Report("average")
    with OutputLock(out_dir):
        begin_run(out_dir, "final.pt")  # an earlier average's model never stays beside this one's files
        for name in _COPIED:
            if (exp_dir / name).is_file():
                with atomic_path(out_dir / name) as tmp:
                    shutil.copyfile(exp_dir / name, tmp)
        save_atomic(out_dir / "final.pt", {**best, "model": model, "dev_ce": None, "dev_fer": None, "averaged": updates})
        report.counts.update({"models": last, "best_update": best["update"]})
        report.note(f"the mean of the models of {exp_dir} at updates {', '.join(map(str, updates))} (dev CE not "
                    f"measured: asr-bn score frames {out_dir} DEV)")
        report.save(out_dir / "report.json")
    return report
