"""Kaldi state-level lattices as arrays (`asr_bn.fst.FstArrays`: transition-ids in, words out, (graph, acoustic)
costs per arc): the frame of each arc, best costs, acoustic rescoring, and the forward-backward posteriors of
Kaldi's `lattice-to-post` (the denominator statistics of sequence training)."""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from asr_bn.errors import AsrBnError
from asr_bn.fst import FstArrays, parse_lattice
from asr_bn.io import read_table

__all__ = ["LatticeTable", "arc_frames", "forward_backward", "rescore_lattice", "viterbi"]


Times = tuple[np.ndarray, np.ndarray, np.ndarray]  # arc_frames' result: order, each arc's source, each arc's frame


def arc_frames(lat: FstArrays, utt: str) -> Times:
    """(states in topological order, each arc's source state, each arc's frame): the frame of an arc is the number
    of transition-id arcs before it on any path (Kaldi's LatticeStateTimes). Python lists, not numpy slices: a
    decoder's lattice has two arcs per state or so, where numpy's cost per call would dominate."""
    n = lat.num_states
    first, nextstate = lat.first.tolist(), lat.arcs["nextstate"].astype(np.int64)
    src = np.repeat(np.arange(n, dtype=np.int64), np.diff(lat.first))
    dst = nextstate.tolist()
    if (nextstate > src).all():
        order = list(range(n))
    else:  # Kahn's algorithm
        indegree = np.bincount(nextstate, minlength=n).tolist()
        stack, order = [s for s in range(n) if indegree[s] == 0], []
        while stack:
            s = stack.pop()
            order.append(s)
            for a in range(first[s], first[s + 1]):
                indegree[dst[a]] -= 1
                if indegree[dst[a]] == 0:
                    stack.append(dst[a])
        if len(order) != n:
            raise AsrBnError(f"utterance {utt}: its lattice has a cycle (not a decoder's lattice; decode it again)")
    emitting = (lat.arcs["ilabel"] != 0).tolist()
    time = [0] * n
    for s in order:
        for a in range(first[s], first[s + 1]):
            time[dst[a]] = time[s] + emitting[a]
    return np.asarray(order, np.int64), src, np.asarray(time, np.int64)[src]


def viterbi(order: np.ndarray, first: np.ndarray, dst: np.ndarray, cost: np.ndarray, final: np.ndarray,
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


def rescore_lattice(lat: FstArrays, loglikes: np.ndarray, tid2pdf: np.ndarray, utt: str,
                    times: Times | None = None) -> FstArrays:
    """gmm-rescore-lattice: each transition-id arc's acoustic cost becomes minus its pdf's log-likelihood at its
    frame under the new model (`loglikes`: (T, num_pdfs)); graph costs stay. `times`: arc_frames(lat), if known."""
    _, _, frames = times or arc_frames(lat, utt)
    emitting = lat.arcs["ilabel"] != 0
    if emitting.any() and frames[emitting].max() >= len(loglikes):
        raise AsrBnError(f"utterance {utt}: its lattice is longer than its {len(loglikes)} frames of features "
                         "(a lattice of other features: decode again)")
    arcs = lat.arcs.copy()
    pdfs = tid2pdf[arcs["ilabel"][emitting]]
    arcs["acoustic"][emitting] = -loglikes[frames[emitting], pdfs]
    return replace(lat, arcs=arcs)


def forward_backward(lat: FstArrays, acoustic_scale: float, utt: str,
                     times: Times | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Kaldi's `lattice-to-post --acoustic-scale`: (frames, transition-ids, posteriors) of every transition-id on
    every frame (one entry per frame and transition-id, the arcs' posteriors summed) and the lattice's total
    log-probability, with each arc's score −(graph + `acoustic_scale` × acoustic) cost; `times`: arc_frames(lat),
    if known. Pure Python over the arcs in topological order, as arc_frames."""
    order, src, frames = times or arc_frames(lat, utt)
    first = lat.first.tolist()
    dst = lat.arcs["nextstate"].tolist()
    score = (-(lat.arcs["graph"].astype(np.float64) + acoustic_scale * lat.arcs["acoustic"].astype(np.float64))).tolist()
    final = (-(lat.final[:, 0].astype(np.float64) + acoustic_scale * lat.final[:, 1].astype(np.float64))).tolist()
    n, inf = lat.num_states, -math.inf
    alpha = [inf] * n
    alpha[lat.start] = 0.0
    for s in order.tolist():
        here = alpha[s]
        if here == inf:
            continue
        for a in range(first[s], first[s + 1]):
            d, v = dst[a], here + score[a]
            alpha[d] = _log_add(alpha[d], v)
    beta = final[:]
    for s in order[::-1].tolist():
        total = beta[s]
        for a in range(first[s], first[s + 1]):
            total = _log_add(total, score[a] + beta[dst[a]])
        beta[s] = total
    log_like = beta[lat.start]
    if log_like == inf:
        raise AsrBnError(f"utterance {utt}: its lattice has no complete path (decode it again)")
    alpha_a, beta_a = np.asarray(alpha), np.asarray(beta)
    emitting = np.flatnonzero(lat.arcs["ilabel"] != 0)
    post = np.exp(alpha_a[src[emitting]] + np.asarray(score)[emitting] + beta_a[lat.arcs["nextstate"][emitting]]
                  - log_like)
    tids = lat.arcs["ilabel"][emitting].astype(np.int64)
    base = int(tids.max(initial=0)) + 1
    keys, which = np.unique(frames[emitting] * base + tids, return_inverse=True)
    return keys // base, keys % base, np.bincount(which.ravel(), post), log_like


def _log_add(x: float, y: float) -> float:
    """log(exp(x) + exp(y)) of two log-probabilities (−inf: zero)."""
    if x < y:
        x, y = y, x
    if y == -math.inf:
        return x
    return x + math.log1p(math.exp(y - x))


class LatticeTable(Mapping[str, FstArrays]):
    """The lattices of a Kaldi `lat.scp` (`utterance ark:offset`, as `asr-bn decode --lattices` and Kaldi write
    binary lattice archives), read one at a time: each archive is mapped once and a lattice parsed from its offset
    to its own end (an scp may list any subset of an archive, in any order, as Kaldi's split scp files do)."""

    def __init__(self, scp: str | Path) -> None:
        self.scp = Path(scp)
        entries: dict[str, tuple[Path, int]] = {}
        for utt, row in read_table(self.scp, "give the lat.scp of `asr-bn decode --lattices`", fields=(1, None)).items():
            ark, _, offset = row.rest.rpartition(":")
            if len(row.fields) != 1 or not ark or not offset.isdigit():
                raise AsrBnError(f"{self.scp}:{row.line}: not `utterance archive:offset` (give the lat.scp of `asr-bn "
                                 "decode --lattices`)")
            entries[utt] = (Path(ark), int(offset))
        self._entries = entries
        self._maps: dict[Path, memoryview] = {}

    def __getitem__(self, utt: str) -> FstArrays:
        ark, offset = self._entries[utt]
        if ark not in self._maps:
            try:
                with open(ark, "rb") as f:
                    self._maps[ark] = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
            except (OSError, ValueError) as e:
                raise AsrBnError(f"{self.scp}: cannot read its archive {ark} ({e}); decode again") from e
        return parse_lattice(self._maps[ark][offset:], utt, exact=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, utt: object) -> bool:
        return utt in self._entries
