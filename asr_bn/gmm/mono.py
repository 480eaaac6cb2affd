"""Monophone HMM-GMM training as Kaldi's steps/train_mono.sh (gmm-init-mono, compile-train-graphs,
align-equal-compiled, then iterations of gmm-align-compiled + gmm-acc-stats-ali + gmm-est with Gaussians growing
toward a target), through kaldi-hmm-gmm (Kaldi's own C++). Outputs are what a Kaldi user has: `final.mdl`, `tree`,
`phones.txt`, `topo`, with `iterations.jsonl`, `config.json` and `report.json`.

    >>> feats, text, _ = prepared_gmm_features("prep/train")
    >>> model, report = train_mono(feats, text, read_lang("data/lang"), "exp/mono", MonoConfig())
    >>> align(model, feats, text, read_lang("data/lang"), "exp/mono_ali")   # asr_bn.gmm.align
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from asr_bn.errors import AsrBnError, UsageError
from asr_bn.gmm.align import AlignConfig, align_all, boosted, check_inputs, check_oov_policy, compile_graphs, gmm_scorer
from asr_bn.gmm.system import GmmSystem, make_topology
from asr_bn.io import OutputLock, write_text
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg, kaldifst
from asr_bn.lang import Lang
from asr_bn.progress import progress_bar
from asr_bn.report import Report

__all__ = ["MonoConfig", "FAST_MONO", "train_mono", "PassStats", "split_by_count"]

# Kaldi's steps/train_mono.sh defaults.
REALIGN_ITERS_KALDI = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)


@dataclass
class MonoConfig:
    """Options of Kaldi's steps/train_mono.sh (same names and defaults)."""

    num_iters: int = 40  # number of gmm-est updates
    max_iter_inc: int = 30  # Gaussians grow until this iteration
    total_gauss: int = 1000  # target number of Gaussians
    realign_iters: tuple[int, ...] = REALIGN_ITERS_KALDI
    boost_silence: float = 1.0  # factor on silence likelihoods while aligning
    power: float = 0.25  # exponent for allocating Gaussians to states by occupancy
    first_beam: float = 6.0  # alignment beam of the first realignment (later: `beam`)
    beam: float = 10.0
    retry_beam_factor: float = 4.0  # retry beam = beam * this (train_mono.sh) when the first beam fails
    sil_prob: float = 0.5  # optional-silence probability between words in the training graphs
    min_gaussian_occupancy_first: float = 3.0  # gmm-est option for the first update only (later: Kaldi's 10)
    seed: int = 0  # for equal alignment and the perturbation of split Gaussians
    oov_policy: str = "map"  # words outside the lexicon: map (to the lang's oov.txt word) or skip the utterance

    def validate(self) -> None:
        """Raise UsageError for inconsistent options."""
        check_oov_policy(self.oov_policy)
        if self.num_iters < 1 or self.max_iter_inc < 0 or self.total_gauss < 1:
            raise UsageError(f"MonoConfig: num_iters={self.num_iters} must be >= 1, max_iter_inc >= 0, total_gauss >= 1")
        if any(i < 1 or i >= self.num_iters for i in self.realign_iters):
            raise UsageError(f"MonoConfig: realign_iters {self.realign_iters} must lie in 1..{self.num_iters - 1}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-safe)."""
        return {**dataclasses.asdict(self), "realign_iters": list(self.realign_iters)}


# --fast (CI): a quarter of Kaldi's iterations and Gaussians; alignments are still usable, only rougher.
FAST_MONO = MonoConfig(num_iters=10, max_iter_inc=8, total_gauss=300, realign_iters=(1, 2, 3, 4, 5, 6, 8))


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
        self.pdf_occs = np.array([self.gmm.get_acc(p).occupancy.sum() for p in range(am.num_pdfs)], dtype=np.float32)

    def update(self, system: GmmSystem, min_gaussian_occupancy: float, mixup: int, power: float,
               rng: np.random.Generator) -> None:
        """Kaldi's gmm-est: MLE transition update, MLE GMM update ("mvw"), then split Gaussians toward `mixup`."""
        system.trans_model.mle_update(self.trans, khg.MleTransitionUpdateConfig())
        opts = khg.MleDiagGmmOptions()
        opts.min_gaussian_occupancy = min_gaussian_occupancy
        khg.mle_am_diag_gmm_update(opts, self.gmm, int(khg.str_to_gmm_flags("mvw")), system.am)
        if mixup > 0:  # as gmm-est --mix-up: every pass, also at the target (a pdf whose share grew still splits)
            split_by_count(system.am, self.pdf_occs, mixup, 0.01, power, 20.0, rng)


def _split_targets(occs: np.ndarray, target: int, power: float, min_count: float) -> list[int]:
    """Kaldi's GetSplitTargets: Gaussians per pdf, given one at a time to the pdf with the most occ^power per
    Gaussian, never giving a pdf more Gaussians than occupancy / min_count."""
    heap = [(-float(occ) ** power, pdf, 1) for pdf, occ in enumerate(occs)]  # (-occ^power / n, pdf, n)
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
        heapq.heappush(heap, (-float(occs[pdf]) ** power / n, pdf, n))
    return targets


def split_by_count(am: "khg.AmDiagGmm", occs: np.ndarray, target: int, perturb_factor: float, power: float,
                    min_count: float, rng: np.random.Generator) -> None:
    """Kaldi's AmDiagGmm::SplitByCount with DiagGmm::Split (split the heaviest component, means moved apart by
    ± perturb_factor standard deviations along a random direction), drawing from `rng` so training is
    reproducible (kaldi-hmm-gmm's own split draws from an unseeded generator)."""
    for pdf, n in enumerate(_split_targets(occs, target, power, min_count)):
        gmm = am.get_pdf(pdf)
        if n <= gmm.num_gauss:
            continue
        weights = np.asarray(gmm.weights, np.float64).tolist()
        inv_vars = [row for row in np.asarray(gmm.inv_vars, np.float64)]
        means_invvars = [row for row in np.asarray(gmm.means_invvars, np.float64)]
        while len(weights) < n:
            k = int(np.argmax(weights))
            weights[k] /= 2
            weights.append(weights[k])
            step = perturb_factor * rng.standard_normal(len(inv_vars[k])) * np.sqrt(inv_vars[k])
            inv_vars.append(inv_vars[k].copy())
            means_invvars.append(means_invvars[k] + step)
            means_invvars[k] = means_invvars[k] - step
        inv = np.asarray(inv_vars, np.float32)
        new = khg.DiagGmm(n, inv.shape[1])
        new.set_weights(np.asarray(weights, np.float32))
        new.set_invvars_and_means(inv, (np.asarray(means_invvars) / np.asarray(inv_vars)).astype(np.float32))
        new.compute_gconsts()
        gmm.copy_from_diag_gmm(new)


def _equal_align(graph: "kaldifst.StdVectorFst", num_frames: int, seed: int) -> list[int] | None:
    """Kaldi's align-equal-compiled for one utterance: a random path of exactly `num_frames` frames, or None."""
    ok, path = kaldifst.equal_align(graph, num_frames, seed, 10)
    if not ok:
        return None
    ok, ilabels, _, _ = kaldifst.get_linear_symbol_sequence(path)
    return list(ilabels) if ok and len(ilabels) == num_frames else None


def _equal_alignments(graphs: Mapping[str, "kaldifst.StdVectorFst"], feats: Mapping[str, np.ndarray], seed: int,
                      report: Report) -> dict[str, list[int]]:
    alis = {}
    for utt, graph in graphs.items():
        ali = _equal_align(graph, feats[utt].shape[0], (seed + zlib.crc32(utt.encode())) & 0x7FFFFFFF)
        if ali is None:
            report.skip(utt, "too few frames for its transcript")
        else:
            alis[utt] = ali
    return alis


def train_mono(feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang, out_dir: str | Path,
               cfg: MonoConfig | None = None, feature_info: Mapping[str, Any] | None = None) -> tuple[GmmSystem, Report]:
    """Train a monophone HMM-GMM as Kaldi's steps/train_mono.sh and write out_dir/{final.mdl, tree, phones.txt,
    topo, iterations.jsonl, config.json, report.json}. Returns the system and the report (failed utterances named).

    `feats` are the GMM features (e.g. from `gmm_features`), `text` the word transcripts.
    """
    cfg = cfg or MonoConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    with OutputLock(out_dir):
        (out_dir / "report.json").unlink(missing_ok=True)  # written last: it marks a complete run
        system, report, history = _train_mono(feats, text, lang, cfg)
        system.save(out_dir, lang.phones)
        write_text(out_dir / "iterations.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        write_text(out_dir / "config.json", json.dumps({"mono": cfg.to_dict(), "features": dict(feature_info or {})},
                                                       indent=2) + "\n")
        report.save(out_dir / "report.json")
    return system, report


