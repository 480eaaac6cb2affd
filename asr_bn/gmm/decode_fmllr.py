"""Two-pass fMLLR decoding of a speaker-adapted system, as Kaldi's steps/decode_fmllr.sh.

Pass 1 decodes the speaker-independent features (final.mat applied) with final.alimdl into lattices (written to
`OUT.si`, as Kaldi's `decode.sh` leaves `decode_X.si`); each speaker's fMLLR is estimated from their posteriors
(lattice-to-post --acoustic-scale | weight-silence-post | gmm-post-to-gpost final.alimdl | gmm-est-fmllr-gpost
final.mdl). Pass 2 decodes the adapted features with final.mdl into state-level lattices; a second fMLLR estimate
from those (gmm-est-fmllr final.mdl) is composed with the first into `trans.1`, and the lattices are rescored with
final.mdl on the finally adapted features (gmm-rescore-lattice) before the one-best and LM-weight sweep.

Posteriors are those of determinized lattices, as Kaldi takes them (gmm-latgen-faster writes determinized
lattices; pass 2 runs lattice-determinize-pruned --beam=4): each word sequence within the beam counts with its best
alignment (`best_alignment_posteriors`; no Python package determinizes Kaldi lattices). The decoder is `asr-bn
decode --lattices`' (LatticeSimpleDecoder, as gmm-latgen-simple: no --max-active). tests/test_gmm_tree.py compares
each step with Kaldi's binaries and the whole with Kaldi's script.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

from asr_bn.config import DecodeConfig, DecodeFmllrConfig, check_options
from asr_bn.decode import (
    Graph,
    Hypothesis,
    _decode_or_reason,
    lattice_hypothesis,
    load_graph,
    write_decode,
)
from asr_bn.errors import AsrBnError
from asr_bn.fst import FstArrays, parse_lattice, vector_bytes
from asr_bn.gmm.align import kaldi_split
from asr_bn.gmm.sat import (
    Posterior,
    SatConfig,
    _spk2utt,
    compose,
    estimate_speaker_transforms,
    fmllr_adapted,
    speaker_independent_features,
    weight_silence,
    write_transforms,
)
from asr_bn.gmm.system import GmmSystem
from asr_bn.io import OutputLock, begin_run, check_output_dir, write_text
from asr_bn.jobs import run_jobs
from asr_bn.lattice import arc_frames, rescore_lattice, viterbi
from asr_bn.progress import progress_bar
from asr_bn.report import Report

__all__ = ["DecodeFmllrConfig", "best_alignment_posteriors", "decode_fmllr"]

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------------------------------
# State-level lattices as arrays


def best_alignment_posteriors(lat: FstArrays, acoustic_scale: float, utt: str,
                              beam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """lattice-determinize-pruned --acoustic-scale --beam | lattice-to-post: (frame, transition-id, posterior) where
    each word sequence within `beam` of the best path counts with its best alignment only, weighted by that
    alignment's probability (what a determinized lattice holds). Word prefixes are expanded one word at a time,
    each keeping, per lattice state, its best path (a tree of back-pointers); the mass of each word sequence flows
    back along its best path."""
    import heapq

    order, _, frames = arc_frames(lat, utt)
    first, dst, olabel = lat.first, lat.arcs["nextstate"].astype(np.int64), lat.arcs["olabel"]
    cost = lat.arcs["graph"].astype(np.float64) + acoustic_scale * lat.arcs["acoustic"].astype(np.float64)
    final = lat.final[:, 0].astype(np.float64) + acoustic_scale * lat.final[:, 1].astype(np.float64)
    _, best_out = viterbi(order, first, dst, cost, final, lat.start)
    limit = best_out[lat.start] + beam
    if not np.isfinite(limit):
        raise AsrBnError(f"utterance {utt}: its lattice has no complete path (decode it again)")
    rank = np.empty(lat.num_states, np.int64)
    rank[order] = np.arange(lat.num_states)
    parents: list[int] = []  # per node (a lattice state reached by a word prefix): the node before it, the arc
    arcs_in: list[int] = []
    ends: list[tuple[float, int]] = []  # per word sequence: its best cost and the node its best path ends at
    pending: list[dict[int, tuple[float, int, int]]] = [{int(lat.start): (0.0, -1, -1)}]
    cost_l, dst_l, out_l, first_l = cost.tolist(), dst.tolist(), olabel.tolist(), first.tolist()
    best_out_l, rank_l, final_l = best_out.tolist(), rank.tolist(), final.tolist()
    while pending:
        reached = pending.pop()  # the states one word prefix reaches: state → (cost, node before, arc)
        heap = [(rank_l[q], q) for q in reached]
        heapq.heapify(heap)
        done: set[int] = set()
        end = (np.inf, -1)
        next_words: dict[int, dict[int, tuple[float, int, int]]] = {}
        while heap:  # the prefix's states in topological order: every epsilon-output path into one comes first
            _, q = heapq.heappop(heap)
            if q in done:
                continue
            done.add(q)
            c, parent, arc = reached[q]
            node = len(parents)
            parents.append(parent)
            arcs_in.append(arc)
            if c + final_l[q] < end[0]:
                end = (c + final_l[q], node)
            for a in range(first_l[q], first_l[q + 1]):
                d, nc = dst_l[a], c + cost_l[a]
                if nc + best_out_l[d] > limit:
                    continue  # no word sequence through here is within the beam
                target = reached if out_l[a] == 0 else next_words.setdefault(out_l[a], {})
                if d not in target or nc < target[d][0]:
                    target[d] = (nc, node, a)
                    if out_l[a] == 0:
                        heapq.heappush(heap, (rank_l[d], d))
        if end[0] <= limit:
            ends.append(end)
        pending.extend(next_words.values())
    costs = np.array([c for c, _ in ends])
    mass = np.zeros(len(parents))
    np.add.at(mass, [n for _, n in ends], np.exp(costs.min() - costs) / np.exp(costs.min() - costs).sum())
    arc_post = np.zeros(len(cost))
    for node in range(len(parents) - 1, 0, -1):  # a node's parent comes before it
        if mass[node] > 0:
            mass[parents[node]] += mass[node]
            arc_post[arcs_in[node]] += mass[node]
    emitting = (lat.arcs["ilabel"] != 0) & (arc_post > 0)
    return frames[emitting], lat.arcs["ilabel"][emitting].astype(np.int64), arc_post[emitting]


# ---------------------------------------------------------------------------------------------------------------------
# The two passes


def _silence_phones(graph_dir: Path) -> list[int]:
    """The graph dir's phones/silence.csl (Kaldi's mkgraph.sh and `asr-bn mkgraph` write it)."""
    path = graph_dir / "phones" / "silence.csl"
    try:
        return [int(p) for p in path.read_text().split(":")]
    except (OSError, ValueError):
        raise AsrBnError(f"{path}: missing or not colon-separated phone ids (the silence phones weighted by "
                         f"--silence-weight); rebuild the graph with `asr-bn mkgraph` or Kaldi's mkgraph.sh") from None


def _load_sat(src_dir: Path) -> tuple[GmmSystem, GmmSystem]:
    """final.mdl and final.alimdl of a speaker-adapted system, checked to share their pdfs and dimension."""
    for name in ("final.mdl", "final.alimdl"):
        if not (src_dir / name).is_file():
            raise AsrBnError(f"{src_dir / name}: no such file; decode-fmllr needs a speaker-adapted system (asr-bn gmm "
                             f"sat or Kaldi's train_sat.sh); decode another with `asr-bn gmm likes` + `asr-bn decode`")
    system, alimdl = GmmSystem.load(src_dir / "final.mdl"), GmmSystem.load(src_dir / "final.alimdl")
    if (alimdl.am.num_pdfs, alimdl.am.dim) != (system.am.num_pdfs, system.am.dim):
        raise AsrBnError(f"{src_dir / 'final.alimdl'} has {alimdl.am.num_pdfs} pdfs of dimension {alimdl.am.dim} but "
                         f"final.mdl {system.am.num_pdfs} of {system.am.dim}: they are not one system's")
    return system, alimdl


def _per_utterance(fn: Callable[[str], T], utts: list[str], jobs: Sequence[Sequence[str]],
                   what: str) -> Iterator[tuple[str, T]]:
    """(utterance, fn(utterance)) for each of `utts`, in their order; Kaldi's `jobs` (parts of `utts`) side by side
    when there are several (`asr_bn.jobs`, with a transient bar of their own saying `what`)."""
    if len(jobs) <= 1:
        yield from ((utt, fn(utt)) for utt in utts)
        return

    def work(j: int, tick: Callable[[int], None]) -> list[tuple[str, T]]:
        out = []
        for utt in jobs[j]:
            out.append((utt, fn(utt)))
            tick(1)
        return out

    with progress_bar(transient=True) as bar:
        task = bar.add_task(f"{what} ({len(jobs)} jobs)", total=len(utts), info="")
        found = dict(pair for part in run_jobs(work, len(jobs), lambda n: bar.advance(task, n)) for pair in part)
    yield from ((utt, found[utt]) for utt in utts)


def _decoded(graph: Graph, model: GmmSystem, feats: Mapping[str, np.ndarray], utts: list[str],
             jobs: Sequence[Sequence[str]], config: DecodeConfig,
             done: dict[str, Hypothesis]) -> Iterator[tuple[str, Hypothesis | str]]:
    """Decode `utts` with the GMM `model` (gmm-latgen-simple), Kaldi's `jobs` side by side, keeping each hypothesis
    in `done`."""
    for utt, hyp in _per_utterance(lambda u: _decode_or_reason(graph, u, model.log_likelihoods(feats[u]), config),
                                   utts, jobs, "decode"):
        if isinstance(hyp, Hypothesis):
            done[utt] = hyp
        yield utt, hyp


def _posteriors(hyps: Mapping[str, Hypothesis], system: GmmSystem, silence: list[int], cfg: DecodeFmllrConfig,
                beam: float) -> dict[str, Posterior]:
    """lattice-determinize-pruned --beam | lattice-to-post | weight-silence-post of each hypothesis's lattice."""
    tm = system.transition_model()
    return {utt: weight_silence(tm, *best_alignment_posteriors(parse_lattice(h.lattice or b"", utt), cfg.acwt, utt,
                                                               beam), silence, cfg.silence_weight)
            for utt, h in hyps.items()}


