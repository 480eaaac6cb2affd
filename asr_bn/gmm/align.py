"""Training graphs and forced alignment as Kaldi's compile-train-graphs and (gmm-)align-compiled, frame scores from a
GMM or a network's log-likelihoods; `align` is steps/align_si.sh (steps/nnet/align.sh for a network), `ali.N.gz`
archives as Kaldi writes them."""

from __future__ import annotations

import gzip
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from asr_bn.alignments import Labels, transition_id_scores
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.gmm.system import GmmSystem
from asr_bn.io import atomic_open, begin_run, OutputLock, write_text
from asr_bn.jobs import job_parts, run_jobs
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg, kaldifst
from asr_bn.lang import Lang, lexicon_fst, note_oovs
from asr_bn.progress import progress_bar
from asr_bn.report import Report

__all__ = ["AlignConfig", "align", "write_alignments", "compile_graphs", "align_all", "gmm_scorer", "boosted",
           "check_inputs", "check_oov_policy"]


@dataclass
class AlignConfig:
    """Options of Kaldi's steps/align_si.sh (gmm-align-compiled with its scales)."""

    beam: float = 10.0
    retry_beam: float = 40.0
    boost_silence: float = 1.0
    sil_prob: float = 0.5
    num_jobs: int = 1  # number of ali.N.gz archives written (Kaldi's nj)
    transition_scale: float = 1.0
    acoustic_scale: float = 0.1
    self_loop_scale: float = 0.1
    oov_policy: str = "map"  # words outside the lexicon: map (to the lang's oov.txt word) or skip the utterance


def check_oov_policy(policy: str) -> None:
    if policy not in ("map", "skip"):
        raise UsageError(f"--oov-policy {policy!r} is not map or skip")


def compile_graphs(system: GmmSystem, lang: Lang, text: Mapping[str, str], utts: Sequence[str], sil_prob: float,
                    report: Report, oov_policy: str = "map") -> dict[str, "kaldifst.StdVectorFst"]:
    """Kaldi's compile-train-graphs (transition/self-loop scales 0: probabilities are added when aligning).

    Words outside the lexicon map to the lang's OOV word (oov.txt, e.g. <UNK> pronounced SPN), as Kaldi's
    sym2int.pl --map-oov, counted per word in `report`; with `oov_policy` "skip" (or a lang without an OOV word) the
    utterance is skipped instead, named with its words."""
    compiler = khg.TrainingGraphCompiler(
        trans_model=system.trans_model, ctx_dep=system.tree, lex_fst=lexicon_fst(lang, sil_prob),
        disambig_syms=lang.disambig_phone_ids,
        opts=khg.TrainingGraphCompilerOptions(transition_scale=0.0, self_loop_scale=0.0, reorder=True))
    graphs = {}
    mapped: Counter[str] = Counter()
    for utt in utts:
        words = text[utt].split()
        oov = sorted({w for w in words if w not in lang.words})
        if oov and (oov_policy == "skip" or lang.oov is None):
            report.skip(utt, "words not in the lexicon")
            report.note(f"{utt}: words {' '.join(oov)} are not in the lexicon")
            continue
        if not words:
            report.skip(utt, "empty transcript")
            continue
        mapped.update(w for w in words if w not in lang.words)
        graph = compiler.compile_graph_from_text([lang.words.get(w, lang.words.get(str(lang.oov), 0)) for w in words])
        if graph.num_states == 0:
            report.skip(utt, "empty training graph")
            continue
        graphs[utt] = graph
    note_oovs(report, lang.oov, mapped)
    return graphs


def boosted(system: GmmSystem, silence_phones: Sequence[int], boost: float) -> "khg.AmDiagGmm":
    """Kaldi's gmm-boost-silence: a copy of the model with silence-pdf weights scaled by `boost`."""
    if boost == 1.0:
        return system.am
    am = khg.AmDiagGmm()
    am.copy_from_am_diag_gmm(system.am)
    _, pdfs = khg.get_pdfs_for_phones(system.trans_model, sorted(silence_phones))
    for pdf in pdfs:
        gmm = am.get_pdf(pdf)
        gmm.set_weights(np.asarray(gmm.weights, np.float32) * boost)
        gmm.compute_gconsts()
    return am


