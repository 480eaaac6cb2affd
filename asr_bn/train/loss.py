"""The objective: masked frame cross-entropy of a padded batch, toward its alignment and, with a soft weight, its
soft targets; with sequence training, the MMI pass of the same outputs (asr_bn.train.mmi)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from asr_bn.batching import PAD_TARGET, Batch

if TYPE_CHECKING:
    from asr_bn.train.mmi import Mmi, MmiObjective


def compute_loss(
    model: torch.nn.Module, batch: Batch, soft_weight: float = 0.0, mmi: Mmi | None = None
) -> tuple[torch.Tensor, torch.Tensor, MmiObjective | None]:
    """Masked frame cross-entropy of a padded batch: (CE summed over real frames, frame errors, the MMI pass or
    None), CE and errors on the device, no host sync without `mmi`. Padded frames (target PAD_TARGET, soft weight 0)
    never count. With `soft_weight` w the CE is (1 - w) x that toward the alignment + w x that toward the batch's
    soft targets (−Σ weight · log p). With `mmi` the loss to minimise is the MMI pass's (the CE is still logged)."""
    log_probs = model(batch.feats, batch.lengths)  # (B, T, S) log-softmax
    errors = ((log_probs.argmax(-1) != batch.targets) & (batch.targets != PAD_TARGET)).sum()
    log_probs = log_probs.float()
    ce_sum = F.nll_loss(log_probs.transpose(1, 2), batch.targets, ignore_index=PAD_TARGET, reduction="sum")
    if soft_weight:
        soft = -(batch.soft_weights * log_probs.gather(-1, batch.soft_pdfs)).sum()  # type: ignore[arg-type, operator]
        ce_sum = (1 - soft_weight) * ce_sum + soft_weight * soft
    return ce_sum, errors, mmi(log_probs, batch) if mmi is not None else None
