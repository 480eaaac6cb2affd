"""Sequence training with the MMI criterion, as Kaldi nnet1's nnet-train-mmi-sequential: each training utterance's
denominator lattice (decoded once with the CE model) is rescored with the current network's log-likelihoods, its
forward-backward posteriors at the acoustic scale κ are the denominator, the alignment the numerator, and the
gradient at the network's output activations is κ (denominator − numerator) per frame."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr_bn.alignments import log_priors, read_transition_model
from asr_bn.batching import PAD_TARGET, Batch
from asr_bn.config import TrainConfig
from asr_bn.errors import AsrBnError
from asr_bn.lattice import LatticeTable, arc_frames, forward_backward, rescore_lattice
from asr_bn.report import Report


@dataclass
class MmiObjective:
    """What one batch's MMI pass gives: the loss to minimise (−κ Σ (log p(reference) − Σ den · log p) over the kept
    frames), the MMI objective (κ · the reference's log-likelihood − the lattice's log-probability, summed over
    utterances, as Kaldi logs it) and the frames dropped (reference pdf absent from the lattice)."""

    loss: torch.Tensor
    objective: float
    dropped: int


class Mmi:
    """The denominator lattices of the training utterances and what scores them: the lattices' transition-id → pdf
    map, the log-priors that turn the network's log-posteriors into log-likelihoods, κ."""

    def __init__(self, denlats: str | Path, lattice_model: str | Path, priors: np.ndarray, acoustic_scale: float,
                 drop_frames: bool) -> None:
        self.lattices = LatticeTable(denlats)
        tm = read_transition_model(lattice_model)
        if tm.num_pdfs != len(priors):
            raise AsrBnError(f"{lattice_model} has {tm.num_pdfs} pdfs but the network {len(priors)} outputs: give the "
                             "final.mdl of the network's alignments (--lattice-model)")
        self.tid_pdf = tm.tid_pdf
        self.log_priors = torch.from_numpy(log_priors(priors)[0])
        self.acoustic_scale, self.drop_frames = acoustic_scale, drop_frames

    @classmethod
    def for_training(cls, cfg: TrainConfig, priors: np.ndarray) -> Mmi:
        """The MMI pass of a run's options (--denlats, --lattice-model, --acwt, --drop-frames), with the priors of
        its training targets."""
        return cls(cfg.denlats, cfg.lattice_model, priors, cfg.acwt, cfg.drop_frames)  # type: ignore[arg-type]

    def with_lattices(self, utts: list[str], lengths: list[int], report: Report) -> tuple[list[str], list[int]]:
        """The training utterances (and their lengths) that have a denominator lattice; the others a named skip."""
        kept = [i for i, u in enumerate(utts) if u in self.lattices]
        for i in sorted(set(range(len(utts))) - set(kept), key=utts.__getitem__):
            report.skip(utts[i], f"no denominator lattice in {self.lattices.scp}")
        if not kept:
            raise AsrBnError(f"{self.lattices.scp} has no lattice of the training utterances (decode DATA with "
                             "--lattices, using the model of --init)")
        return [utts[i] for i in kept], [lengths[i] for i in kept]

    def denominator(self, utt: str, loglikes: np.ndarray) -> tuple[np.ndarray, float]:
        """(T, num_pdfs) posteriors of utterance `utt`'s lattice rescored with `loglikes`, and its log-probability."""
        lattice = self.lattices[utt]
        times = arc_frames(lattice, utt)  # the lattice's topology, once for rescoring and forward-backward
        rescored = rescore_lattice(lattice, loglikes, self.tid_pdf, utt, times)
        frames, tids, posts, log_like = forward_backward(rescored, self.acoustic_scale, utt, times)
        if len(frames) and frames.max() + 1 != len(loglikes):
            raise AsrBnError(f"utterance {utt}: its denominator lattice has {frames.max() + 1} frames, its features "
                             f"{len(loglikes)} (lattices of other features: decode the training data again)")
        den = np.zeros(loglikes.shape)
        np.add.at(den, (frames, self.tid_pdf[tids]), posts)
        return den, log_like

    def __call__(self, log_probs: torch.Tensor, batch: Batch) -> MmiObjective:
        """The MMI pass of a batch's (B, T, num_pdfs) log-softmax outputs."""
        loglikes = (log_probs.detach().float().cpu() - self.log_priors).double().numpy()
        den = np.zeros(loglikes.shape, np.float32)
        keep = (batch.targets != PAD_TARGET).cpu().numpy()
        targets = batch.targets.clamp(min=0).cpu().numpy()
        objective = 0.0
        for b, utt in enumerate(batch.utts):
            length = int(batch.lengths[b])
            d, log_like = self.denominator(utt, loglikes[b, :length])
            den[b, :length] = d
            ref = targets[b, :length]
            objective += self.acoustic_scale * float(loglikes[b, np.arange(length), ref].sum()) - log_like
            if self.drop_frames:
                keep[b, :length] &= d[np.arange(length), ref] > 0
        device = log_probs.device
        mask = torch.from_numpy(keep).to(device)
        reference = log_probs.gather(-1, batch.targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        competing = (torch.from_numpy(den).to(device) * log_probs).sum(-1)
        loss = -self.acoustic_scale * ((reference - competing) * mask).sum()
        dropped = int((batch.targets != PAD_TARGET).sum()) - int(keep.sum())
        return MmiObjective(loss, objective, dropped)