def gmm_scorer(system: GmmSystem, am: "khg.AmDiagGmm", feats: Mapping[str, np.ndarray],
                acoustic_scale: float) -> Callable[[str], "khg.DecodableInterface"]:
    """Frame scores of an utterance from the GMM `am` (gmm-align-compiled); features of another dimension than the
    model's are one error naming the utterance (Kaldi's decodable would abort)."""
    def scorer(utt: str) -> "khg.DecodableInterface":
        x = feats[utt]
        if x.shape[1] != am.dim:
            raise AsrBnError(f"utterance {utt}: features of dimension {x.shape[1]} but the model's are {am.dim} "
                             f"(its feats.scp mixes dimensions: prepare the data dir again)")
        return khg.DecodableAmDiagGmmScaled(am, system.trans_model, x, acoustic_scale)

    return scorer


def _network_scorer(system: GmmSystem, loglikes: Mapping[str, np.ndarray],
                    acoustic_scale: float) -> Callable[[str], "khg.DecodableInterface"]:
    """Frame scores of an utterance from a network's pdf log-likelihoods (align-compiled-mapped)."""
    tid2pdf = np.asarray(system.trans_model.transition_id_to_pdf_array(), dtype=np.int64)
    return lambda utt: khg.DecodableCtc(transition_id_scores(loglikes[utt], tid2pdf, acoustic_scale))


def align_all(system: GmmSystem, scorer: Callable[[str], "khg.DecodableInterface"],
               graphs: Mapping[str, "kaldifst.StdVectorFst"], beam: float,
               retry_beam: float, scales: AlignConfig, on_done: Callable[[int], None] | None = None,
               jobs: Sequence[Sequence[str]] = ()) -> tuple[dict[str, list[int]], list[str], float, int]:
    """Kaldi's (gmm-)align-compiled over all utterances, frame scores from `scorer`: (alignments, failed
    utterances, total like, frames), in the order of `graphs`. With `jobs` (Kaldi's parts of the data), each part
    is aligned in a process of its own (`asr_bn.jobs`); `on_done(n)` hears of every n utterances done."""
    config = khg.AlignConfig(beam=beam, retry_beam=retry_beam, careful=False)
    parts = job_parts(graphs, jobs)

    def job(j: int, tick: Callable[[int], None]) -> tuple[dict[str, list[int]], float, int]:
        alis: dict[str, list[int]] = {}
        num_done = num_error = num_retried = frames = 0
        tot_like = 0.0
        for utt in parts[j]:
            fst = graphs[utt].copy()
            khg.add_transition_probs(system.trans_model, [], scales.transition_scale, scales.self_loop_scale, fst)
            before = num_error
            decodable = scorer(utt)  # the utterance's features or log-likelihoods, read once
            num_done, num_error, num_retried, tot_like, frames, ali, _ = khg.align_utterance_wrapper(
                config, utt, scales.acoustic_scale, fst, decodable, num_done, num_error, num_retried, tot_like,
                frames)
            if num_error == before and len(ali) == decodable.num_frames_ready():
                alis[utt] = list(ali)
            tick(1)
        return alis, tot_like, frames

    done = run_jobs(job, len(parts), on_done)
    found = {u: a for alis, _, _ in done for u, a in alis.items()}
    alis = {u: found[u] for u in graphs if u in found}
    return alis, [u for u in graphs if u not in found], sum(t for _, t, _ in done), sum(f for _, _, f in done)


