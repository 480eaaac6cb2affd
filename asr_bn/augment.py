"""SpecAugment's masks (Park et al., 2019; without time warping) on padded training batches.

Frame masks hide runs of consecutive frames, feature masks runs of consecutive feature dimensions, of each utterance
of a batch; masked values become the utterance's own mean of that dimension (fMLLR or LDA features are not zero-mean
as CMVN'd fbank is). The targets stay: the network learns to classify hidden frames from their context. Options
and names follow lhotse's SpecAugment (num_frame_masks, frames_mask_size, num_feature_masks, features_mask_size).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from asr_bn.batching import Batch
from asr_bn.errors import UsageError


@dataclass(frozen=True)
class SpecAugment:
    """Per utterance: `num_frame_masks` runs of 0..`frames_mask_size` frames (each within the utterance) and
    `num_feature_masks` runs of 0..`features_mask_size` dimensions, widths and starts uniform."""

    num_frame_masks: int = 0
    frames_mask_size: int = 0
    num_feature_masks: int = 0
    features_mask_size: int = 0

    @property
    def enabled(self) -> bool:
        """Whether any mask can be non-empty."""
        return bool(self.num_frame_masks * self.frames_mask_size or self.num_feature_masks * self.features_mask_size)

    def check(self, feature_dim: int) -> None:
        """Refuse feature masks as wide as the features themselves (they would hide every dimension)."""
        if self.num_feature_masks and self.features_mask_size >= feature_dim:
            raise UsageError(
                f"--features-mask-size {self.features_mask_size} must be below the features' {feature_dim} "
                "dimensions (SpecAugment's 27 of 80 mel bands is about a third)"
            )

    def __call__(self, batch: Batch, rng: np.random.Generator) -> Batch:
        """A copy of `batch` with masks drawn from `rng`; padding frames and targets are left as they are."""
        if not self.enabled:
            return batch
        b, t_max, dim = batch.feats.shape
        hide = np.zeros((b, t_max, dim), dtype=bool)
        for i, length in enumerate(batch.lengths.tolist()):
            for start, width in _runs(rng, self.num_frame_masks, self.frames_mask_size, length):
                hide[i, start : start + width, :] = True
            for start, width in _runs(rng, self.num_feature_masks, self.features_mask_size, dim):
                hide[i, :length, start : start + width] = True
        real = (torch.arange(t_max)[None, :] < batch.lengths[:, None]).unsqueeze(-1)  # (B, T_max, 1)
        means = (batch.feats * real).sum(1, keepdim=True) / batch.lengths.clamp(min=1).view(b, 1, 1)
        feats = torch.where(torch.from_numpy(hide), means.to(batch.feats.dtype), batch.feats)
        return replace(batch, feats=feats)


def _runs(rng: np.random.Generator, count: int, max_width: int, extent: int) -> list[tuple[int, int]]:
    """`count` (start, width) runs within [0, extent), widths uniform in 0..min(max_width, extent)."""
    runs = []
    for _ in range(count):
        width = int(rng.integers(0, min(max_width, extent) + 1))
        runs.append((int(rng.integers(0, extent - width + 1)), width))
    return runs


__all__ = ["SpecAugment"]
