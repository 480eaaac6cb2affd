"""One training pass of a GMM system as Kaldi's gmm-acc-stats-ali + gmm-est: statistics of aligned frames, the MLE
update of transitions and Gaussians, and the mixing-up toward a number of Gaussians (SplitByCount). Every rung of
the ladder (mono, deltas, LDA+MLLT, SAT) trains with it."""

from __future__ import annotations

import heapq
from typing import Mapping, Sequence

import numpy as np

from asr_bn.alignments import TransitionModel
from asr_bn.gmm.crand import CRand
from asr_bn.gmm.system import GmmSystem
from asr_bn.jobs import job_parts, run_jobs, summed
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg
from asr_bn.report import Report

__all__ = ["PassStats", "TooLittleData", "mle_gmm_update", "split_by_count", "pdf_phones", "named_pdfs"]


class PassStats:
    """Accumulated GMM and transition statistics of one pass (Kaldi's gmm-acc-stats-ali, frame by frame in C++),
    per pdf its Gaussians' (occupancy, Σx, Σx²) in double.

    With `jobs` (Kaldi's parts of the data: lists of utterances), each part is accumulated in a process of its own
    (`asr_bn.jobs`) and the parts' statistics added in job order, as gmm-sum-accs adds the jobs' files."""

    def __init__(self, system: GmmSystem, feats: Mapping[str, np.ndarray], alis: Mapping[str, Sequence[int]],
                 jobs: Sequence[Sequence[str]] = ()) -> None:
        parts = [{u: alis[u] for u in part} for part in job_parts(alis, jobs)]
        done = run_jobs(lambda j, _: _job_stats(system, feats, parts[j]), len(parts))
        self.trans, self.frames, self.tot_like, *stats = summed(done)
        ends = np.cumsum([system.am.num_gauss_in_pdf(p) for p in range(system.am.num_pdfs)])[:-1]
        self.gauss = list(zip(*(np.split(a, ends) for a in stats)))  # per pdf: its Gaussians' (occ, Σx, Σx²)
        self.gauss_occs = [occ for occ, _, _ in self.gauss]
        self.pdf_occs = np.array([occ.sum() for occ in self.gauss_occs], dtype=np.float32)

    def update(self, system: GmmSystem, min_gaussian_occupancy: float, mixup: int, power: float,
               seed: int = 0) -> dict[int, tuple[int, int]]:
        """Kaldi's gmm-est: MLE transition update, MLE GMM update ("mvw"), then split Gaussians toward `mixup`
        (SplitByCount, perturbation 0.01, min count 20), their random directions drawn as a fresh gmm-est process
        draws them for `seed` 0. Returns what gmm-est warns about: per pdf with Gaussians of too little data,
        (Gaussians left as they were, Gaussians removed)."""
        system.trans_model.mle_update(self.trans, khg.MleTransitionUpdateConfig())
        low = {}
        for pdf, stats in enumerate(self.gauss):
            kept, removed = mle_gmm_update(system.am.get_pdf(pdf), *stats, min_gaussian_occupancy)
            if kept or removed:
                low[pdf] = (kept, removed)
        if mixup > 0:  # as gmm-est --mix-up: every pass, also at the target (a pdf whose share grew still splits)
            split_by_count(system.am, self.pdf_occs, mixup, 0.01, power, 20.0, seed)
        return low