def check_inputs(feats: Mapping[str, np.ndarray], text: Mapping[str, str], report: Report,
                 check: Callable[[str, np.ndarray], str | None] | None = None) -> list[str]:
    """Utterances with both features and a transcript (the others are skipped, named), each matrix read once; with
    `check`, also those for which it gives no reason to skip (it may raise)."""
    utts = []
    for utt in sorted(set(feats) | set(text)):
        if utt not in text:
            report.skip(utt, "no transcript")
        elif utt not in feats:
            report.skip(utt, "no features")
        else:
            m = feats[utt]
            reason = "no feature frames" if m.shape[0] == 0 else check(utt, m) if check else None
            if reason:
                report.skip(utt, reason)
            else:
                utts.append(utt)
    return utts


def _loglikes_check(num_pdfs: int) -> Callable[[str, np.ndarray], str | None]:
    """`check_inputs`' check of a network's log-likelihoods: a matrix of another width than the model's pdfs is an
    error (another model's network), NaN/Inf values a named skip."""

    def check(utt: str, m: np.ndarray) -> str | None:
        if m.ndim != 2 or m.shape[1] != num_pdfs:
            raise AsrBnError(f"utterance {utt}: log-likelihoods have shape {tuple(m.shape)} but the model has "
                             f"{num_pdfs} pdfs (use a network trained on this model's alignments)")
        return None if np.isfinite(m).all() else "NaN or infinite log-likelihoods"

    return check


def align(system: GmmSystem, feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang,
          out_dir: str | Path, cfg: AlignConfig | None = None, network: bool = False) -> Report:
    """Forced alignment as Kaldi's steps/align_si.sh: writes out_dir/{ali.1.gz … ali.N.gz, num_jobs, final.mdl,
    tree, phones.txt, report.json}. Utterances that cannot be aligned are skipped, named in the report.

    With `network=True`, `feats` are a network's per-frame pdf log-likelihoods (`asr-bn forward` output) and score
    the frames instead of the GMM, as Kaldi's steps/nnet/align.sh; the system's HMM (final.mdl) is written as is.
    """
    cfg = cfg or AlignConfig()
    check_oov_policy(cfg.oov_policy)
    if cfg.num_jobs < 1:
        raise UsageError(f"num_jobs={cfg.num_jobs} must be at least 1")
    out_dir = Path(out_dir)
    report = Report("align")
    utts = check_inputs(feats, text, report, _loglikes_check(system.trans_model.num_pdfs) if network else None)
    sil = lang.silence_phone_ids
    if network:
        scorer = _network_scorer(system, feats, cfg.acoustic_scale)
    else:
        scorer = gmm_scorer(system, boosted(system, sil, cfg.boost_silence), feats, cfg.acoustic_scale)
    jobs = kaldi_split(sorted(feats), cfg.num_jobs, getattr(feats, "utt2spk", None))
    with OutputLock(out_dir):
        begin_run(out_dir)
        graphs = compile_graphs(system, lang, text, utts, cfg.sil_prob, report, cfg.oov_policy)
        with progress_bar() as bar:
            task = bar.add_task("align", total=len(graphs), info="")
            alis, failed, tot_like, frames = align_all(
                system, scorer, graphs, cfg.beam, cfg.retry_beam, cfg, lambda n: bar.advance(task, n), jobs)
        for utt in failed:
            report.skip(utt, "no alignment within the retry beam")
        report.counts.update({"utterances": len(utts), "aligned": len(alis),
                              "frames": sum(len(a) for a in alis.values())})
        if frames:
            tool = "align-compiled-mapped" if network else "gmm-align-compiled"
            report.note(f"log-likelihood per frame as {tool} reports it: {tot_like / frames:.4f}")
        system.save(out_dir, lang.phones)
        write_alignments(out_dir, alis, jobs)
        report.save(out_dir / "report.json")
    return report


