"""Phone questions for tree building, obtained as Kaldi's `cluster-phones` obtains them.

The phone sets (lang's `phones/sets.int`) are clustered top-down: each cluster is split in two by k-means (ten
pseudo-random starts, each refined by moving single sets while the likelihood rises), best split first, until every
set stands alone. Every cluster of that tree is a question ("is the phone in this cluster?"). Kaldi draws its
k-means starts from the C library's `rand()` seeded with 1; `CRand` reproduces that sequence, so the questions are
Kaldi's own.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from asr_bn.errors import AsrBnError
from asr_bn.gmm.gauss import objf
from asr_bn.gmm.tree_stats import PDF_CLASS, TreeStats


class CRand:
    """glibc's `rand()` (the additive feedback generator behind `srand(seed)`), which Kaldi's Rand() calls."""

    def __init__(self, seed: int = 1) -> None:
        r = [seed]
        for i in range(1, 31):
            hi, lo = divmod(r[i - 1], 127773)
            word = 16807 * lo - 2836 * hi
            r.append(word + 2147483647 if word < 0 else word)
        r += r[:3]
        for i in range(34, 344):
            r.append((r[i - 31] + r[i - 3]) & 0xFFFFFFFF)
        self._ring = r[-34:]  # the last 34 values: enough for the two taps (31 and 3 back)

    def __call__(self) -> int:
        value = (self._ring[-31] + self._ring[-3]) & 0xFFFFFFFF
        self._ring = self._ring[1:] + [value]
        return value >> 1


class _Points:
    """Gaussian statistics as rows (count, Σx, Σx²) and their float objective."""

    def __init__(self, dim: int, var_floor: float) -> None:
        self.dim, self.var_floor = dim, var_floor

    def objf(self, row: np.ndarray) -> np.float32:
        return objf(row[0], row[1:].reshape(2, self.dim), self.var_floor)[()]


def _float_sum(values: Sequence[np.float32]) -> np.float32:
    total = np.float32(0.0)
    for v in values:
        total = np.float32(total + v)
    return total


def _refine(points: np.ndarray, clusters: list[np.ndarray], assign: list[int], g: _Points, iters: int = 100) -> np.float32:
    """Kaldi's RefineClusters for two clusters: move single points to the other cluster while that gains."""
    n = len(points)
    clust_objf = [g.objf(c) for c in clusters]
    clust_time = [0, 0]
    t = 0
    # per point: [other cluster, own cluster] entries of (cluster, time, objf with the point added / removed)
    info = []
    for p in range(n):
        mine = assign[p]
        other = 1 - mine
        distance = np.float32(clust_objf[other] - g.objf(clusters[other] + points[p]))
        info.append([[other, 0, np.float32(-(distance - clust_objf[other]))], [mine, 0, g.objf(clusters[mine] - points[p])]])
    own_index = [1] * n
    gain = np.float32(0.0)

    def update(p: int, idx: int) -> None:
        entry = info[p][idx]
        if entry[1] < clust_time[entry[0]]:
            c = clusters[entry[0]]
            entry[1], entry[2] = t, g.objf(c - points[p] if idx == own_index[p] else c + points[p])

    for _ in range(iters):
        start = t
        for p in range(n):
            me = own_index[p]
            update(p, me)
            own_objf, own_minus = clust_objf[info[p][me][0]], info[p][me][2]
            for idx in (0, 1):
                if idx == me:
                    continue
                update(p, idx)
                other, _, other_plus = info[p][idx]
                impr = np.float32(np.float32(np.float32(other_plus + own_minus) - clust_objf[other]) - own_objf)
                if impr > 0:
                    gain = np.float32(gain + impr)
                    t += 1
                    old = info[p][me][0]
                    own_index[p], assign[p] = idx, other
                    clusters[old] = clusters[old] - points[p]
                    clusters[other] = clusters[other] + points[p]
                    for c in (old, other):
                        clust_objf[c], clust_time[c] = g.objf(clusters[c]), t
                    break
        if t == start:
            break
    return gain


def _kmeans_two(points: np.ndarray, g: _Points, rand: CRand, tries: int = 10, iters: int = 20) -> tuple[np.float32, list[np.ndarray], list[int]]:
    """Kaldi's ClusterKMeans with k = 2: the best of `tries` pseudo-random starts, each refined."""
    n = len(points)
    best: tuple[np.float32, list[np.ndarray], list[int]] | None = None
    for attempt in range(tries):
        skip = 1
        if n > 1:
            skip = 1 + rand() % (n - 1)
            while math.gcd(skip, n) != 1:
                skip = 0 if skip == n - 1 else skip
                skip += 1
        clusters: list[np.ndarray | None] = [None, None]
        assign = [0] * n
        i = j = 0
        for _ in range(n):
            clusters[j] = points[i].copy() if clusters[j] is None else clusters[j] + points[i]
            assign[i] = j
            i, j = (i + skip) % n, (j + 1) % 2
        cl: list[np.ndarray] = [c for c in clusters if c is not None]
        ans = np.float32(_float_sum([g.objf(c) for c in cl]) - g.objf(cl[0] + cl[1] if len(cl) == 2 else cl[0]))
        for _ in range(iters):
            impr = _refine(points, cl, assign, g)
            ans = np.float32(ans + impr)
            if impr == 0:
                break
        if best is None or ans > best[0]:
            best = (ans, cl, assign)
    assert best is not None
    return best


