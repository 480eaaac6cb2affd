"""A triphone HMM-GMM system on Δ+ΔΔ features, as Kaldi's steps/train_deltas.sh.

From a previous system's alignments: tree statistics, questions by clustering the phone sets, a tree of up to
`num_leaves` leaves, one Gaussian per leaf, the alignments converted to the new model, then `num_iters - 1` passes of
accumulation and re-estimation with realignment at `realign_iters` and Gaussians growing towards `tot_gauss`.
The exp dir holds what Kaldi's does: final.mdl, tree, ali.N.gz, num_jobs, phones.txt, topo, treeacc,
questions.int, iterations.jsonl, config.json, report.json (written last).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from asr_bn.errors import AsrBnError, UsageError
from asr_bn.gmm.build_tree import Questions, Root, build_tree
from asr_bn.gmm.convert import AlignmentConverter, read_model_alignments
from asr_bn.gmm.event_map import write_tree
from asr_bn.gmm.init_model import init_model
from asr_bn.gmm.questions import cluster_phones
from asr_bn.gmm.tree_stats import accumulate_tree_stats, write_tree_stats
from asr_bn.gmm.align import (align_all, AlignConfig, alignment_jobs, boosted, check_inputs, compile_graphs,
                              gmm_scorer, write_alignments)
from asr_bn.gmm.estimate import PassStats, TooLittleData
from asr_bn.gmm import resume
from asr_bn.gmm.system import am_bytes, GmmSystem
from asr_bn.io import begin_run, OutputLock, write_text
from asr_bn.lang import Lang
from asr_bn.progress import progress_bar
from asr_bn.report import Report


@dataclass
class DeltasConfig:
    """Options of Kaldi's steps/train_deltas.sh (same names and defaults; the two positional numbers first)."""

    num_leaves: int = 2000
    tot_gauss: int = 10000
    num_iters: int = 35
    max_iter_inc: int = 25  # last iteration that adds Gaussians
    realign_iters: tuple[int, ...] = (10, 20, 30)
    beam: float = 10.0
    retry_beam: float = 40.0
    boost_silence: float = 1.0
    power: float = 0.25
    cluster_thresh: float = -1.0
    sil_prob: float = 0.5  # optional silence between words in the training graphs
    seed: int = 0  # the perturbation of split Gaussians (0: as gmm-est draws it, `estimate.split_by_count`)
    oov_policy: str = "map"  # transcript words outside the lexicon: map to the lang's OOV word, or skip the utterance

    def validate(self) -> None:
        """Raise UsageError for values that make no sense."""
        if self.num_leaves < 1 or self.tot_gauss < self.num_leaves or self.num_iters < 2 or self.max_iter_inc < 1:
            raise UsageError(f"train_deltas: need num_leaves >= 1, tot_gauss >= num_leaves, num_iters >= 2 and "
                             f"max_iter_inc >= 1 (got {self.num_leaves}, {self.tot_gauss}, {self.num_iters}, "
                             f"{self.max_iter_inc})")
        if any(not 1 <= i < self.num_iters for i in self.realign_iters):
            raise UsageError(f"train_deltas: realign_iters {self.realign_iters} must lie in 1..{self.num_iters - 1}")


def phone_sets(lang: Lang) -> tuple[list[list[int]], list[Root], list[list[int]]]:
    """Sets to cluster, tree roots and extra questions, as prepare_lang.sh makes them and train_deltas.sh reads
    them: the lang's phone sets (phones/sets.txt; one per phone without one), a shared, split root per set, and
    phones/extra_questions.txt as it is (empty for a position-independent lang without extra questions: then the
    questions are cluster-phones' alone, as Kaldi's)."""
    extra = [sorted(lang.phones[p] for p in q) for q in lang.extra_questions]
    return lang.shared_phone_sets, [Root(tuple(s)) for s in lang.shared_phone_sets], extra