def mle_gmm_update(gmm: "khg.DiagGmm", occ: np.ndarray, sum_x: np.ndarray, sum_x2: np.ndarray,
                   min_gaussian_occupancy: float = 10.0, min_gaussian_weight: float = 1e-5,
                   min_variance: float = 0.001, remove_low_count: bool = True) -> tuple[int, int]:
    """Kaldi's MleDiagGmmUpdate ("mvw", gmm-est's defaults) of one pdf from its Gaussians' statistics, in place:
    weight occ/Σocc, mean Σx/occ, variance Σx²/occ - mean² floored at `min_variance`, in double, stored in float as
    Kaldi stores them. A Gaussian with too little data (occupancy at most `min_gaussian_occupancy`, or weight at most
    `min_gaussian_weight`) keeps its mean and variance and is removed (--remove-low-count-gaussians), unless all
    lack data: the last of them is kept, its weight at least `min_gaussian_weight`; without `remove_low_count`
    (gmm-est --remove-low-count-gaussians=false) every one of them is kept so. Returns (kept, removed)."""
    total = float(occ.sum())
    prob = occ / total if total != 0.0 else np.full(len(occ), 1.0 / len(occ))
    good = (occ > float(np.float32(min_gaussian_occupancy))) & (prob > float(np.float32(min_gaussian_weight)))
    low = np.flatnonzero(~good)
    most_removed = len(occ) - 1 if remove_low_count else 0
    removed, kept = low[:most_removed].tolist(), low[most_removed:]
    inv_vars = np.asarray(gmm.inv_vars, np.float64)
    var = 1.0 / inv_vars  # DiagGmmNormal: what the Gaussians without data keep
    mean = np.asarray(gmm.means_invvars, np.float64) * var
    weights = np.asarray(gmm.weights, np.float64).copy()
    scale = 1.0 / occ[good]
    mean[good] = sum_x[good] * scale[:, None]
    var[good] = np.maximum(sum_x2[good] * scale[:, None] - mean[good] * mean[good], float(np.float32(min_variance)))
    weights[good] = prob[good]
    weights[kept] = np.maximum(prob[kept], float(np.float32(min_gaussian_weight)))
    inv = np.float32(1.0) / var.astype(np.float32)  # CopyToDiagGmm: variances in float, inverted in float
    gmm.set_weights(weights.astype(np.float32))
    gmm.set_invvars_and_means(inv, mean.astype(np.float32))
    gmm.compute_gconsts()
    if removed:
        gmm.remove_components(removed, True)
        gmm.compute_gconsts()
    return len(kept), len(removed)


def _job_stats(system: GmmSystem, feats: Mapping[str, np.ndarray], alis: Mapping[str, Sequence[int]]
               ) -> tuple[np.ndarray, int, float, np.ndarray, np.ndarray, np.ndarray]:
    """gmm-acc-stats-ali over `alis`: (transition-id counts, frames, total log-likelihood, and every Gaussian's
    occupancy, Σx and Σx², pdf after pdf), plain arrays that one job's process sends back."""
    tm, am = system.trans_model, system.am
    gmm = khg.AccumAmDiagGmm()
    gmm.init(am, int(khg.GmmUpdateFlags.kGmmAll))
    tid2pdf = np.asarray(tm.transition_id_to_pdf_array(), dtype=np.int64)
    trans = np.zeros(tm.num_transition_ids + 1, dtype=np.float64)
    frames, tot_like = 0, 0.0
    accumulate = gmm.accumulate_for_gmm
    for utt, ali in alis.items():
        tids = np.asarray(ali, dtype=np.int64)
        trans += np.bincount(tids, minlength=len(trans))  # TransitionModel::Accumulate, prob 1
        frames += len(tids)
        for frame, pdf in zip(feats[utt], tid2pdf[tids].tolist()):
            tot_like += accumulate(am, frame, pdf, 1.0)
    accs = [gmm.get_acc(p) for p in range(am.num_pdfs)]
    return (trans, frames, tot_like, np.concatenate([a.occupancy for a in accs]).astype(np.float64),
            np.concatenate([a.mean_accumulator for a in accs]).astype(np.float64),
            np.concatenate([a.variance_accumulator for a in accs]).astype(np.float64))


def pdf_phones(tm: TransitionModel) -> dict[int, list[int]]:
    """The phones of each pdf (Kaldi's GetPhonesForPdfs: every phone with a transition-state using it)."""
    out: dict[int, set[int]] = {}
    for phone, _, forward, loop in tm.tuples:
        out.setdefault(forward, set()).add(phone)
        out.setdefault(loop, set()).add(phone)
    return {pdf: sorted(phones) for pdf, phones in out.items()}


def named_pdfs(pdfs: Sequence[int], phones: Mapping[int, list[int]], extra: Mapping[int, str] | None = None,
               limit: int = 20) -> str:
    """`pdfs` named for a report note: "pdf-id 3 (phones 4 5), …", the first `limit` of them and how many in all;
    `extra` adds a word per pdf (e.g. its frames)."""
    shown = [f"{p} ({'phone' if len(phones.get(p, [])) == 1 else 'phones'} {' '.join(map(str, phones.get(p, [])))}"
             + (f", {extra[p]}" if extra and p in extra else "") + ")" for p in pdfs[:limit]]
    more = f" … ({len(pdfs)} in all)" if len(pdfs) > limit else ""
    return f"pdf-id{'s' if len(pdfs) > 1 else ''} " + ", ".join(shown) + more