@dataclass(eq=False)
class _Node:
    points: list[int]
    total: np.ndarray
    parent: "_Node | None" = None
    index: int = 0  # in the leaf list while a leaf, in the non-leaf list after a split
    is_leaf: bool = True
    best: np.float32 = np.float32(0.0)
    split: tuple[list[np.ndarray], list[int]] | None = None
    children: list["_Node"] = field(default_factory=list)


def _tree_cluster(points: np.ndarray, g: _Points) -> tuple[list[int], list[int], int]:
    """Kaldi's TreeCluster (branch factor 2, no threshold): (leaf of each point, parent of each cluster, leaves)."""
    rand = CRand(1)
    leaves: list[_Node] = []
    nonleaves: list[_Node] = []
    queue: list[tuple[float, int, _Node]] = []
    created = [0]

    def find_best_split(node: _Node) -> None:
        created[0] += 1
        if len(node.points) <= 1:
            return
        gain, clusters, assign = _kmeans_two(points[node.points], g, rand)
        node.best, node.split = gain, (clusters, assign)
        if gain > 0:
            heapq.heappush(queue, (-float(gain), -created[0], node))

    top = _Node(list(range(len(points))), np.cumsum(points, axis=0)[-1])
    leaves.append(top)
    find_best_split(top)
    while len(leaves) < len(points) and queue:
        node = heapq.heappop(queue)[2]
        clusters, assign = node.split  # type: ignore[misc]
        children = [_Node([], clusters[c], parent=node) for c in range(2)]
        children[0].index = node.index
        leaves[node.index] = children[0]
        children[1].index = len(leaves)
        leaves.append(children[1])
        for p, a in zip(node.points, assign):
            children[a].points.append(p)
        node.is_leaf, node.children, node.index = False, children, len(nonleaves)
        nonleaves.append(node)
        for child in children:
            find_best_split(child)
    n_leaves = len(leaves)
    total = n_leaves + len(nonleaves)

    def output_index(node: _Node) -> int:
        return node.index if node.is_leaf else total - 1 - node.index

    assignment = [0] * len(points)
    for leaf in leaves:
        for p in leaf.points:
            assignment[p] = leaf.index
    parents = [0] * total
    for node in leaves + nonleaves:
        parents[output_index(node)] = output_index(node.parent) if node.parent is not None else output_index(node)
    if len(leaves) == 1 and not nonleaves:
        parents[0] = 0
    return assignment, parents, n_leaves


def cluster_phones(stats: TreeStats, phone_sets: Sequence[Sequence[int]], pdf_classes: Sequence[int] = (1,),
                   central_position: int = 1) -> list[list[int]]:
    """Kaldi's `cluster-phones` (questions mode): phone questions from the statistics of the central phone's
    `pdf_classes` (default the middle state of 3-state HMMs), one set per line as questions.int."""
    sets = [sorted(int(p) for p in s) for s in phone_sets]
    if not sets or any(not s for s in sets):
        raise AsrBnError("cluster-phones: an empty phone set (check phones/sets.int)")
    flat = [p for s in sets for p in s]
    if len(flat) != len(set(flat)) or any(len(set(s)) != len(s) for s in sets):
        raise AsrBnError("cluster-phones: a phone appears twice in the phone sets (check phones/sets.int)")
    g = _Points(stats.dim, stats.var_floor)
    width = 1 + 2 * stats.dim
    per_phone = np.zeros((max(flat) + 1, width))
    wanted = set(int(c) for c in pdf_classes)
    rows = np.concatenate([stats.counts[:, None], stats.stats.reshape(len(stats.counts), -1)], axis=1)
    for event, row in zip(stats.events, rows):
        values = dict(event)
        phone = values.get(central_position)
        if values.get(PDF_CLASS) in wanted and phone is not None and phone < len(per_phone):
            per_phone[phone] += row
    points = np.stack([np.cumsum(per_phone[s], axis=0)[-1] for s in sets])
    assignment, parents, n_leaves = _tree_cluster(points, g)
    raw: list[list[int]] = [[] for _ in parents]
    for i, clust in enumerate(assignment):
        raw[clust] += sets[i]
    for j, parent in enumerate(parents):
        raw[j].sort()
        if parent < len(parents) - 1:
            raw[parent] += raw[j]
    out: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    for s in raw[::-1] + sets:
        if tuple(s) not in seen:
            seen.add(tuple(s))
            if s:
                out.append(list(s))
    return out