def kaldi_split(utts: Sequence[str], num_jobs: int, utt2spk: Mapping[str, str] | None = None) -> list[list[str]]:
    """`utts` (in order) in `num_jobs` parts as utils/split_data.sh makes a data dir's split: whole speakers, the
    speakers dealt out in order and then moved between neighbouring parts while that evens the utterance counts
    (split_scp.pl --utt2spk). Without `utt2spk`, contiguous parts of nearly equal size (split_scp.pl without it).
    Kaldi's jobs each run their own accumulator processes on their part. Fewer speakers than jobs is refused, as
    split_data.sh refuses it: a speaker in two jobs would get two fMLLR transforms, each from part of its data."""
    speakers: dict[str, list[str]] = {}
    for utt in utts:
        speakers.setdefault(utt2spk.get(utt, utt) if utt2spk else utt, []).append(utt)
    if utt2spk and len(speakers) < num_jobs:
        raise UsageError(f"--nj {num_jobs} is more than the data's {len(speakers)} speakers (a job takes whole "
                         f"speakers; Kaldi's utils/split_data.sh refuses too): give --nj {len(speakers)} or fewer")
    if not utt2spk:
        return [[utts[i] for i in idx] for idx in np.array_split(np.arange(len(utts)), num_jobs)]
    order = list(speakers)
    parts: list[list[str]] = [[] for _ in range(num_jobs)]
    for i, spk in enumerate(order):
        parts[i * num_jobs // len(order)].append(spk)
    count = [sum(len(speakers[s]) for s in part) for part in parts]
    changed = True
    while changed:
        changed = False
        for j in range(num_jobs):
            if j < num_jobs - 1 and parts[j]:  # the last speaker of part j to part j + 1?
                n = len(speakers[parts[j][-1]])
                if abs((count[j + 1] + n) - (count[j] - n)) < abs(count[j + 1] - count[j]):
                    count[j + 1] += n
                    count[j] -= n
                    parts[j + 1].insert(0, parts[j].pop())
                    changed = True
            if j > 0 and parts[j]:  # the first speaker of part j to part j - 1?
                n = len(speakers[parts[j][0]])
                if abs((count[j] - n) - (count[j - 1] + n)) < abs(count[j] - count[j - 1]):
                    count[j - 1] += n
                    count[j] -= n
                    parts[j - 1].append(parts[j].pop(0))
                    changed = True
    return [[u for spk in part for u in speakers[spk]] for part in parts]


def alignment_jobs(labels: Iterable[Labels]) -> list[list[str]]:
    """The utterances of each alignment archive (`read_alignments` output; ali.1.gz, ali.2.gz, … of a dir): the
    dir's Kaldi jobs."""
    parts: dict[Path, list[str]] = {}
    for x in labels:
        parts.setdefault(x.path, []).append(x.utt)
    return list(parts.values())


def write_alignments(out_dir: str | Path, alis: Mapping[str, Sequence[int]], parts: Sequence[Sequence[str]]) -> None:
    """Write ali.1.gz … ali.N.gz (gzipped binary Kaldi int32-vector archives), one per part of `parts` (its
    aligned utterances, sorted: e.g. `kaldi_split` of the data), and the `num_jobs` file, as Kaldi's scripts leave
    them."""
    import kaldiio

    out_dir = Path(out_dir)
    num_jobs = len(parts)
    unplaced = set(alis).difference(*map(set, parts))
    if unplaced:  # a caller's parts and alignments disagree: writing would drop utterances without a word
        raise AsrBnError(f"{len(unplaced)} aligned utterances (e.g. {min(unplaced)}) are in no job of {out_dir}")
    for job, part in enumerate(parts, 1):
        with atomic_open(out_dir / f"ali.{job}.gz", "wb") as f:
            with gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as gz:  # no temp name in the header
                for utt in sorted(u for u in part if u in alis):
                    kaldiio.save_ark(gz, {utt: np.asarray(alis[utt], dtype=np.int32)})
    for stale in out_dir.glob("ali.*.gz"):
        suffix = stale.name[4:-3]
        if suffix.isdigit() and int(suffix) > num_jobs:
            stale.unlink()
    write_text(out_dir / "num_jobs", f"{num_jobs}\n")
