"""Decision-tree building as Kaldi's `compile-questions` + `build-tree`: greedy likelihood splits, then clustering.

One root per line of `roots` (shared or not among pdf-classes, split or not); each root grows by the yes/no question
(phone sets per context position, pdf-class ranges) that most raises the likelihood of one diagonal Gaussian per
leaf, best leaf first across the whole tree, until `max_leaves` or no split gains more than `thresh`. Leaves under
one root whose merge costs less than `cluster_thresh` (default: the smallest split made) are merged bottom-up, and
the number of leaves is rounded down to a multiple of 8 the same way. The result maps a phone in context to a
pdf-id, as Kaldi's tree does, and ties are broken as Kaldi breaks them.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from asr_bn.alignments import Topology
from asr_bn.errors import AsrBnError
from asr_bn.io import read_lines
from asr_bn.gmm.event_map import MISSING, Constant, EventMap, Split, Table, map_events, relabel, renumber
from asr_bn.gmm.gauss import float_sum, objf
from asr_bn.gmm.tree_stats import PDF_CLASS, TreeStats


@dataclass(frozen=True)
class Root:
    """One line of Kaldi's roots file: phones that share a tree root, whether pdf-classes share it, whether it splits."""

    phones: tuple[int, ...]
    shared: bool = True
    split: bool = True


def read_roots(path: str | Path) -> list[Root]:
    """Kaldi's `phones/roots.int`: `shared|not-shared split|not-split phone…` per line."""
    roots = []
    for n, line in read_lines(path, "give the lang's phones/roots.int (utils/prepare_lang.sh or `asr-bn lang`)"):
        words = line.split()
        if len(words) < 3 or words[0] not in ("shared", "not-shared") or words[1] not in ("split", "not-split"):
            raise AsrBnError(f"{path} line {n}: expected 'shared|not-shared split|not-split <phone ids>', got {line!r}")
        try:
            phones = tuple(sorted(int(w) for w in words[2:]))
        except ValueError:
            raise AsrBnError(f"{path} line {n}: phones must be integer ids (use roots.int, not roots.txt)") from None
        roots.append(Root(phones, words[0] == "shared", words[1] == "split"))
    seen = [p for r in roots for p in r.phones]
    if len(seen) != len(set(seen)) or not roots:
        raise AsrBnError(f"{path}: every phone must be in exactly one root (a phone is repeated, or the file is empty)")
    return roots


def num_pdf_classes(topology: Topology) -> dict[int, int]:
    """Number of pdf-classes of each phone's HMM (Kaldi's HmmTopology::NumPdfClasses)."""
    out = {}
    for phone in topology.phones:
        states = topology.entry(phone)
        out[phone] = 1 + max(max(s.forward_pdf_class, s.self_loop_pdf_class) for s in states)
    return out


@dataclass
class Questions:
    """Candidate yes-sets per event key (Kaldi's Questions after `compile-questions`), keys asked in sorted order."""

    by_key: dict[int, list[tuple[int, ...]]] = field(default_factory=dict)

    @classmethod
    def compile(cls, phone_sets: Sequence[Sequence[int]], topology: Topology, context_width: int = 3) -> "Questions":
        """The phone questions at every context position and pdf-class questions `{0}, {0,1}, …` (compile-questions)."""
        phone_qs = sorted({tuple(sorted(set(int(p) for p in q))) for q in phone_sets if len(q)})
        asked = {p for q in phone_qs for p in q}
        if not asked <= set(topology.phones):
            raise AsrBnError(f"questions ask about phones {sorted(asked - set(topology.phones))} absent from the topology")
        most = max(num_pdf_classes(topology).values())
        pdf_qs = [tuple(range(i + 1)) for i in range(most - 1)]
        return cls({PDF_CLASS: pdf_qs, **{k: list(phone_qs) for k in range(context_width)}})


def read_phone_sets(path: str | Path, fix: str) -> list[list[int]]:
    """A file of phone sets, one per line of integer ids: the lang's `phones/sets.int`, or the questions
    `cluster-phones` writes (`questions.int`). `fix` says what to give when the file is missing."""
    lines = read_lines(path, fix)
    try:
        return [[int(w) for w in line.split()] for _, line in lines]
    except ValueError:
        raise AsrBnError(f"{path}: a phone set must be a line of integer phone ids (use the .int file, not .txt)") from None


