"""LDA+MLLT triphone systems, as Kaldi's steps/train_lda_mllt.sh (splice-feats, acc-lda/est-lda, gmm-acc-mllt/est-mllt).

The static cepstra (speaker-normalised) of ±3 frames are spliced and projected to 40 dimensions by LDA, whose
classes are the pdfs of the previous alignments (silence frames left out). During training, at `mllt_iters`, an
MLLT (a square transform making the diagonal-covariance Gaussians fit better) is estimated, applied to the model's
means and composed into the feature transform. The exp dir adds `final.mat` (the transform, a Kaldi matrix that
Kaldi's transform-feats applies) and `splice_opts` to train_deltas's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from asr_bn.alignments import TransitionModel
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.gmm.align import alignment_jobs
from asr_bn.gmm.convert import read_model_alignments
from asr_bn.gmm.crand import CRand, rand_prune
from asr_bn.gmm.train_deltas import DeltasConfig, train_tree_system
from asr_bn.gmm.features import FeatureMap
from asr_bn.gmm.system import GmmSystem
from asr_bn.io import atomic_open, write_text
from asr_bn.jobs import job_parts, run_jobs, summed
from asr_bn.lang import Lang
from asr_bn.report import Report

@dataclass
class LdaMlltConfig(DeltasConfig):
    """train_lda_mllt.sh's options: train_deltas's, plus the LDA dimension, splicing and the MLLT iterations."""

    dim: int = 40
    context: int = 3  # frames spliced on each side (splice-feats --left-context/--right-context)
    mllt_iters: tuple[int, ...] = (2, 4, 6, 12)
    randprune: float = 4.0  # acc-lda / gmm-acc-mllt --rand-prune (train_lda_mllt.sh's): keep ~1/4 of the frames

    def validate(self) -> None:
        super().validate()
        if self.dim < 1 or self.context < 0:
            raise UsageError(f"lda-mllt: dim {self.dim} must be >= 1 and context {self.context} >= 0")
        if not self.randprune >= 0:
            raise UsageError(f"lda-mllt: randprune {self.randprune} must be >= 0 (0: every frame counts)")
        if any(not 1 <= i < self.num_iters for i in self.mllt_iters):
            raise UsageError(f"lda-mllt: mllt_iters {self.mllt_iters} must lie in 1..{self.num_iters - 1}")


def static_cepstra(feats: np.ndarray) -> np.ndarray:
    """The static part of GMM features (cepstra + Δ + ΔΔ: the first third of each frame), in float: what LDA
    splices."""
    return np.asarray(feats[:, : feats.shape[1] // 3], np.float32)


def splice(x: np.ndarray, context: int) -> np.ndarray:
    """Kaldi's splice-feats: each frame with `context` frames on each side (edge frames repeated), (T, D*(2c+1))."""
    padded = np.concatenate([np.repeat(x[:1], context, 0), x, np.repeat(x[-1:], context, 0)])
    return np.concatenate([padded[i : i + len(x)] for i in range(2 * context + 1)], axis=1)


