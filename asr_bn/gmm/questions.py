"""Phone questions for tree building, obtained as Kaldi's `cluster-phones` obtains them.

The phone sets (lang's `phones/sets.int`) are clustered top-down: each cluster is split in two by k-means (ten
pseudo-random starts, each refined by moving single sets while the likelihood rises), best split first, until every
set stands alone. Every cluster of that tree is a question ("is the phone in this cluster?"). Kaldi draws its
k-means starts from the C library's `rand()` seeded with 1; `asr_bn.gmm.crand.CRand` reproduces that sequence, so
the questions are Kaldi's own.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from asr_bn.errors import AsrBnError
from asr_bn.gmm.crand import CRand
from asr_bn.gmm.gauss import float_sum, objf
from asr_bn.gmm.tree_stats import PDF_CLASS, TreeStats


class _Points:
    """Gaussian statistics as rows (count, Σx, Σx²) and their float objectives."""

    def __init__(self, dim: int, var_floor: float) -> None:
        self.dim, self.var_floor = dim, var_floor

    def objf(self, rows: np.ndarray) -> np.ndarray:
        return objf(rows[..., 0], rows[..., 1:].reshape(rows.shape[:-1] + (2, self.dim)), self.var_floor)


def _refine(points: np.ndarray, clusters: np.ndarray, assign: np.ndarray, g: _Points, iters: int = 100) -> np.float32:
    """Kaldi's RefineClusters for two clusters: visit the points in order, moving each to the other cluster when
    that raises the objective, until a pass moves none. Updates `clusters` and `assign`; returns the gain.

    Every point's gain from moving is kept for the current clusters and rescored after a move that changes them.
    Until the first move the objective of the other cluster plus a point is Kaldi's cached value, rebuilt from a
    float difference as RefineClusterer stores it. Moving an empty point (a phone without data) changes no cluster
    but can gain by float rounding both ways, so such points swing at every pass, as they do in Kaldi."""
    empty = ~points.any(axis=1)
    clust_objf = g.objf(clusters)
    moved = False

    def score() -> np.ndarray:
        own, other = assign, 1 - assign
        plus = g.objf(clusters[other] + points)
        if not moved:
            plus = -((clust_objf[other] - plus) - clust_objf[other])
        return ((plus + g.objf(clusters[own] - points)) - clust_objf[other]) - clust_objf[own]

    impr, gain = score(), np.float32(0.0)
    for _ in range(iters):
        changed, p = False, 0
        while p < len(points):
            better = np.flatnonzero(impr[p:] > 0)
            if not len(better):
                break
            p += int(better[0])
            gain = np.float32(gain + impr[p])
            old, new = assign[p], 1 - assign[p]
            clusters[old] -= points[p]
            clusters[new] += points[p]
            assign[p] = new
            if empty[p] and moved:
                impr[p] = ((clust_objf[old] + clust_objf[new]) - clust_objf[old]) - clust_objf[new]
            else:
                moved = True
                clust_objf = g.objf(clusters)
                impr = score()
            changed = True
            p += 1
        if not changed:
            break
    return gain


def _kmeans_two(points: np.ndarray, g: _Points, rand: CRand, tries: int = 10, iters: int = 20) -> tuple[np.float32, np.ndarray, np.ndarray]:
    """Kaldi's ClusterKMeans with k = 2: the best of `tries` pseudo-random starts, each refined.
    Returns (gain over one cluster, the two clusters' rows, each point's cluster)."""
    n = len(points)
    best: tuple[np.float32, np.ndarray, np.ndarray] | None = None
    for _ in range(tries):
        skip = 1
        if n > 1:
            skip = 1 + rand() % (n - 1)
            while math.gcd(skip, n) != 1:
                skip = 0 if skip == n - 1 else skip
                skip += 1
        order = (np.arange(n) * skip) % n  # the i-th point visited goes to cluster i mod 2
        assign = np.zeros(n, dtype=np.int64)
        assign[order] = np.arange(n) % 2
        clusters = np.stack([np.cumsum(points[order[c::2]], axis=0)[-1] for c in range(2)])
        objfs = g.objf(clusters)
        ans = np.float32(float_sum(objfs) - g.objf(clusters[0] + clusters[1]))
        for _ in range(iters):
            impr = _refine(points, clusters, assign, g)
            ans = np.float32(ans + impr)
            if impr == 0:
                break
        if best is None or ans > best[0]:
            best = (ans, clusters, assign)
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
    split: tuple[np.ndarray, np.ndarray] | None = None
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