def _train_mono(feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang,
                cfg: MonoConfig) -> tuple[GmmSystem, Report, list[dict[str, Any]]]:
    report = Report("train_mono")
    utts = check_inputs(feats, text, report)
    if not utts:
        raise AsrBnError("no utterance has both features and a transcript; nothing to train on")
    sil = lang.silence_phone_ids
    topology = make_topology([p for p in lang.real_phone_ids if p not in sil], sil)
    system = GmmSystem.init_mono(topology, (feats[u] for u in utts), lang.shared_phone_sets)
    num_gauss = system.am.num_gauss
    inc_gauss = (cfg.total_gauss - num_gauss) // max(cfg.max_iter_inc, 1)
    history: list[dict[str, Any]] = []
    rng = np.random.default_rng(cfg.seed)
    with progress_bar() as bar:
        task = bar.add_task("compile graphs", total=len(utts), info="")
        graphs = compile_graphs(system, lang, text, utts, cfg.sil_prob, report, cfg.oov_policy)
        bar.update(task, completed=len(utts))
        alis = _equal_alignments(graphs, feats, cfg.seed, report)
        if not alis:
            raise AsrBnError("no utterance could be equally aligned (all too short for their transcripts, or not in "
                             "the lexicon); check the transcripts and the audio")
        bar.update(task, description="train mono", total=cfg.num_iters, completed=0)
        failed: list[str] = []
        for it in range(cfg.num_iters):
            start = time.monotonic()
            realigned = it in cfg.realign_iters
            if realigned:
                beam = cfg.first_beam if it == 1 else cfg.beam
                bar.update(task, info=f"iter {it}: aligning")
                scales = AlignConfig()
                scorer = gmm_scorer(system, boosted(system, sil, cfg.boost_silence), feats, scales.acoustic_scale)
                alis, failed, _, _ = align_all(system, scorer, graphs, feats, beam, beam * cfg.retry_beam_factor,
                                                scales)
            stats = PassStats(system, feats, alis)
            stats.update(system, cfg.min_gaussian_occupancy_first if it == 0 else 10.0, num_gauss, cfg.power, rng)
            history.append({"iter": it, "avg_like": stats.tot_like / max(stats.frames, 1), "frames": stats.frames,
                            "utterances": len(alis), "failed": len(failed), "realigned": realigned,
                            "num_gauss": system.am.num_gauss, "seconds": round(time.monotonic() - start, 2)})
            if 1 <= it <= cfg.max_iter_inc:  # as train_mono.sh: numgauss grows after each of these updates
                num_gauss += inc_gauss
            bar.update(task, advance=1, info=f"like/frame {history[-1]['avg_like']:.3f}, {system.am.num_gauss} Gaussians")
    for utt in failed:
        report.skip(utt, "no alignment within the retry beam (last realignment)")
    report.counts.update({"utterances": len(utts), "aligned": len(alis), "frames": history[-1]["frames"],
                          "gaussians": system.am.num_gauss, "pdfs": system.am.num_pdfs})
    return system, report, history
