"""Pdf priors of the targets (Kaldi's analyze-counts, nnet1's PdfPrior) and the scores a decoder reads: a network's
log-likelihoods (log-posterior minus log-prior) per transition-id."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from asr_bn.errors import AsrBnError
from asr_bn.io import write_text
from asr_bn.kaldi_binary import kaldi_object

# Kaldi nnet1 (nnet-pdf-prior.cc) gives pdfs below the prior floor this log-prior, so they never win in decoding.
_NEVER_LOG_PRIOR = float(np.finfo(np.float32).max) / 2


def count_pdfs(targets: Iterable[np.ndarray], num_pdfs: int = 0) -> np.ndarray:
    """Frames per pdf-id over all `targets` (float64): what Kaldi's `analyze-counts --counts-dim=num_pdfs` writes
    less the half frame it adds to every pdf, so a pdf never seen stays 0 and `log_priors` floors it as nnet1 does.

    The vector grows past `num_pdfs` when a larger pdf-id appears, as analyze-counts does.
    """
    counts = np.zeros(num_pdfs, dtype=np.float64)
    for labels in targets:
        labels = np.asarray(labels)
        if labels.size == 0:
            continue
        if labels.min() < 0:
            raise AsrBnError(f"negative pdf-id {int(labels.min())} among the targets (corrupt pdf.ark? re-run prep)")
        c = np.bincount(labels, minlength=len(counts))
        if len(c) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(c) - len(counts))])
        counts += c
    return counts


def write_counts(path: str | Path, counts: np.ndarray) -> None:
    """Save pdf counts as a Kaldi text vector `[ 12 0 7 ]` (what nnet-forward's --class-frame-counts reads)."""
    values = " ".join(str(int(c)) if float(c).is_integer() else repr(float(c)) for c in np.asarray(counts, np.float64))
    write_text(path, f"[ {values} ]\n")


def read_counts(path: str | Path) -> np.ndarray:
    """Read pdf counts saved by `write_counts` or Kaldi's analyze-counts (text or binary vector) as float64."""
    hint = "expected a Kaldi vector such as `[ 12 0 7 ]`; re-create it with count_pdfs"
    with kaldi_object(Path(path), "pdf counts", "train again, or copy priors.vec", hint) as r:
        return r.float_vector().astype(np.float64)


def log_priors(counts: np.ndarray, floor: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Log prior of each pdf from its counts, and the ids of pdfs whose relative count is below `floor`.

    As Kaldi nnet1's PdfPrior (--prior-floor): floored pdfs count as `floor` in the normalization and get a huge
    log-prior, so their log-likelihood (log-posterior minus log-prior) never wins in decoding.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if counts.size == 0 or not np.isfinite(total) or total <= 0 or counts.min() < 0:
        raise AsrBnError("pdf counts are empty, negative or all zero (empty targets? re-run prep with --ali-dir)")
    rel = counts / total
    floored = np.flatnonzero(rel < floor)
    rel[floored] = floor
    logp = np.log(rel / rel.sum())
    logp[floored] = _NEVER_LOG_PRIOR
    return logp.astype(np.float32), floored


def transition_id_scores(loglikes: np.ndarray, tid2pdf: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(T, num_transition_ids) float32 scores of a (T, num_pdfs) log-likelihood matrix for a DecodableCtc (kaldi-decoder,
    kaldi-hmm-gmm), which scores transition-id k at frame t as M[t, k-1]; `tid2pdf[k]` is k's pdf (entry 0 unused)."""
    scaled = np.asarray(loglikes, dtype=np.float32) * np.float32(scale)  # scale the smaller matrix, then gather
    return scaled.take(tid2pdf[1:], axis=1)
