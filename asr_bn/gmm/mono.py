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
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from asr_bn.alignments import TransitionModel
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.gmm.align import (AlignConfig, align_all, boosted, check_inputs, check_oov_policy, compile_graphs,
                              gmm_scorer, kaldi_split)
from asr_bn.gmm.estimate import PassStats, TooLittleData
from asr_bn.gmm import resume
from asr_bn.gmm.system import am_bytes, GmmSystem, make_topology
from asr_bn.io import begin_run, OutputLock, write_text
from asr_bn.kaldi_ext import kaldifst
from asr_bn.lang import Lang
from asr_bn.progress import progress_bar
from asr_bn.report import Report

__all__ = ["MonoConfig", "FAST_MONO", "train_mono", "flat_start"]

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
    seed: int = 0  # flat start (0: Kaldi's own, `kaldi_seed`) and the perturbation of split Gaussians
    oov_policy: str = "map"  # words outside the lexicon: map (to the lang's oov.txt word) or skip the utterance
    num_jobs: int = 1  # Kaldi's nj: parts of the data (whole speakers) aligned and accumulated side by side

    def validate(self) -> None:
        """Raise UsageError for inconsistent options."""
        check_oov_policy(self.oov_policy)
        if self.num_iters < 1 or self.max_iter_inc < 0 or self.total_gauss < 1 or self.num_jobs < 1:
            raise UsageError(f"MonoConfig: num_iters={self.num_iters} must be >= 1, max_iter_inc >= 0, "
                             f"total_gauss >= 1, num_jobs >= 1")
        if any(i < 1 or i >= self.num_iters for i in self.realign_iters):
            raise UsageError(f"MonoConfig: realign_iters {self.realign_iters} must lie in 1..{self.num_iters - 1}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-safe)."""
        return {**dataclasses.asdict(self), "realign_iters": list(self.realign_iters)}


# --fast (CI): a quarter of Kaldi's iterations and Gaussians; alignments are still usable, only rougher.
FAST_MONO = MonoConfig(num_iters=10, max_iter_inc=8, total_gauss=300, realign_iters=(1, 2, 3, 4, 5, 6, 8))


_INIT_UTTS = 10  # utterances whose global mean and variance start every pdf (gmm-init-mono --train-feats)


def _equal_align(graph: "kaldifst.StdVectorFst", num_frames: int, seed: int) -> list[int] | None:
    """Kaldi's align-equal-compiled for one utterance: a random path of exactly `num_frames` frames, or None."""
    ok, path = kaldifst.equal_align(graph, num_frames, seed, 10)
    if not ok:
        return None
    ok, ilabels, _, _ = kaldifst.get_linear_symbol_sequence(path)
    return list(ilabels) if ok and len(ilabels) == num_frames else None


def kaldi_seed(utt: str, seed: int = 0) -> int:
    """The random seed align-equal-compiled gives an utterance: Kaldi's StringHasher of its id (hash · 7853 + each
    byte as a signed char, in 64 bits) as an int32, plus `seed`; seed 0 draws Kaldi's own flat start."""
    h = 0
    for byte in utt.encode():
        h = (h * 7853 + (byte - 256 if byte > 127 else byte)) & 0xFFFFFFFFFFFFFFFF
    h = (h + seed) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def _equal_alignments(graphs: Mapping[str, "kaldifst.StdVectorFst"], feats: Mapping[str, np.ndarray], seed: int,
                      report: Report) -> dict[str, list[int]]:
    """Kaldi's align-equal-compiled: per utterance a random path of its training graph with the frames shared equally
    among the path's states (the flat start), drawn from the utterance id and `seed` (`kaldi_seed`: with seed 0 the
    same alignments as Kaldi's on the same graphs); too short ones are skipped."""
    alis = {}
    for utt, graph in graphs.items():
        ali = _equal_align(graph, feats[utt].shape[0], kaldi_seed(utt, seed))
        if ali is None:
            report.skip(utt, "too few frames for its transcript")
        else:
            alis[utt] = ali
    return alis


def train_mono(feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang, out_dir: str | Path,
               cfg: MonoConfig | None = None, feature_info: Mapping[str, Any] | None = None,
               first_alignments: Mapping[str, Sequence[int]] | None = None) -> tuple[GmmSystem, Report]:
    """Train a monophone HMM-GMM as Kaldi's steps/train_mono.sh and write out_dir/{final.mdl, tree, phones.txt,
    topo, iterations.jsonl, config.json, report.json}. Returns the system and the report (failed utterances named).

    `feats` are the GMM features (e.g. from `gmm_features`), `text` the word transcripts. `first_alignments`
    (transition-ids per utterance, e.g. Kaldi's align-equal-compiled output) replace the random flat start of the
    first pass: which flat start is drawn moves a monophone's WER by a point or more (docs/RESULTS.md), so
    comparing trainers needs the same one.
    """
    cfg = cfg or MonoConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    with OutputLock(out_dir):
        begin_run(out_dir, "final.mdl")
        system, report, history = _train_mono(feats, text, lang, cfg, first_alignments, out_dir)
        system.save(out_dir, lang.phones)
        write_text(out_dir / "iterations.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        start = "given first-pass alignments" if first_alignments is not None else f"equal alignment, seed {cfg.seed}"
        write_text(out_dir / "config.json", json.dumps({"mono": cfg.to_dict(), "flat_start": start,
                                                        "features": dict(feature_info or {})}, indent=2) + "\n")
        report.save(out_dir / "report.json")
        resume.clear(out_dir)
    return system, report


def _initial_system(feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang,
                    report: Report) -> tuple[list[str], GmmSystem]:
    """The utterances to train on and the monophone system before its first pass (gmm-init-mono)."""
    utts = check_inputs(feats, text, report)
    if not utts:
        raise AsrBnError("no utterance has both features and a transcript; nothing to train on")
    sil = lang.silence_phone_ids
    topology = make_topology([p for p in lang.real_phone_ids if p not in sil], sil)
    # train_mono.sh initializes from `subset-feats --n=10` of its first job: the first 10 utterances in sorted order
    return utts, GmmSystem.init_mono(topology, (feats[u] for u in utts[:_INIT_UTTS]), lang.shared_phone_sets)


def flat_start(feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang,
               cfg: MonoConfig | None = None) -> dict[str, list[int]]:
    """The first pass's alignments `train_mono` draws with `cfg.seed` (equal alignment over its training graphs), to
    start another trainer from the same flat start (e.g. Kaldi's train_mono.sh from its stage 0)."""
    cfg = cfg or MonoConfig()
    report = Report("flat_start")
    utts, system = _initial_system(feats, text, lang, report)
    graphs = compile_graphs(system, lang, text, utts, cfg.sil_prob, report, cfg.oov_policy)
    return _check_flat_start(_equal_alignments(graphs, feats, cfg.seed, report))


def _check_flat_start(alis: dict[str, list[int]]) -> dict[str, list[int]]:
    if not alis:
        raise AsrBnError("no utterance has a first-pass alignment (all too short for their transcripts, not in the "
                         "lexicon, or missing from the alignments given); check the transcripts and the audio")
    return alis


def _given_alignments(alis: Mapping[str, Sequence[int]], utts: Sequence[str], feats: Mapping[str, np.ndarray],
                      tm: TransitionModel, report: Report) -> dict[str, list[int]]:
    """The first pass's alignments as given, checked: of each utterance's length, the model's transition-ids and
    paths through its HMMs (an utterance without one is a named skip, as align-equal-compiled's too-short ones
    are)."""
    num_tids = tm.num_transition_ids
    out = {}
    for utt in utts:
        if utt not in alis:
            report.skip(utt, "no first-pass alignment given")
            continue
        ali = [int(t) for t in alis[utt]]
        if len(ali) != feats[utt].shape[0] or not all(1 <= t <= num_tids for t in ali):
            raise AsrBnError(f"first alignments: utterance {utt} has {len(ali)} transition-ids for "
                             f"{feats[utt].shape[0]} frames, or ids outside 1..{num_tids} (an alignment of other "
                             "features or another model's topology)")
        out[utt] = ali
    if out:
        tm.check_paths(np.concatenate([np.asarray(a) for a in out.values()]),
                       [f"first alignments, utterance {u}" for u in out],
                       np.cumsum([0] + [len(a) for a in list(out.values())[:-1]]), "the monophone model of this lang")
    return out


def _train_mono(feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang, cfg: MonoConfig,
                first_alignments: Mapping[str, Sequence[int]] | None, out_dir: Path
                ) -> tuple[GmmSystem, Report, list[dict[str, Any]]]:
    """The passes, after each of which its state is kept in `out_dir` (`resume`): run again, the same command
    continues after the last finished pass."""
    report = Report("train_mono")
    utts, system = _initial_system(feats, text, lang, report)
    sil = lang.silence_phone_ids
    num_gauss = system.am.num_gauss
    inc_gauss = (cfg.total_gauss - num_gauss) // max(cfg.max_iter_inc, 1)
    history: list[dict[str, Any]] = []
    with progress_bar() as bar:
        task = bar.add_task("compile graphs", total=len(utts), info="")
        graphs = compile_graphs(system, lang, text, utts, cfg.sil_prob, report, cfg.oov_policy)
        bar.update(task, completed=len(utts))
        if first_alignments is None:
            alis = _equal_alignments(graphs, feats, cfg.seed, report)
        else:
            alis = _given_alignments(first_alignments, list(graphs), feats, system.transition_model(), report)
        _check_flat_start(alis)
        jobs = kaldi_split(sorted(graphs), cfg.num_jobs, getattr(feats, "utt2spk", None))
        flat = hashlib.sha256(b"".join(np.asarray(alis[u], np.int32).tobytes() + u.encode() for u in sorted(alis)))
        key = resume.identity("train_mono", {**cfg.to_dict(), "flat_start": flat.hexdigest()}, system, sorted(graphs))
        failed: list[str] = []
        low = TooLittleData()
        trans_counts: list[np.ndarray] = []
        first = 0
        state = resume.resumed(out_dir, key, system, report)
        if state is not None:
            first, alis, failed, history = state.it + 1, state.alis, state.failed, state.history
            num_gauss, low, trans_counts = state.num_gauss, state.low, state.trans_counts
        bar.update(task, description="train mono", total=cfg.num_iters, completed=first)
        for it in range(first, cfg.num_iters):
            start = time.monotonic()
            realigned = it in cfg.realign_iters
            if realigned:
                beam = cfg.first_beam if it == 1 else cfg.beam
                bar.update(task, info=f"iter {it}: aligning")
                scales = AlignConfig()
                scorer = gmm_scorer(system, boosted(system, sil, cfg.boost_silence), feats, scales.acoustic_scale)
                alis, failed, _, _ = align_all(system, scorer, graphs, beam, beam * cfg.retry_beam_factor,
                                                scales, jobs=jobs)
            stats = PassStats(system, feats, alis, jobs)
            too_little = stats.update(system, cfg.min_gaussian_occupancy_first if it == 0 else 10.0, num_gauss,
                                      cfg.power, cfg.seed)
            low.add(too_little)
            history.append({"iter": it, "avg_like": stats.tot_like / max(stats.frames, 1), "frames": stats.frames,
                            "utterances": len(alis), "failed": len(failed), "realigned": realigned,
                            "num_gauss": system.am.num_gauss, "not_updated": sum(k + r for k, r in too_little.values()),
                            "seconds": round(time.monotonic() - start, 2)})
            if 1 <= it <= cfg.max_iter_inc:  # as train_mono.sh: numgauss grows after each of these updates
                num_gauss += inc_gauss
            trans_counts.append(stats.trans)
            resume.save(out_dir, key, resume.PassState(it, am_bytes(system.am), trans_counts, alis, failed, history,
                                                       num_gauss, low))
            bar.update(task, advance=1, info=f"like/frame {history[-1]['avg_like']:.3f}, {system.am.num_gauss} Gaussians")
    for utt in failed:
        report.skip(utt, "no alignment within the retry beam (last realignment)")
    report.counts.update({"utterances": len(utts), "aligned": len(alis), "frames": history[-1]["frames"],
                          "gaussians": system.am.num_gauss, "pdfs": system.am.num_pdfs})
    low.to_report(report, system.transition_model(), len(history))
    return system, report, history
