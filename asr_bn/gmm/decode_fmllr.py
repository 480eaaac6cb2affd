"""Two-pass fMLLR decoding of a speaker-adapted system, as Kaldi's steps/decode_fmllr.sh.

Pass 1 decodes the speaker-independent features (final.mat applied) with final.alimdl into lattices (written to
`OUT.si`, as Kaldi's `decode.sh` leaves `decode_X.si`); each speaker's fMLLR is estimated from their posteriors
(lattice-to-post --acoustic-scale | weight-silence-post | gmm-post-to-gpost final.alimdl | gmm-est-fmllr-gpost
final.mdl). Pass 2 decodes the adapted features with final.mdl into state-level lattices; a second fMLLR estimate
from those (gmm-est-fmllr final.mdl) is composed with the first into `trans.1`, and the lattices are rescored with
final.mdl on the finally adapted features (gmm-rescore-lattice) before the one-best and LM-weight sweep.

Posteriors come from forward-backward over the state-level lattices themselves: Kaldi's pass-1 lattices are
determinized (each word sequence keeps only its best alignment) and its pass-2 ones are `lattice-determinize-pruned
--beam=4` first; no Python package offers Kaldi's lattice determinization, so here the pass-2 lattices get that
beam's pruning only. The decoder is `asr-bn decode --lattices`' (LatticeSimpleDecoder, as gmm-latgen-simple: no
--max-active). tests/test_gmm_tree.py compares each step with Kaldi's binaries and the whole with Kaldi's script.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from asr_bn.config import DecodeConfig, DecodeFmllrConfig, check_options
from asr_bn.decode import Graph, Hypothesis, _decode_or_reason, lattice_hypothesis, load_graph, write_decode
from asr_bn.errors import AsrBnError
from asr_bn.fst import FstArrays, parse_lattice, vector_bytes
from asr_bn.gmm.sat import (Posterior, SatConfig, _spk2utt, apply_fmllr, compose, estimate_speaker_transforms,
                            speaker_independent_features, weight_silence, write_transforms)
from asr_bn.hmm_gmm import FeatureMap, GmmSystem
from asr_bn.io import OutputLock, check_output_dir, write_text
from asr_bn.report import Report

__all__ = ["DecodeFmllrConfig", "lattice_posteriors", "rescore_lattice", "decode_fmllr"]

# ---------------------------------------------------------------------------------------------------------------------
# State-level lattices as arrays


def _arc_frames(lat: FstArrays, utt: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(states in topological order, each arc's source state, each arc's frame): the frame of an arc is the number
    of transition-id arcs before it on any path (Kaldi's LatticeStateTimes)."""
    n, first = lat.num_states, lat.first
    src = np.repeat(np.arange(n, dtype=np.int64), np.diff(first))
    dst = lat.arcs["nextstate"].astype(np.int64)
    if (dst > src).all():
        order = np.arange(n)
    else:  # Kahn's algorithm
        indegree = np.bincount(dst, minlength=n)
        stack, seen = [s for s in range(n) if indegree[s] == 0], []
        while stack:
            s = stack.pop()
            seen.append(s)
            for d in dst[first[s]:first[s + 1]].tolist():
                indegree[d] -= 1
                if indegree[d] == 0:
                    stack.append(d)
        if len(seen) != n:
            raise AsrBnError(f"utterance {utt}: its lattice has a cycle (not a decoder's lattice; decode it again)")
        order = np.asarray(seen)
    emitting = (lat.arcs["ilabel"] != 0).astype(np.int64)
    time = np.zeros(n, np.int64)
    for s in order.tolist():
        a, b = first[s], first[s + 1]
        if a < b:
            time[dst[a:b]] = time[s] + emitting[a:b]
    return order, src, time[src]