def decode_fmllr(graph_dir: str | Path, feats: Mapping[str, np.ndarray], utt2spk: Mapping[str, str],
                 src_dir: str | Path, out_dir: str | Path, cfg: DecodeFmllrConfig | None = None) -> Report:
    """steps/decode_fmllr.sh with the speaker-adapted system in `src_dir` (final.mdl, final.alimdl, tree, final.mat)
    on the GMM features `feats`: writes `OUT.si` (the speaker-independent pass, as `asr-bn decode --lattices`) and
    `out_dir`: trans.1 (per-speaker fMLLR, transform-feats --utt2spk reads it), num_jobs, lat.ark/.scp (rescored
    state-level lattices), text, hyp_LMWT for `cfg.lmwt`, report.json (last)."""
    cfg = cfg or DecodeFmllrConfig()
    check_options(cfg)
    cfg.decoding(cfg.beam).check()
    src_dir, graph_dir = Path(src_dir), Path(graph_dir)
    out_dir = check_output_dir(out_dir, "OUT_DIR")
    si_dir = out_dir.with_name(out_dir.name + ".si")
    system, alimdl = _load_sat(src_dir)
    graph = load_graph(graph_dir, src_dir / "final.mdl")
    silence = _silence_phones(graph_dir)
    si = speaker_independent_features(feats, src_dir)
    system.check_features(si, src_dir / "final.mdl")
    spk2utt = _spk2utt(si, utt2spk)
    utts = sorted(si)
    jobs = kaldi_split(utts, cfg.num_jobs, utt2spk)
    sat = SatConfig(fmllr_min_count=cfg.fmllr_min_count)
    report, second_report = Report("decode_fmllr"), Report("fmllr")
    with OutputLock(si_dir), OutputLock(out_dir):
        begin_run(out_dir)
        first: dict[str, Hypothesis] = {}
        write_decode(si_dir, graph, _decoded(graph, alimdl, si, utts, jobs, cfg.decoding(cfg.first_beam), first),
                     cfg.decoding(cfg.first_beam), Report("decode_fmllr (speaker-independent pass)"), total=len(utts))
        posteriors = _posteriors(first, alimdl, silence, cfg, cfg.lattice_beam)  # the decoder's determinization
        pre = estimate_speaker_transforms(system, si, posteriors, spk2utt, sat, report, posterior_am=alimdl.am,
                                          jobs=jobs)
        del first, posteriors  # the lattices of pass 1 are on disk (OUT.si)
        adapted = fmllr_adapted(si, pre, utt2spk)
        second: dict[str, Hypothesis] = {}
        failed = {utt: hyp for utt, hyp in _decoded(graph, system, adapted, utts, jobs, cfg.decoding(cfg.beam), second)
                  if isinstance(hyp, str)}
        new = estimate_speaker_transforms(system, adapted, _posteriors(second, system, silence, cfg,
                                                                       cfg.determinize_beam),
                                          spk2utt, sat, second_report, jobs=jobs)
        for key, value in second_report.counts.items():
            report.counts[f"{key} (second pass)"] = value
        transforms = {spk: compose(new[spk], pre[spk]) for spk in spk2utt}
        final_feats = fmllr_adapted(si, transforms, utt2spk)
        report.counts["speakers"] = len(spk2utt)

        def rescored(utt: str) -> Hypothesis | str:  # gmm-rescore-lattice with the final transforms
            if utt in failed:
                return failed[utt]
            hyp = second[utt]
            lat = rescore_lattice(parse_lattice(hyp.lattice or b"", utt), system.log_likelihoods(final_feats[utt]),
                                  graph.tid2pdf, utt)
            return lattice_hypothesis(graph, utt, vector_bytes(lat, changed=True), hyp.frames, cfg.decoding(cfg.beam),
                                      hyp.reached_final)

        write_transforms(out_dir / "trans.1", transforms)
        write_text(out_dir / "num_jobs", f"{len(jobs)}\n")
        write_decode(out_dir, graph, _per_utterance(rescored, utts, jobs, "rescore"), cfg.decoding(cfg.beam), report,
                     total=len(utts))
    return report
