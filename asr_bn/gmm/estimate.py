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
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg
from asr_bn.report import Report

__all__ = ["PassStats", "TooLittleData", "split_by_count", "pdf_phones", "named_pdfs"]


class PassStats:
    """Accumulated GMM and transition statistics of one pass (Kaldi's gmm-acc-stats-ali, frame by frame in C++)."""

    def __init__(self, system: GmmSystem, feats: Mapping[str, np.ndarray], alis: Mapping[str, Sequence[int]]) -> None:
        tm, am = system.trans_model, system.am
        tid2pdf = np.asarray(tm.transition_id_to_pdf_array(), dtype=np.int64)
        self.trans = np.zeros(tm.num_transition_ids + 1, dtype=np.float64)
        self.gmm = khg.AccumAmDiagGmm()
        self.gmm.init(am, int(khg.GmmUpdateFlags.kGmmAll))
        self.frames, self.tot_like = 0, 0.0
        accumulate = self.gmm.accumulate_for_gmm
        for utt, ali in alis.items():
            tids = np.asarray(ali, dtype=np.int64)
            self.trans += np.bincount(tids, minlength=len(self.trans))  # TransitionModel::Accumulate, prob 1
            self.frames += len(tids)
            for frame, pdf in zip(feats[utt], tid2pdf[tids].tolist()):
                self.tot_like += accumulate(am, frame, pdf, 1.0)
        self.gauss_occs = [np.array(self.gmm.get_acc(p).occupancy, dtype=np.float64) for p in range(am.num_pdfs)]
        self.pdf_occs = np.array([occ.sum() for occ in self.gauss_occs], dtype=np.float32)

    def update(self, system: GmmSystem, min_gaussian_occupancy: float, mixup: int, power: float,
               seed: int = 0) -> dict[int, tuple[int, int]]:
        """Kaldi's gmm-est: MLE transition update, MLE GMM update ("mvw"), then split Gaussians toward `mixup`
        (SplitByCount, perturbation 0.01, min count 20), their random directions drawn as a fresh gmm-est process
        draws them for `seed` 0. Returns what gmm-est warns about: per pdf with Gaussians of too little data,
        (Gaussians left as they were, Gaussians removed)."""
        system.trans_model.mle_update(self.trans, khg.MleTransitionUpdateConfig())
        opts = khg.MleDiagGmmOptions()
        opts.min_gaussian_occupancy = min_gaussian_occupancy
        low = self.too_little_data(opts)
        khg.mle_am_diag_gmm_update(opts, self.gmm, int(khg.str_to_gmm_flags("mvw")), system.am)
        if mixup > 0:  # as gmm-est --mix-up: every pass, also at the target (a pdf whose share grew still splits)
            split_by_count(system.am, self.pdf_occs, mixup, 0.01, power, 20.0, seed)
        return low

    def too_little_data(self, opts: "khg.MleDiagGmmOptions") -> dict[int, tuple[int, int]]:
        """The Gaussians Kaldi's MleDiagGmmUpdate does not update, per pdf (kept, removed): those whose occupancy is
        at most --min-gaussian-occupancy or whose weight (share of the pdf's occupancy; 1/n without any) at most
        --min-gaussian-weight. With --remove-low-count-gaussians (the default) they are removed, except the last
        one of a pdf whose Gaussians all lack data: it is kept as it was, as for a leaf without frames."""
        out = {}
        for pdf, occ in enumerate(self.gauss_occs):
            total = occ.sum()
            weight = occ / total if total > 0 else np.full(len(occ), 1.0 / len(occ))
            low = int((~((occ > opts.min_gaussian_occupancy) & (weight > opts.min_gaussian_weight))).sum())
            if low:
                removed = min(low, len(occ) - 1) if opts.remove_low_count_gaussians else 0
                out[pdf] = (low - removed, removed)
        return out


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