def lattice_posteriors(lat: FstArrays, acoustic_scale: float, utt: str,
                       beam: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """lattice-to-post --acoustic-scale on a state-level lattice: (frame, transition-id, posterior) of every
    transition-id arc, by forward-backward with costs graph + acoustic_scale × acoustic; with `beam`, arcs on no
    path within `beam` of the best one are left out first (lattice-prune's rule)."""
    order, src, frames = _arc_frames(lat, utt)
    first, dst = lat.first, lat.arcs["nextstate"].astype(np.int64)
    cost = lat.arcs["graph"].astype(np.float64) + acoustic_scale * lat.arcs["acoustic"].astype(np.float64)
    final = lat.final[:, 0].astype(np.float64) + acoustic_scale * lat.final[:, 1].astype(np.float64)
    if beam is not None:
        best_in, best_out = _viterbi(order, first, dst, cost, final, lat.start)
        through = best_in[src] + cost + best_out[dst]
        cost = np.where(through <= best_out[lat.start] + beam, cost, np.inf)
        final = np.where(best_in + final <= best_out[lat.start] + beam, final, np.inf)
    alpha = np.full(lat.num_states, -np.inf)
    alpha[lat.start] = 0.0
    with np.errstate(invalid="ignore"):  # -inf - inf on pruned arcs of unreachable states
        for s in order.tolist():
            a, b = first[s], first[s + 1]
            if a < b and alpha[s] > -np.inf:
                np.logaddexp.at(alpha, dst[a:b], alpha[s] - cost[a:b])
        beta = -final
        for s in order[::-1].tolist():
            a, b = first[s], first[s + 1]
            if a < b:
                beta[s] = np.logaddexp(beta[s], np.logaddexp.reduce(beta[dst[a:b]] - cost[a:b]))
        total = beta[lat.start]
        if not np.isfinite(total):
            raise AsrBnError(f"utterance {utt}: its lattice has no complete path (decode it again)")
        emitting = lat.arcs["ilabel"] != 0
        post = np.exp(alpha[src] - cost + beta[dst] - total)[emitting]
    keep = post > 0
    return frames[emitting][keep], lat.arcs["ilabel"][emitting][keep].astype(np.int64), post[keep]


def _viterbi(order: np.ndarray, first: np.ndarray, dst: np.ndarray, cost: np.ndarray, final: np.ndarray,
             start: int) -> tuple[np.ndarray, np.ndarray]:
    """The best cost from the start to each state and from each state to the end."""
    best_in = np.full(len(final), np.inf)
    best_in[start] = 0.0
    for s in order.tolist():
        a, b = first[s], first[s + 1]
        if a < b:
            np.minimum.at(best_in, dst[a:b], best_in[s] + cost[a:b])
    best_out = final.copy()
    for s in order[::-1].tolist():
        a, b = first[s], first[s + 1]
        if a < b:
            best_out[s] = min(best_out[s], float((best_out[dst[a:b]] + cost[a:b]).min()))
    return best_in, best_out


def rescore_lattice(lat: FstArrays, loglikes: np.ndarray, tid2pdf: np.ndarray, utt: str) -> FstArrays:
    """gmm-rescore-lattice: each transition-id arc's acoustic cost becomes minus its pdf's log-likelihood at its
    frame under the new model (`loglikes`: (T, num_pdfs)); graph costs stay."""
    _, src, frames = _arc_frames(lat, utt)
    emitting = lat.arcs["ilabel"] != 0
    if emitting.any() and frames[emitting].max() >= len(loglikes):
        raise AsrBnError(f"utterance {utt}: its lattice is longer than its {len(loglikes)} frames of features "
                         "(a lattice of other features: decode again)")
    arcs = lat.arcs.copy()
    pdfs = tid2pdf[arcs["ilabel"][emitting]]
    arcs["acoustic"][emitting] = -loglikes[frames[emitting], pdfs]
    return replace(lat, arcs=arcs)


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


def _decoded(graph: Graph, model: GmmSystem, feats: Mapping[str, np.ndarray], utts: list[str],
             config: DecodeConfig, done: dict[str, Hypothesis]) -> Iterator[tuple[str, Hypothesis | str]]:
    """Decode `utts` with the GMM `model` (gmm-latgen-faster), keeping each hypothesis in `done` as it goes."""
    for utt in utts:
        hyp = _decode_or_reason(graph, utt, model.log_likelihoods(feats[utt]), config)
        if isinstance(hyp, Hypothesis):
            done[utt] = hyp
        yield utt, hyp


def _posteriors(hyps: Mapping[str, Hypothesis], system: GmmSystem, silence: list[int], cfg: DecodeFmllrConfig,
                beam: float | None) -> dict[str, Posterior]:
    """lattice-to-post | weight-silence-post of each hypothesis's lattice."""
    tm = system.transition_model()
    return {utt: weight_silence(tm, *lattice_posteriors(parse_lattice(h.lattice or b"", utt), cfg.acwt, utt, beam),
                                silence, cfg.silence_weight) for utt, h in hyps.items()}


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
    speaker_of = {u: s for s, us in spk2utt.items() for u in us}
    utts = sorted(si)
    sat = SatConfig(fmllr_min_count=cfg.fmllr_min_count)
    report, second_report = Report("decode_fmllr"), Report("fmllr")
    with OutputLock(si_dir), OutputLock(out_dir):
        (out_dir / "report.json").unlink(missing_ok=True)  # written last: it marks a complete run
        first: dict[str, Hypothesis] = {}
        write_decode(si_dir, graph, _decoded(graph, alimdl, si, utts, cfg.decoding(cfg.first_beam), first),
                     cfg.decoding(cfg.first_beam), Report("decode_fmllr (speaker-independent pass)"), total=len(utts))
        pre = estimate_speaker_transforms(system, si, _posteriors(first, alimdl, silence, cfg, None), spk2utt, sat,
                                          report, posterior_am=alimdl.am)
        del first
        adapted = FeatureMap(si, lambda u, x: apply_fmllr(pre[speaker_of[u]], x))
        second: dict[str, Hypothesis] = {}
        failed = {utt: hyp for utt, hyp in _decoded(graph, system, adapted, utts, cfg.decoding(cfg.beam), second)
                  if isinstance(hyp, str)}
        new = estimate_speaker_transforms(system, adapted, _posteriors(second, system, silence, cfg,
                                                                       cfg.determinize_beam),
                                          spk2utt, sat, second_report)
        for key, value in second_report.counts.items():
            report.counts[f"{key} (second pass)"] = value
        transforms = {spk: compose(new[spk], pre[spk]) for spk in spk2utt}
        final_feats = FeatureMap(si, lambda u, x: apply_fmllr(transforms[speaker_of[u]], x))
        report.counts["speakers"] = len(spk2utt)

        def rescored() -> Iterator[tuple[str, Hypothesis | str]]:
            for utt in utts:
                if utt in failed:
                    yield utt, failed[utt]
                    continue
                hyp = second[utt]
                lat = rescore_lattice(parse_lattice(hyp.lattice or b"", utt), system.log_likelihoods(final_feats[utt]),
                                      graph.tid2pdf, utt)
                yield utt, lattice_hypothesis(graph, utt, vector_bytes(lat, changed=True), hyp.frames,
                                              cfg.decoding(cfg.beam), hyp.reached_final)

        write_transforms(out_dir / "trans.1", transforms)
        write_text(out_dir / "num_jobs", "1\n")
        write_decode(out_dir, graph, rescored(), cfg.decoding(cfg.beam), report, total=len(utts))
    return report