def estimate_lda(spliced: Mapping[str, np.ndarray], pdfs: Mapping[str, np.ndarray], num_pdfs: int,
                 dim: int, randprune: float = 0.0, jobs: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """Kaldi's acc-lda + est-lda: the `dim` x D projection that whitens the within-class covariance and keeps the
    directions of largest between-class variance (classes: pdfs; frames with pdf -1 are left out). With
    `randprune` > 0, acc-lda's `--rand-prune`: each frame is kept with probability 1/randprune, drawn as Kaldi's
    acc-lda processes draw them: one per job (`jobs`: the utterances of each, e.g. of its ali.N.gz; default one job), each
    from srand(1) over its utterances in `spliced`'s order. Each job accumulates in a process of its own."""
    d = next(iter(spliced.values())).shape[1]
    aligned = [u for u, x in spliced.items() if u in pdfs and len(pdfs[u]) == len(x)]  # acc-lda skips the others
    parts = job_parts(aligned, jobs)
    count, first, second = summed(run_jobs(lambda j, _: _lda_stats(spliced, pdfs, parts[j], num_pdfs, d, randprune),
                                            len(parts)))
    total = count.sum()
    if total == 0 or (count > 0).sum() <= dim:
        raise AsrBnError(f"LDA needs more than {dim} classes with data (got {(count > 0).sum()} pdfs with frames); "
                         f"use a smaller --dim or more data")
    mean = first.sum(0) / total
    total_covar = second / total - np.outer(mean, mean)
    seen = count > 0
    class_means = first[seen] / count[seen, None]
    between = (class_means.T * (count[seen] / total)) @ class_means - np.outer(mean, mean)
    within = total_covar - between
    try:
        chol = np.linalg.cholesky(within)
    except np.linalg.LinAlgError:  # as Kaldi: smooth the diagonal and retry
        chol = np.linalg.cholesky(within + np.eye(d) * 1e-3 * np.trace(within) / d)
    inv = np.linalg.inv(chol)
    values, vectors = np.linalg.eigh(inv @ between @ inv.T)
    order = np.argsort(values)[::-1]
    return (vectors[:, order].T @ inv)[:dim].astype(np.float32)


def _lda_stats(spliced: Mapping[str, np.ndarray], pdfs: Mapping[str, np.ndarray], utts: Sequence[str], num_pdfs: int,
               d: int, randprune: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One acc-lda process over `utts`: (count per pdf, Σx per pdf, Σxxᵀ), its random pruning one stream from
    srand(1)."""
    frames = {u: int((pdfs[u] >= 0).sum()) for u in utts}  # acc-lda's posteriors: 1 on each non-silence frame
    ones = np.ones(sum(frames.values()), np.float32)
    weights = rand_prune(ones, randprune, CRand(1).uniform(len(ones))) if randprune > 1 else ones  # 1 >= thresh: kept
    count = np.zeros(num_pdfs)
    first = np.zeros((num_pdfs, d))
    second = np.zeros((d, d))
    start = 0
    for utt in utts:
        keep = pdfs[utt] >= 0
        w = weights[start : start + keep.sum()].astype(np.float64)
        start += len(w)
        kept = w != 0
        x64, cls, w = spliced[utt][keep][kept].astype(np.float64), pdfs[utt][keep][kept], w[kept]
        count += np.bincount(cls, weights=w, minlength=num_pdfs)
        np.add.at(first, cls, x64 * w[:, None])
        second += (x64 * w[:, None]).T @ x64
    return count, first, second


def mllt_stats(system: GmmSystem, feats: Mapping[str, np.ndarray], pdfs: Mapping[str, np.ndarray],
               randprune: float = 0.0, jobs: Sequence[Sequence[str]] | None = None) -> tuple[float, np.ndarray]:
    """Kaldi's gmm-acc-mllt: (β = total posterior, G with G[j] = Σ γ/σ²_j (x-μ)(x-μ)ᵀ), γ the Gaussian posteriors
    within each frame's pdf (float, as DiagGmm::ComponentPosteriors). With `randprune` > 0, `--rand-prune`: each
    non-zero γ is randomly pruned as Kaldi's gmm-acc-mllt processes draw them (one per job, see `estimate_lda`;
    frames in `feats`' order, Gaussians in index order). Each job accumulates in a process of its own."""
    parts = job_parts([u for u in feats if u in pdfs], jobs)
    return summed(run_jobs(lambda j, _: _mllt_stats(system, feats, pdfs, parts[j], randprune), len(parts)))


def _mllt_stats(system: GmmSystem, feats: Mapping[str, np.ndarray], pdfs: Mapping[str, np.ndarray],
                utts: Sequence[str], randprune: float) -> tuple[float, np.ndarray]:
    """One gmm-acc-mllt process over `utts`, its random pruning one stream from srand(1)."""
    dim = next(iter(feats.values())).shape[1]
    by_pdf: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # pdf -> (frames, their positions in Kaldi's order)
    position = 0
    for utt in utts:
        x, pdf = feats[utt], pdfs[utt]
        if len(pdf) != len(x):
            continue  # gmm-acc-mllt: an alignment of another length
        frames = np.flatnonzero(pdf >= 0)
        for p in np.unique(pdf[frames]):
            sel = frames[pdf[frames] == p]
            by_pdf.setdefault(int(p), []).append((x[sel], position + np.searchsorted(frames, sel)))
        position += len(frames)
    t = np.float32(randprune)
    groups = []
    drawn = np.zeros(position, np.int64)  # posteriors RandPrune draws for, per frame (0 < γ < randprune)
    for pdf, parts in by_pdf.items():
        x = np.concatenate([p[0] for p in parts]).astype(np.float32)
        where = np.concatenate([p[1] for p in parts])
        gmm = system.am.get_pdf(pdf)
        loglikes = np.asarray(gmm.log_likelihoods_matrix(np.ascontiguousarray(x)), np.float32)
        e = np.exp(loglikes - loglikes.max(1, keepdims=True))  # float, as Kaldi's ApplySoftMax: underflows to 0
        post = e * (1.0 / e.sum(1, dtype=np.float32, keepdims=True)).astype(np.float32)
        takes = (post != 0) & (post < t)
        drawn[where] = takes.sum(1)
        groups.append((gmm, x, where, post, takes))
    first_draw = np.cumsum(drawn) - drawn
    draws = CRand(1).uniform(int(drawn.sum())) if randprune > 0 else None
    beta, g = 0.0, np.zeros((dim, dim, dim))
    for gmm, x, where, post, takes in groups:
        if draws is not None:  # RandPrune in Kaldi's order: frame by frame, Gaussian by Gaussian
            index = first_draw[where][:, None] + np.cumsum(takes, 1) - 1
            post = post.copy()
            post[takes] = rand_prune(post[takes], randprune, draws[index[takes]])
        post = post.astype(np.float64)
        inv_vars = np.asarray(gmm.inv_vars, np.float64)
        means = np.asarray(gmm.means_invvars, np.float64) / inv_vars
        x = x.astype(np.float64)
        beta += post.sum()
        for i in range(len(means)):
            offset = x - means[i]
            scatter = (offset * post[:, i, None]).T @ offset
            g += inv_vars[i][:, None, None] * scatter[None]
    return beta, g


def estimate_mllt(beta: float, g: np.ndarray, iters: int = 200) -> np.ndarray:
    """Kaldi's est-mllt (MlltAccs::Update from the identity): row by row, each row set to the maximiser of
    β log|det A| - ½ Σ_j a_j G_j a_jᵀ given the others, `iters` sweeps."""
    dim = len(g)
    a = np.eye(dim)
    g_inv = np.linalg.inv(g)
    for _ in range(iters):
        for i in range(dim):
            cofactor = np.linalg.inv(a).T[i]
            a[i] = np.sqrt(beta / (cofactor @ g_inv[i] @ cofactor)) * (g_inv[i] @ cofactor)
    return a.astype(np.float32)


def transform_means(system: GmmSystem, a: np.ndarray) -> None:
    """Kaldi's gmm-transform-means: every Gaussian mean μ becomes Aμ (variances unchanged)."""
    for pdf in range(system.am.num_pdfs):
        gmm = system.am.get_pdf(pdf)
        inv_vars = np.asarray(gmm.inv_vars, np.float32)
        means = np.asarray(gmm.means_invvars, np.float32) / inv_vars
        gmm.set_invvars_and_means(inv_vars, (means @ a.T).astype(np.float32))
        gmm.compute_gconsts()


def nonsilence_pdfs(tm: TransitionModel, alis: Mapping[str, Sequence[int]], silence: Sequence[int]
                    ) -> dict[str, np.ndarray]:
    """Per utterance the pdf of every aligned frame, -1 on silence phones (ali-to-post | weight-silence-post 0.0)."""
    out = {}
    for utt, ali in alis.items():
        tids = np.asarray(ali)
        pdf = tm.to_pdfs(tids, where=f"alignment of {utt}").astype(np.int64)
        pdf[np.isin(tm.to_phones(tids), silence)] = -1
        out[utt] = pdf
    return out


def _alignment_pdfs(ali_dir: Path, silence: Sequence[int]) -> tuple[dict[str, np.ndarray], int, list[list[str]]]:
    """`nonsilence_pdfs` of the alignments in `ali_dir` with its model, the model's number of pdfs, and each
    job's utterances (those of its ali.N.gz: Kaldi runs one accumulator process per job, with its own draws)."""
    tm, labels = read_model_alignments(ali_dir, ali_dir / "final.mdl")
    return nonsilence_pdfs(tm, {x.utt: x.values for x in labels}, silence), tm.num_pdfs, alignment_jobs(labels)


def copy_feature_transform(src_dir: Path, out_dir: Path) -> None:
    """Carry a system's feature transform (final.mat, splice_opts) into an exp or ali dir made from it, as Kaldi's
    align_si.sh and train_sat.sh do."""
    import shutil

    for name in ("final.mat", "splice_opts"):
        if (src_dir / name).is_file():
            shutil.copyfile(src_dir / name, out_dir / name)


def _write_matrix(path: Path, m: np.ndarray) -> None:
    """A Kaldi binary float matrix (what est-lda and compose-transforms write)."""
    import kaldiio

    with atomic_open(path, "wb", encoding=None) as f:
        kaldiio.save_mat(f, np.asarray(m, np.float32))


def train_lda_mllt(feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang, ali_dir: str | Path,
                   out_dir: str | Path, cfg: LdaMlltConfig | None = None) -> tuple[GmmSystem, Report]:
    """Train an LDA+MLLT triphone system from the alignments in `ali_dir` (e.g. of a train_deltas system) on the
    GMM features `feats` (their static cepstra are spliced); writes final.mat beside the model."""
    cfg = cfg or LdaMlltConfig()
    cfg.validate()
    ali_dir = Path(ali_dir)
    sil = lang.silence_phone_ids
    spliced = FeatureMap(feats, lambda _, f: splice(static_cepstra(f), cfg.context))
    width = next(iter(spliced.values())).shape[1] if len(spliced) else 0
    if not cfg.dim <= width:
        frames = 2 * cfg.context + 1
        raise UsageError(f"lda-mllt: dim {cfg.dim} is above the {width} dimensions of the spliced features "
                         f"({width // frames} cepstra x {frames} frames); give --dim <= {width}")
    old_pdfs, num_pdfs, jobs = _alignment_pdfs(ali_dir, sil)
    mllt = _Mllt(spliced, estimate_lda(spliced, old_pdfs, num_pdfs, cfg.dim, cfg.randprune, jobs), cfg, sil, jobs)

    def write_extra(out: Path, *_: object) -> None:
        _write_matrix(out / "final.mat", mllt.matrix)
        write_text(out / "splice_opts", f"--left-context={cfg.context} --right-context={cfg.context}\n")

    return train_tree_system("train_lda_mllt", mllt.features(), text, lang, ali_dir, out_dir, cfg, adaptation=mllt,
                             extra_config={"mllt_iters": list(cfg.mllt_iters), "randprune": cfg.randprune},
                             write_extra=write_extra)


class _Mllt:
    """The rung's feature transform: LDA, then at each of `mllt_iters` an MLLT estimated from the pass's alignments
    (gmm-acc-mllt + est-mllt) composed on it and applied to the model's means (gmm-transform-means)."""

    def __init__(self, spliced: Mapping[str, np.ndarray], lda: np.ndarray, cfg: LdaMlltConfig, silence: Sequence[int],
                 jobs: Sequence[Sequence[str]]) -> None:
        self.spliced, self.matrix, self.cfg, self.silence, self.jobs = spliced, lda, cfg, silence, jobs

    def features(self) -> Mapping[str, np.ndarray]:
        matrix = self.matrix
        return FeatureMap(self.spliced, lambda _, x: (x @ matrix.T).astype(np.float32))

    def update(self, it: int, system: GmmSystem, alis: Mapping[str, list[int]]) -> bool:
        if it not in self.cfg.mllt_iters:
            return False
        pdfs = nonsilence_pdfs(system.transition_model(), alis, self.silence)
        a_mat = estimate_mllt(*mllt_stats(system, self.features(), pdfs, self.cfg.randprune, self.jobs))
        transform_means(system, a_mat)
        self.matrix = (a_mat.astype(np.float64) @ self.matrix).astype(np.float32)
        return True

    def state(self) -> dict[str, np.ndarray]:
        return {"final.mat": self.matrix}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        self.matrix = state["final.mat"]
