"""SpecAugment masks of training batches: inside each utterance, filled with its own means, drawn reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr_bn.augment import SpecAugment
from asr_bn.batching import PAD_TARGET, Batch
from asr_bn.errors import UsageError


def batch(lengths: list[int], dim: int = 12, seed: int = 0) -> Batch:
    """A padded batch of random features (offset from zero, as fMLLR features are) and targets."""
    g = torch.Generator().manual_seed(seed)
    t_max = max(lengths)
    feats = torch.randn(len(lengths), t_max, dim, generator=g) + 4.0
    targets = torch.randint(0, 7, (len(lengths), t_max), generator=g)
    for i, n in enumerate(lengths):
        feats[i, n:] = 0.0
        targets[i, n:] = PAD_TARGET
    return Batch([f"u{i}" for i in range(len(lengths))], feats, targets, torch.tensor(lengths))


def test_masks_hide_runs_inside_each_utterance_with_its_means() -> None:
    b = batch([50, 31, 9])
    spec = SpecAugment(num_frame_masks=2, frames_mask_size=10, num_feature_masks=2, features_mask_size=4)
    out = spec(b, np.random.default_rng(3))
    assert torch.equal(out.targets, b.targets) and torch.equal(out.lengths, b.lengths) and out.utts == b.utts
    changed = out.feats != b.feats
    assert changed.any()
    for i, n in enumerate(b.lengths.tolist()):
        assert not changed[i, n:].any(), "padding was masked"
        means = b.feats[i, :n].mean(0)
        rows, cols = torch.nonzero(changed[i, :n], as_tuple=True)
        assert torch.allclose(out.feats[i, rows, cols], means[cols]), "masked values are not the utterance's means"
        # a masked dimension is masked in every frame, a masked frame in every dimension: runs of whole columns/rows
        hidden = changed[i, :n]  # (T, D)
        whole_cols = hidden.all(0)
        whole_rows = hidden.all(1)
        assert (hidden == (whole_cols[None, :] | whole_rows[:, None])).all()
        assert whole_cols.sum() <= 2 * 4 and whole_rows.sum() <= 2 * 10


def test_mask_widths_are_uniform_up_to_the_size() -> None:
    """Over many utterances, each frame mask's width is uniform in 0..size: mean size/2, never more than size."""
    spec = SpecAugment(num_frame_masks=1, frames_mask_size=8)
    b = batch([200] * 400, dim=3)
    out = spec(b, np.random.default_rng(0))
    widths = ((out.feats != b.feats).all(2)).sum(1).float()
    assert widths.max() <= 8 and widths.min() == 0
    assert abs(widths.mean().item() - 4.0) < 0.4


def test_the_same_generator_gives_the_same_masks_and_no_masks_is_the_batch_itself() -> None:
    b = batch([40, 22])
    spec = SpecAugment(num_frame_masks=1, frames_mask_size=10, num_feature_masks=1, features_mask_size=5)
    one, two = (spec(b, np.random.default_rng([7, 0, 12])) for _ in range(2))
    assert torch.equal(one.feats, two.feats)
    assert not torch.equal(one.feats, spec(b, np.random.default_rng([7, 0, 13])).feats)
    for off in (SpecAugment(), SpecAugment(num_frame_masks=3), SpecAugment(features_mask_size=4)):
        assert not off.enabled and off(b, np.random.default_rng(0)) is b


def test_feature_masks_as_wide_as_the_features_are_refused() -> None:
    SpecAugment(num_feature_masks=2, features_mask_size=11).check(12)
    with pytest.raises(UsageError, match="--features-mask-size 12 must be below the features' 12 dimensions"):
        SpecAugment(num_feature_masks=1, features_mask_size=12).check(12)
