"""Kaldi's feature post-processing as numpy or torch: compute-cmvn-stats, apply-cmvn and add-deltas, on arrays
(the GMM features, without importing torch) or tensors (the networks' pipeline, on their device: torch is imported
only when a tensor comes in)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Union

import numpy as np

from asr_bn.errors import AsrBnError, UsageError

if TYPE_CHECKING:
    import torch

__all__ = ["delta_scales", "add_deltas", "compute_cmvn_stats", "apply_cmvn"]

Array = Union[np.ndarray, "torch.Tensor"]


def _is_tensor(x: object) -> bool:
    return type(x).__module__.startswith("torch")


def delta_scales(order: int, window: int) -> list[np.ndarray]:
    """Kaldi's DeltaFeatures scales: scales[i] is the (2*i*window + 1)-tap filter of the i-th order."""
    scales = [np.array([1.0])]
    for _ in range(order):
        prev = scales[-1]
        prev_off = (len(prev) - 1) // 2
        cur = np.zeros(len(prev) + 2 * window)
        cur_off = prev_off + window
        normalizer = 0.0
        for j in range(-window, window + 1):
            normalizer += j * j
            for k in range(-prev_off, prev_off + 1):
                cur[j + k + cur_off] += j * prev[k + prev_off]
        scales.append(cur / normalizer)
    return scales


def add_deltas(feats: Array, order: int = 2, window: int = 2) -> Array:
    """Kaldi's add-deltas: append `order` delta orders (window `window`) to (T, D) features, frames outside the
    utterance replicating its first / last frame. Returns (T, D*(order+1)), a tensor (on its device) for a tensor,
    an array for an array: the same float operations in the same order either way."""
    if order < 0 or window < 1:
        raise UsageError(f"add_deltas: order={order} must be >= 0 and window={window} >= 1")
    if feats.ndim != 2:
        raise UsageError(f"add_deltas: expected (T, D) features of one utterance, got shape {tuple(feats.shape)}")
    t, d = feats.shape
    tensor = _is_tensor(feats)
    if order == 0:
        return feats.clone() if tensor else feats.copy()
    if t == 0:
        return feats.new_zeros((0, d * (order + 1))) if tensor else np.zeros((0, d * (order + 1)), feats.dtype)
    m = order * window
    if tensor:
        import torch

        index = torch.arange(-m, t + m, device=feats.device).clamp(0, t - 1)
        zeros, join = (lambda: feats.new_zeros(feats.shape)), (lambda parts: torch.cat(parts, dim=1))
    else:
        index = np.clip(np.arange(-m, t + m), 0, t - 1)
        zeros, join = (lambda: np.zeros_like(feats)), (lambda parts: np.concatenate(parts, axis=1))
    padded = feats[index]  # (T + 2m, D), edges replicated
    outs = [feats]
    for scales in delta_scales(order, window)[1:]:
        off = (len(scales) - 1) // 2
        acc = zeros()
        for j, s in enumerate(scales):
            if s != 0.0:
                acc += float(s) * padded[m - off + j : m - off + j + t]
        outs.append(acc)
    return join(outs)


# ---------------------------------------------------------------------------------------------------------------------
# CMVN


def compute_cmvn_stats(feats: Iterable[Array]) -> np.ndarray:
    """Kaldi's compute-cmvn-stats over all given (T, D) matrices: a 2 × (D+1) float64 matrix.

    Row 0 holds the per-dimension sums then the frame count; row 1 the sums of squares then 0. As Kaldi's
    AccCmvnStats, values are float32 (Kaldi's features), each square is rounded to float32, the sums are in double.
    """
    stats: np.ndarray | None = None
    for f in feats:
        a = f.detach().cpu().numpy() if _is_tensor(f) else np.asarray(f)
        a = a.astype(np.float32, copy=False)
        if a.ndim != 2:
            raise UsageError(f"compute_cmvn_stats: expected (T, D) matrices, got shape {a.shape}")
        if stats is None:
            stats = np.zeros((2, a.shape[1] + 1), dtype=np.float64)
        elif stats.shape[1] != a.shape[1] + 1:
            raise AsrBnError(
                f"compute_cmvn_stats: feature dimension {a.shape[1]} differs from {stats.shape[1] - 1} seen before"
            )
        stats[0, :-1] += a.sum(axis=0, dtype=np.float64)
        stats[1, :-1] += np.square(a).sum(axis=0, dtype=np.float64)
        stats[0, -1] += a.shape[0]
    if stats is None:
        raise AsrBnError("compute_cmvn_stats: no feature matrices given (nothing to normalize with)")
    return stats


def _cmvn_offset_scale(stats: np.ndarray, norm_vars: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Kaldi's ApplyCmvn as (offset, scale): x → x * scale + offset (scale None = means only)."""
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] != 2:
        raise AsrBnError(f"CMVN stats have shape {stats.shape}; expected Kaldi's 2 x (D+1) matrix")
    count = stats[0, -1]
    if count < 1.0:
        raise AsrBnError(f"insufficient CMVN stats (count = {count:g}); the speaker/utterance has no frames")
    mean = stats[0, :-1] / count
    if not norm_vars:
        return -mean, None
    var = np.maximum(stats[1, :-1] / count - mean * mean, 1.0e-20)  # Kaldi floors the variance at 1e-20
    scale = 1.0 / np.sqrt(var)
    if not np.all(np.isfinite(scale)):
        raise AsrBnError("NaN or infinity in CMVN statistics (corrupt cmvn.ark?)")
    return -(mean * scale), scale


def apply_cmvn(feats: Array, stats: np.ndarray, norm_vars: bool = False) -> Array:
    """Kaldi's apply-cmvn on one (T, D) matrix: subtract the mean; with norm_vars also divide by the std. dev.

    Returns the same kind (tensor or array) and dtype as `feats`.
    """
    offset, scale = _cmvn_offset_scale(stats, norm_vars)
    if feats.shape[-1] != offset.shape[0]:
        raise AsrBnError(f"CMVN stats are for dimension {offset.shape[0]}, features have {feats.shape[-1]}")
    if _is_tensor(feats):
        import torch

        off = torch.from_numpy(offset.astype(np.float32)).to(feats.device, feats.dtype)
        if scale is None:
            return feats + off
        return feats * torch.from_numpy(scale.astype(np.float32)).to(feats.device, feats.dtype) + off
    off32 = offset.astype(np.float32)
    return (feats + off32 if scale is None else feats * scale.astype(np.float32) + off32).astype(feats.dtype)