# ---------------------------------------------------------------------------------------------------------------
# Statistics as arrays


class _Stats:
    """The tree statistics as arrays: per event its value of each key, counts and sums side by side, and every
    question of every key as one row of a (question × key-value) matrix, so that a node finds its best split over
    all keys and questions with a few matrix products."""

    def __init__(self, stats: TreeStats, questions: Questions | None = None) -> None:
        questions = questions or Questions()
        self.var_floor, self.dim = stats.var_floor, stats.dim
        self.columns = stats.columns(questions.by_key)
        self.data = np.concatenate([stats.counts[:, None], stats.stats.reshape(len(stats.counts), -1)], axis=1)
        self.qkeys = sorted(questions.by_key)
        widths = [1 + max(int(self.columns[k].max()), max((v for q in questions.by_key[k] for v in q), default=0))
                  for k in self.qkeys]
        offsets = np.concatenate([[0], np.cumsum(widths)]).astype(np.int64)
        self.width = int(offsets[-1])
        self.codes = np.stack([np.where(self.columns[k] == MISSING, -1, self.columns[k] + o)
                               for k, o in zip(self.qkeys, offsets)] or [np.zeros(len(self.data), np.int64)], axis=1)
        self.question_set = [q for k in self.qkeys for q in questions.by_key[k]]
        self.question_key = np.array([i for i, k in enumerate(self.qkeys) for _ in questions.by_key[k]], np.int64)
        self.key_of_value = np.repeat(np.arange(len(self.qkeys)), widths)
        self.member = np.zeros((len(self.question_set), self.width))  # question × (key, value): 1 if value in yes-set
        for i, q in enumerate(self.question_set):
            self.member[i, offsets[self.question_key[i]] + np.array(q, dtype=np.int64)] = 1.0

    def objf(self, data: np.ndarray) -> np.ndarray:
        """Objective of each row of (count, Σx, Σx²) data."""
        return objf(data[..., 0], data[..., 1:].reshape(data.shape[:-1] + (2, self.dim)), self.var_floor)

    def best_split(self, idx: np.ndarray) -> tuple[np.float32, int]:
        """The split of events `idx` with the largest gain: (gain, question index); (0, -1) when none gains.

        As Kaldi's FindBestSplit (questions not refined): keys in increasing order, a key only if every event has
        it, questions in order, the first of equal gains; a question that leaves one side empty gains nothing."""
        if len(idx) <= 1:
            return np.float32(0.0), -1
        codes = self.codes[idx]
        valid = (codes >= 0).all(axis=0)
        if not valid.any():
            return np.float32(0.0), -1
        cols = codes[:, valid]
        data = self.data[idx]
        width = data.shape[1]
        flat = (cols.T.reshape(-1, 1) * width + np.arange(width)).ravel()
        per_value = np.bincount(flat, np.tile(data, (cols.shape[1], 1)).ravel(), self.width * width).reshape(self.width, width)
        present = np.flatnonzero(np.bincount(cols.ravel(), minlength=self.width))
        n_present = np.bincount(self.key_of_value[present], minlength=len(self.qkeys))
        member = self.member[:, present]
        yes_present = member.sum(1)
        ok = valid[self.question_key] & (yes_present > 0) & (yes_present < n_present[self.question_key])
        if not ok.any():
            return np.float32(0.0), -1
        total = data.sum(0)
        yes = member[ok] @ per_value[present]
        both = self.objf(np.concatenate([total[None], yes, total[None] - yes]))
        gains = np.zeros(len(ok), np.float32)
        gains[ok] = (both[1 + len(yes):] + both[1 : 1 + len(yes)]) - both[0]
        best = int(np.argmax(gains))
        if not gains[best] > 0:
            return np.float32(0.0), -1
        return gains[best], best

    def answers(self, question: int, idx: np.ndarray) -> np.ndarray:
        """Whether each event of `idx` (all of which have the question's key) is in the question's yes-set."""
        return self.member[question, self.codes[idx, self.question_key[question]]] > 0