def train_deltas(feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang, ali_dir: str | Path,
                 out_dir: str | Path, cfg: DeltasConfig | None = None) -> tuple[GmmSystem, Report]:
    """Train a triphone system from the alignments in `ali_dir` (final.mdl + ali.*.gz of e.g. a monophone system)
    with GMM features `feats` (cepstra + Δ+ΔΔ) and transcripts `text`; returns the system and the report."""
    cfg = cfg or DeltasConfig()
    cfg.validate()
    return train_tree_system("train_deltas", feats, text, lang, ali_dir, out_dir, cfg)


class Adaptation(Protocol):
    """A rung's feature transform that its passes re-estimate (LDA+MLLT's MLLT, SAT's fMLLR)."""

    def features(self) -> Mapping[str, np.ndarray]:
        """The features under the current transforms."""

    def update(self, it: int, system: GmmSystem, alis: Mapping[str, list[int]]) -> bool:
        """Re-estimate the transforms before pass `it`'s accumulation, if this pass does; whether it did."""

    def state(self) -> dict[str, np.ndarray]:
        """The transforms (what a resumed rung restores)."""

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Take back the transforms of `state`."""


ExtraWriter = Callable[[Path, GmmSystem, Mapping[str, list[int]], Mapping[str, np.ndarray]], None]


def train_tree_system(name: str, feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang,
                      ali_dir: str | Path, out_dir: str | Path, cfg: DeltasConfig,
                      adaptation: Adaptation | None = None, extra_config: Mapping[str, Any] | None = None,
                      write_extra: ExtraWriter | None = None) -> tuple[GmmSystem, Report]:
    """The steps every tree-based rung shares (train_deltas.sh, train_lda_mllt.sh, train_sat.sh): tree from the old
    alignments on `feats` (with an `adaptation`, its features), initial model, converted alignments, then the
    training passes, whose `adaptation` re-estimates its transforms where it does; `write_extra(out_dir, system,
    alignments, features)` writes the rung's own files before report.json. After each pass its state is kept
    (`resume`): the same command run again continues after the last finished pass."""
    ali_dir, out_dir = Path(ali_dir), Path(out_dir)
    report = Report(name)
    utts = check_inputs(feats, text, report)
    old_tm, read = read_model_alignments(ali_dir, ali_dir / "final.mdl")
    alis, jobs = {x.utt: x.values for x in read}, alignment_jobs(read)
    sil = lang.silence_phone_ids
    options = {**dataclasses.asdict(cfg), "realign_iters": list(cfg.realign_iters), **(extra_config or {})}
    with OutputLock(out_dir):
        begin_run(out_dir, "final.mdl", "final.alimdl")
        stats = accumulate_tree_stats(old_tm, ((u, feats[u]) for u in utts), alis, sil, report=report, jobs=jobs)
        write_tree_stats(out_dir / "treeacc", stats)
        sets, roots, extra = phone_sets(lang)
        questions = cluster_phones(stats, sets) + extra
        write_text(out_dir / "questions.int", "".join(" ".join(map(str, q)) + "\n" for q in questions))
        tree, info = build_tree(stats, roots, Questions.compile(questions, old_tm.topology), old_tm.topology,
                                max_leaves=cfg.num_leaves, cluster_thresh=cfg.cluster_thresh)
        write_tree(out_dir / "tree", tree)
        system = init_model(out_dir / "tree", stats, old_tm.topology, report=report)
        convert = AlignmentConverter(old_tm, system.transition_model(), tree)
        alis = {u: convert(u, alis[u]).tolist() for u in utts if u in alis}
        graphs = compile_graphs(system, lang, text, [u for u in utts if u in alis], cfg.sil_prob, report,
                                 cfg.oov_policy)
        alis = {u: a for u, a in alis.items() if u in graphs}
        if not alis:
            raise AsrBnError(f"no utterance of the features has an alignment in {ali_dir} (align this data first)")
        key = resume.identity(name, options, system, list(alis))
        history, alis, failed, feats, low = _iterate(name, system, graphs, feats, alis, sil, cfg, adaptation, jobs,
                                                     out_dir, key, report)
        for utt in failed:
            report.skip(utt, "no alignment within the retry beam (last realignment)")
        system.save(out_dir, lang.phones)
        write_alignments(out_dir, alis, jobs)  # the input's jobs: Kaldi's rungs keep their data split
        write_text(out_dir / "iterations.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        write_text(out_dir / "config.json", json.dumps({name: options}, indent=2) + "\n")
        if write_extra is not None:
            write_extra(out_dir, system, alis, feats)
        report.counts.update({"utterances": len(utts), "aligned": len(alis), "leaves": info.num_leaves,
                              "gaussians": system.am.num_gauss, "frames": history[-1]["frames"]})
        low.to_report(report, system.transition_model(), len(history))
        report.save(out_dir / "report.json")
        resume.clear(out_dir)
    return system, report


def _iterate(name: str, system: GmmSystem, graphs: Mapping[str, Any], feats: Mapping[str, np.ndarray],
             alis: dict[str, list[int]], sil: list[int], cfg: DeltasConfig, adaptation: Adaptation | None,
             jobs: Sequence[Sequence[str]], out_dir: Path, key: str, report: Report
             ) -> tuple[list[dict[str, Any]], dict[str, list[int]], list[str], Mapping[str, np.ndarray], TooLittleData]:
    """Passes 1 … num_iters-1 of train_deltas.sh (the progress bar says which rung, `name`): (one record per pass,
    the last alignments, the utterances the last realignment could not align, the features of the last pass, the
    Gaussians gmm-est did not update). Each of Kaldi's `jobs` aligns and accumulates in a process of its own. After
    each pass its state is kept in `out_dir` under `key`; a state kept there by an earlier run is continued."""
    num_gauss = cfg.num_leaves  # as train_deltas.sh: the Gaussian target starts at the leaves asked for
    inc_gauss = (cfg.tot_gauss - num_gauss) // cfg.max_iter_inc
    history: list[dict[str, Any]] = []
    failed: list[str] = []
    low = TooLittleData()
    trans_counts: list[np.ndarray] = []
    first = 1
    state = resume.resumed(out_dir, key, system, report)
    if state is not None:
        if adaptation is not None:
            adaptation.restore(state.transforms)
            feats = adaptation.features()
        first, alis, failed, history = state.it + 1, state.alis, state.failed, state.history
        num_gauss, low, trans_counts = state.num_gauss, state.low, state.trans_counts
    with progress_bar() as bar:
        task = bar.add_task(name, total=cfg.num_iters - 1, completed=first - 1, info="")
        for it in range(first, cfg.num_iters):
            start = time.monotonic()
            if it in cfg.realign_iters:
                bar.update(task, info=f"iter {it}: aligning")
                scales = AlignConfig()
                scorer = gmm_scorer(system, boosted(system, sil, cfg.boost_silence), feats, scales.acoustic_scale)
                alis, failed, _, _ = align_all(system, scorer, graphs, cfg.beam, cfg.retry_beam, scales,
                                               jobs=jobs)
            if adaptation is not None and adaptation.update(it, system, alis):
                feats = adaptation.features()
            stats = PassStats(system, feats, alis, jobs)
            too_little = stats.update(system, 10.0, num_gauss, cfg.power, cfg.seed)
            low.add(too_little)
            trans_counts.append(stats.trans)
            history.append({"iter": it, "avg_like": stats.tot_like / max(stats.frames, 1), "frames": stats.frames,
                            "utterances": len(alis), "failed": len(failed), "num_gauss": system.am.num_gauss,
                            "not_updated": sum(k + r for k, r in too_little.values()),
                            "seconds": round(time.monotonic() - start, 2)})
            if it <= cfg.max_iter_inc:
                num_gauss += inc_gauss
            resume.save(out_dir, key, resume.PassState(it, am_bytes(system.am), trans_counts, alis, failed, history,
                                                       num_gauss, low,
                                                       adaptation.state() if adaptation is not None else {}))
            bar.update(task, advance=1, info=f"like/frame {history[-1]['avg_like']:.3f}, {system.am.num_gauss} Gaussians")
    return history, alis, failed, feats, low
