"""`asr-bn train`: frame cross-entropy training of a BN-BLSTM on a prepared data dir, crash-safe and resumable; or,
from a trained model, sequence training with MMI over denominator lattices (`--criterion mmi`).

    asr-bn train data/train_prep data/dev_prep exp/blstm_bn --preset paper --bn sequence
    asr-bn train data/train_prep data/dev_prep exp/blstm_bn --resume                # after a crash or SIGTERM
    asr-bn train data/train_prep data/dev_prep exp/blstm_bn --nproc 4               # 4 GPUs (torchrun)
    asr-bn train data/train_prep data/dev_prep exp/blstm_bn_mmi --init exp/blstm_bn --criterion mmi \
        --denlats exp/denlats/lat.scp --lattice-model exp/tri3b/final.mdl --lr 1e-4 --epochs 2

Reads the prepared dirs of `asr-bn prep` (feats.scp, cmvn.scp, pdf.scp, utt2num_frames, pipeline.json) and writes
EXP_DIR/{final.pt (best by dev CE), checkpoint.pt (latest), config.json, pipeline.json, priors.vec, metrics.jsonl,
learning_curve.png, report.json} (docs/ARCHITECTURE.md).

One room per idea: `schedule` (TrainState and pure functions of it), `loss` (compute_loss), `mmi` (the MMI pass of a
batch), `loop`
(train_one_epoch → train, top to bottom), `run` (a process's set-up and bookkeeping), `checkpoint` (files on disk),
`processes` (torchrun ranks, signals), `curves` (metrics.jsonl, learning-curve PNGs), `average` (checkpoint
averaging of the models a run kept).

Under DistributedDataParallel every global batch (`--batch-size` / `--max-frames` mean the same with 1 or N
processes) is split between the ranks and each rank's CE sum is divided by the global frame count, so N processes
follow the 1-process trajectory. Batch normalisation uses each rank's own sub-batch statistics (the paper's
per-minibatch statistics on a smaller minibatch); running averages are those of rank 0 (DDP broadcasts buffers).
"""

from asr_bn.config import PRESETS, TrainConfig
from asr_bn.train.checkpoint import CHECKPOINT_FORMAT, MODEL_FORMAT, MODELS, load_checkpoint, load_model, save_atomic
from asr_bn.train.curves import plot_runs, read_metrics
from asr_bn.train.loop import train, train_one_epoch
from asr_bn.train.loss import compute_loss
from asr_bn.train.mmi import Mmi
from asr_bn.train.processes import launch
from asr_bn.train.schedule import TrainState, after_eval, is_finished, learning_rate

__all__ = [
    "TrainConfig", "TrainState", "PRESETS", "learning_rate", "after_eval", "is_finished", "compute_loss",
    "train_one_epoch", "train", "launch", "CHECKPOINT_FORMAT", "MODEL_FORMAT", "MODELS", "load_checkpoint",
    "load_model", "save_atomic", "read_metrics", "plot_runs", "Mmi",
]