class _Splitter:
    """One node of a growing tree (Kaldi's DecisionTreeSplitter): a leaf with its best split, or a split node."""

    def __init__(self, leaf: int, idx: np.ndarray, st: _Stats) -> None:
        self.leaf, self.idx, self.st = leaf, idx, st
        self.yes: _Splitter | None = None
        self.no: _Splitter | None = None
        self.best, self.question = st.best_split(idx)

    def split(self, next_leaf: list[int]) -> None:
        """Split this leaf by its best question, or the better of its children (DoSplit)."""
        if self.yes is None:
            yes = self.st.answers(self.question, self.idx)
            no_leaf = next_leaf[0]
            next_leaf[0] += 1
            self.yes = _Splitter(self.leaf, self.idx[yes], self.st)
            self.no = _Splitter(no_leaf, self.idx[~yes], self.st)
            self.leaf, self.idx = -1, self.idx[:0]
        else:
            (self.yes if self.yes.best >= self.no.best else self.no).split(next_leaf)  # type: ignore[union-attr]
        self.best = max(self.yes.best, self.no.best)  # type: ignore[union-attr]

    def event_map(self) -> EventMap:
        if self.yes is None:
            return Constant(self.leaf)
        key, yes_set = self.st.qkeys[self.st.question_key[self.question]], self.st.question_set[self.question]
        return Split(key, yes_set, self.yes.event_map(), self.no.event_map())  # type: ignore[union-attr]


def stub_map(roots: Sequence[Root], pdf_classes: dict[int, int], central_position: int, counter: list[int]) -> EventMap:
    """The tree before any split (Kaldi's GetStubMap): a table or binary split on the central phone down to each
    root, then one leaf per root (shared) or per pdf-class (not shared). `counter` numbers the leaves."""
    if len(roots) == 1:
        root = roots[0]
        if root.shared:
            counter[0] += 1
            return Constant(counter[0] - 1)
        length = max(pdf_classes[p] for p in root.phones)
        children = []
        for _ in range(length):
            children.append(Constant(counter[0]))
            counter[0] += 1
        return Table(PDF_CLASS, tuple(children))
    highest = max(p for r in roots for p in r.phones)
    if all(len(r.phones) == 1 for r in roots) and len(roots) <= 2 * highest:
        table: list[EventMap | None] = [None] * (highest + 1)
        for r in roots:
            table[r.phones[0]] = stub_map([r], pdf_classes, central_position, counter)
        return Table(central_position, tuple(table))
    half = len(roots) // 2
    first = stub_map(roots[:half], pdf_classes, central_position, counter)
    second = stub_map(roots[half:], pdf_classes, central_position, counter)
    return Split(central_position, tuple(sorted(p for r in roots[:half] for p in r.phones)), first, second)


# ---------------------------------------------------------------------------------------------------------------
# Bottom-up clustering of leaves (Kaldi's BottomUpClusterer and its compartmentalized form)


_PAIRS_AT_ONCE = 8192  # merge costs computed together: few numpy calls, bounded memory for large compartments


