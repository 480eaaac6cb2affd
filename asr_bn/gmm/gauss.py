"""The objective of Kaldi's GaussClusterable: the log-likelihood of data under one diagonal Gaussian fitted to it.

Tree building compares such objectives to choose splits and merges. Kaldi computes each objective in double and
rounds it to float, then adds and subtracts the floats; `objf` returns float32 for callers to do the same, so that
asr-bn takes the same decisions where two candidates are close.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_LOG_2PI = float(np.log(2.0 * np.pi))


def objf(count: np.ndarray, stats: np.ndarray, var_floor: float) -> np.ndarray:
    """Log-likelihood (float32) of each set of statistics: `count` (...,), `stats` (..., 2, D) = (Σx, Σx²).

    The variance is floored at `var_floor`; an empty set (count <= 0) scores 0, as in Kaldi.
    """
    count = np.asarray(count, np.float64)
    positive = count > 0
    safe = np.where(positive, count, 1.0)[..., None]
    mean = stats[..., 0, :] / safe
    var = stats[..., 1, :] / safe
    var -= np.multiply(mean, mean, out=mean)  # in place: tree building asks this of ~80 candidates per node
    floored = np.maximum(var, var_floor)
    ratio = np.divide(var, floored, out=var)
    per_frame = -0.5 * ratio.sum(-1) - 0.5 * (np.log(floored, out=floored).sum(-1) + _LOG_2PI * stats.shape[-1])
    out = np.where(positive, per_frame * count, 0.0)
    return np.where(np.isnan(out), 0.0, out).astype(np.float32)



def float_sum(values: Sequence[np.float32]) -> np.float32:
    """Sum in float, left to right, as Kaldi's SumClusterableObjf adds its clusters' objectives."""
    total = np.float32(0.0)
    for v in values:
        total = np.float32(total + v)
    return total