class TooLittleData:
    """The Gaussians gmm-est left as they were or removed for too little data, over the passes of a rung (Kaldi
    warns about each in its update logs): counted and named in the rung's report."""

    def __init__(self) -> None:
        self.kept = self.removed = 0
        self.passes: dict[int, int] = {}  # pdf -> passes in which it had such Gaussians

    def add(self, low: Mapping[int, tuple[int, int]]) -> None:
        """One pass's `PassStats.update` result."""
        for pdf, (kept, removed) in low.items():
            self.kept += kept
            self.removed += removed
            self.passes[pdf] = self.passes.get(pdf, 0) + 1

    def to_report(self, report: Report, tm: TransitionModel, num_passes: int) -> None:
        """Counts "Gaussians not updated (too little data)" and "Gaussians removed (too little data)" (summed over
        the passes, as Kaldi's warnings count them) and a note naming the pdfs and their phones."""
        report.counts["Gaussians not updated (too little data)"] = self.kept + self.removed
        report.counts["Gaussians removed (too little data)"] = self.removed
        if self.passes:
            pdfs = sorted(self.passes, key=lambda p: (-self.passes[p], p))
            report.note(f"Gaussians with too little data (occupancy at most --min-gaussian-occupancy or weight at "
                        f"most --min-gaussian-weight), left as they were or removed as gmm-est does, in "
                        f"{_passes(num_passes)}: "
                        + named_pdfs(pdfs, pdf_phones(tm), {p: _passes(self.passes[p]) for p in pdfs}))


def _passes(n: int) -> str:
    """"1 pass", "7 passes"."""
    return f"{n} pass" + ("es" if n != 1 else "")


def _split_targets(occs: np.ndarray, target: int, power: float, min_count: float) -> list[int]:
    """Kaldi's GetSplitTargets: Gaussians per pdf, given one at a time to the pdf with the most occ^power per
    Gaussian (occ^power in float, as Kaldi), never giving a pdf more Gaussians than occupancy / min_count."""
    powered = [float(x) for x in np.asarray(occs, np.float32) ** np.float32(power)]
    heap = [(-w, pdf, 1) for pdf, w in enumerate(powered)]  # (-occ^power / n, pdf, n)
    heapq.heapify(heap)
    targets = [1] * len(occs)
    total = len(occs)
    while total < target and heap:
        _, pdf, n = heapq.heappop(heap)
        if (n + 1) * min_count >= occs[pdf]:
            continue  # min-count reached: this pdf splits no more
        n += 1
        total += 1
        targets[pdf] = n
        heapq.heappush(heap, (-powered[pdf] / n, pdf, n))
    return targets


def split_by_count(am: "khg.AmDiagGmm", occs: np.ndarray, target: int, perturb_factor: float, power: float,
                   min_count: float, seed: int = 0) -> None:
    """Kaldi's AmDiagGmm::SplitByCount with DiagGmm::Split: each pdf's heaviest component split in two, means moved
    apart by ± perturb_factor standard deviations along a RandGauss direction; `seed` 0 draws them as a fresh Kaldi
    process does (glibc's srand(0) is srand(1), hence seed + 1), others differently."""
    rand = CRand(seed + 1)
    factor = np.float32(perturb_factor)
    for pdf, n in enumerate(_split_targets(occs, target, power, min_count)):
        gmm = am.get_pdf(pdf)
        if n <= gmm.num_gauss:
            continue
        weights = [np.float32(w) for w in np.asarray(gmm.weights, np.float32)]
        inv_vars = list(np.asarray(gmm.inv_vars, np.float32))
        means_invvars = list(np.asarray(gmm.means_invvars, np.float32))
        while len(weights) < n:
            k = int(np.argmax(weights))  # the first of the heaviest, as Kaldi's strict >
            weights[k] = np.float32(weights[k] / np.float32(2))
            weights.append(weights[k])
            step = factor * (rand.gauss(len(inv_vars[k])) * np.sqrt(inv_vars[k]))
            inv_vars.append(inv_vars[k].copy())
            means_invvars.append(means_invvars[k] + step)
            means_invvars[k] = means_invvars[k] - step
        inv, mi = np.asarray(inv_vars, np.float32), np.asarray(means_invvars, np.float32)
        new = khg.DiagGmm(n, inv.shape[1])
        new.set_weights(np.asarray(weights, np.float32))
        new.set_invvars_and_means(inv, mi / inv)
        new.compute_gconsts()
        gmm.copy_from_diag_gmm(new)