def _cluster_bottom_up(compartments: list[np.ndarray], st: _Stats, thresh: float, min_clusters: int) -> list[list[int]]:
    """Merge points (rows of count, Σx, Σx²) within each compartment, cheapest merge first, while the cost is below
    `thresh` and more than `min_clusters` clusters remain (Kaldi's ClusterBottomUp and its compartmentalized form;
    equal costs are taken in order of compartment and point indices). Returns each point's cluster, numbered per
    compartment in the order of the surviving points."""
    points = [c.copy() for c in compartments]
    objfs = [st.objf(p) for p in points]
    alive = [np.ones(len(p), bool) for p in points]
    parent = [list(range(len(p))) for p in points]
    cost = [np.zeros((len(p), len(p)), np.float32) for p in points]  # cost[c][i, j] for j < i
    limit = np.float32(thresh)

    def costs(c: int, i: int | np.ndarray, others: np.ndarray) -> np.ndarray:
        """Merge costs of point(s) i with each of `others` (Kaldi's Distance, in float), stored as cost[c][max, min]."""
        merged = st.objf(points[c][i] + points[c][others])
        d = np.maximum((objfs[c][i] + objfs[c][others]) - merged, np.float32(0.0))
        cost[c][np.maximum(i, others), np.minimum(i, others)] = d
        return d

    queue = []
    for c in range(len(points)):
        first, second = np.tril_indices(len(points[c]), -1)  # every pair (i, j), j < i
        for at in range(0, len(first), _PAIRS_AT_ONCE):
            i, j = first[at : at + _PAIRS_AT_ONCE], second[at : at + _PAIRS_AT_ONCE]
            d = costs(c, i, j)
            queue += [(d[n], c, int(i[n]), int(j[n])) for n in np.flatnonzero(d <= limit)]
    heapq.heapify(queue)
    n_clusters = sum(len(p) for p in points)
    while n_clusters > min_clusters and queue:
        d, c, i, j = heapq.heappop(queue)
        if not (alive[c][i] and alive[c][j]) or abs(cost[c][i, j] - d) > 1e-5 * abs(d):
            continue  # a stale entry: one side was merged, or the pair's cost changed since
        points[c][i] += points[c][j]
        objfs[c][i] = st.objf(points[c][i])
        alive[c][j], parent[c][j] = False, i
        n_clusters -= 1
        others = np.flatnonzero(alive[c])
        others = others[others != i]
        for k, dk in zip(others, costs(c, i, others)):
            if dk < limit:
                heapq.heappush(queue, (dk, c, max(i, int(k)), min(i, int(k))))
    out = []
    for c in range(len(points)):
        number = {int(p): n for n, p in enumerate(np.flatnonzero(alive[c]))}
        out.append([number[_root(parent[c], p)] for p in range(len(points[c]))])
    return out


def _root(parent: list[int], p: int) -> int:
    while parent[p] != p:
        p = parent[p]
    return p


def _leaf_points(event_leaf: np.ndarray, st: _Stats, idx: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The leaves (`event_leaf`: each event's, from map_events) that the events `idx` reach, sorted, and their
    summed (count, Σx, Σx²) rows."""
    leaf = event_leaf[idx]
    if (leaf < 0).any():
        raise AsrBnError("tree statistics with a context the tree cannot answer (context width or ci-phones differ)")
    ids, inverse = np.unique(leaf, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return ids.tolist(), np.add.reduceat(st.data[idx][order], np.searchsorted(inverse[order], np.arange(len(ids))), axis=0)


def _cluster_within(tree: EventMap, stub: EventMap, st: _Stats, thresh: float, min_total: int | None) -> tuple[EventMap, int]:
    """Merge leaves of `tree` under each leaf of `stub`: below `thresh` (ClusterEventMapRestrictedByMap) or, with
    `min_total`, down to that many leaves in all (ClusterEventMapToNClustersRestrictedByMap). Returns the tree and
    the number of leaves removed."""
    stub_leaf = map_events(stub, st.columns)
    groups = [np.flatnonzero(stub_leaf == s) for s in range(stub_leaf.max() + 1)]
    if min_total is not None:
        required = min_total - sum(1 for g in groups if len(g) == 0)
        if min_total < len(groups):
            return tree, 0
    groups = [g for g in groups if len(g)]
    event_leaf = map_events(tree, st.columns)
    points = [_leaf_points(event_leaf, st, g) for g in groups]
    if min_total is not None and required > sum(len(ids) for ids, _ in points):
        return tree, 0
    compartments = [rows for _, rows in points]
    if min_total is None:
        assignments = [_cluster_bottom_up([comp], st, thresh, 0)[0] for comp in compartments]
    else:
        assignments = _cluster_bottom_up(compartments, st, np.inf, required)
    mapping = {}
    removed = 0
    for (ids, _), assign in zip(points, assignments):
        mapping.update({leaf: ids[a] for leaf, a in zip(ids, assign)})
        removed += len(ids) - (max(assign) + 1)
    return relabel(tree, mapping), removed  # type: ignore[return-value]


@dataclass
class TreeInfo:
    """What tree building did: leaves after splitting, removed by clustering and by rounding, and the objectives."""

    num_leaves: int
    split_leaves: int
    clustered_away: int
    rounded_away: int
    split_gain: float
    objf: float
    frames: float


def objf_given_map(tree: EventMap, stats: TreeStats) -> float:
    """Total log-likelihood of `stats` with one Gaussian per leaf of `tree` (Kaldi's ObjfGivenMap)."""
    return _objf_given_map(tree, _Stats(stats))


def _objf_given_map(tree: EventMap, st: _Stats) -> float:
    _, rows = _leaf_points(map_events(tree, st.columns), st, np.arange(len(st.data)))
    return float(float_sum(st.objf(rows)))


def build_tree(
    stats: TreeStats,
    roots: Sequence[Root],
    questions: Questions,
    topology: Topology,
    max_leaves: int = 0,
    thresh: float = 300.0,
    cluster_thresh: float = -1.0,
    central_position: int = 1,
    round_num_leaves: bool = True,
) -> tuple[EventMap, TreeInfo]:
    """Kaldi's `build-tree`: the decision tree of `stats` (leaves numbered 0..n-1 = pdf-ids) and what it did.

    `cluster_thresh` -1 merges leaves whose merge costs less than the smallest split made; 0 does not cluster.
    """
    if thresh <= 0 and max_leaves <= 0:
        raise AsrBnError("tree building needs a positive --thresh or --max-leaves")
    if not len(stats.counts):
        raise AsrBnError("no tree statistics to build a tree from")
    pdf_classes = num_pdf_classes(topology)
    missing = sorted({p for r in roots for p in r.phones} - set(pdf_classes))
    if missing:
        raise AsrBnError(f"roots name phones {missing} that the topology has no HMM for")
    st = _Stats(stats, questions)
    central = st.columns[central_position]
    rooted = {p for r in roots for p in r.phones}
    unrooted = sorted(set(central[central != MISSING].tolist()) - rooted)
    if unrooted:
        raise AsrBnError(f"phones {unrooted} appear in the statistics but not in the roots file (add them to roots)")
    counter = [0]
    stub = stub_map(list(roots), pdf_classes, central_position, counter)
    nonsplit = [p for r in roots if not r.split for p in r.phones]
    split_idx = np.flatnonzero(~np.isin(central, nonsplit))
    stub_leaf = map_events(stub, {k: v[split_idx] for k, v in st.columns.items()})
    builders = [
        _Splitter(leaf, split_idx[stub_leaf == leaf], st) for leaf in range(int(stub_leaf.max()) + 1)
    ]
    queue = [(-b.best, -i) for i, b in enumerate(builders)]
    heapq.heapify(queue)
    gain, smallest = np.float32(0.0), np.float32(1e20)
    while -queue[0][0] > np.float32(thresh) and (max_leaves <= 0 or counter[0] < max_leaves):
        best, i = -queue[0][0], -queue[0][1]
        smallest = min(smallest, best)
        gain = np.float32(gain + best)
        builders[i].split(counter)
        heapq.heapreplace(queue, (-builders[i].best, -i))
    split_leaves = counter[0]
    grown = _grafted(stub, builders)
    if cluster_thresh < 0:
        cluster_thresh = float(smallest)
    tree, clustered, rounded = grown, 0, 0
    if cluster_thresh != 0:
        tree, clustered = _cluster_within(grown, stub, st, cluster_thresh, None)
    if round_num_leaves:
        tree, rounded = _cluster_within(tree, stub, st, np.inf, ((split_leaves - clustered) // 8) * 8)
    tree, n = renumber(tree)
    info = TreeInfo(n, split_leaves, clustered, rounded, float(gain), _objf_given_map(tree, st), float(stats.counts.sum()))
    return tree, info


def _grafted(stub: EventMap, builders: Sequence[_Splitter]) -> EventMap:
    """`stub` with each leaf replaced by the subtree grown from it."""

    def graft(node: EventMap | None) -> EventMap | None:
        if node is None:
            return None
        if isinstance(node, Constant):
            return builders[node.leaf].event_map() if node.leaf < len(builders) else node
        if isinstance(node, Table):
            return Table(node.key, tuple(graft(c) for c in node.children))
        return Split(node.key, node.yes_set, graft(node.yes), graft(node.no))  # type: ignore[arg-type]

    return graft(stub)  # type: ignore[return-value]
