"""Kaldi's EventMap (the decision tree from phone context to pdf-id) and its `tree` file (ContextDependency).

Three kinds of node, as in Kaldi's src/tree/event-map.h: a constant (a leaf, the pdf-id), a table indexed by the
value of one key (a child per value, or none), and a yes/no question on one key (is its value in a set?). Keys are
context positions 0..N-1 (the phone there) and -1 (the pdf-class, Kaldi's kPdfClass).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from asr_bn.errors import AsrBnError
from asr_bn.io import atomic_open
from asr_bn.kaldi_binary import KaldiReader, KaldiWriter, kaldi_object

MISSING = -(2**31)  # the value of a key an event does not have


@dataclass(frozen=True)
class Constant:
    """A leaf: every event that reaches it maps to `leaf`."""

    leaf: int


@dataclass(frozen=True)
class Table:
    """A child per value of `key` (index = value); None where that value has no child."""

    key: int
    children: tuple["EventMap | None", ...]


@dataclass(frozen=True)
class Split:
    """Events whose `key` has a value in `yes_set` go to `yes`, the others to `no`."""

    key: int
    yes_set: tuple[int, ...]
    yes: "EventMap"
    no: "EventMap"


EventMap = Union[Constant, Table, Split]


def leaves(m: EventMap | None) -> list[int]:
    """Every leaf reachable in `m`, in tree order (Kaldi's MultiMap of the empty event)."""
    if m is None:
        return []
    if isinstance(m, Constant):
        return [m.leaf]
    if isinstance(m, Table):
        return [leaf for child in m.children for leaf in leaves(child)]
    return leaves(m.yes) + leaves(m.no)


def relabel(m: EventMap | None, mapping: Mapping[int, int]) -> EventMap | None:
    """`m` with each leaf in `mapping` replaced by its image (Kaldi's EventMap::Copy with new leaves)."""
    if m is None:
        return None
    if isinstance(m, Constant):
        return Constant(mapping.get(m.leaf, m.leaf))
    if isinstance(m, Table):
        return Table(m.key, tuple(relabel(c, mapping) for c in m.children))
    return Split(m.key, m.yes_set, relabel(m.yes, mapping), relabel(m.no, mapping))  # type: ignore[arg-type]


def renumber(m: EventMap) -> tuple[EventMap, int]:
    """`m` with its leaves renumbered 0..n-1 in increasing order of their old numbers, and n (RenumberEventMap)."""
    old = sorted(set(leaves(m)))
    return relabel(m, {leaf: i for i, leaf in enumerate(old)}), len(old)  # type: ignore[return-value]


def in_set(values: np.ndarray, members: tuple[int, ...]) -> np.ndarray:
    """Whether each of `values` (event values: small ints, phones or pdf-classes) is in `members`, by a lookup
    table: np.isin's answer at a fraction of its cost on the small arrays of tree building."""
    if min(members, default=0) < 0:
        return np.isin(values, members)
    table = np.zeros(max(int(values.max(initial=0)), *members, 0) + 1, bool)
    table[list(members)] = True
    inside = values >= 0
    return table[np.where(inside, values, 0)] & inside


def map_events(m: EventMap, columns: Mapping[int, np.ndarray]) -> np.ndarray:
    """The leaf of every event, given the value of each key per event (`MISSING` where absent); -1 where the tree
    cannot answer (a key it asks is missing, or a table has no child for the value)."""
    n = len(next(iter(columns.values())))
    out = np.full(n, -1, dtype=np.int64)

    def walk(node: EventMap | None, idx: np.ndarray) -> None:
        if node is None or len(idx) == 0:
            return
        if isinstance(node, Constant):
            out[idx] = node.leaf
            return
        values = columns[node.key][idx] if node.key in columns else np.full(len(idx), MISSING)
        known = values != MISSING
        if isinstance(node, Table):
            for value in sorted(set(values[known].tolist())):  # (np.unique would import numpy.ma: 10 ms)
                if 0 <= value < len(node.children):
                    walk(node.children[value], idx[known & (values == value)])
            return
        yes = known & in_set(values, node.yes_set)
        walk(node.yes, idx[yes])
        walk(node.no, idx[known & ~yes])

    walk(m, np.arange(n))
    return out


class EventMapper:
    """`m` as a function of one event (key → value), memoised: for callers that ask about few distinct contexts
    many times (alignment conversion); -1 where the tree cannot answer."""

    def __init__(self, m: EventMap) -> None:
        self._root = m
        self._sets: dict[int, frozenset[int]] = {}
        self._memo: dict[tuple[tuple[int, int], ...], int] = {}

    def __call__(self, event: tuple[tuple[int, int], ...]) -> int:
        leaf = self._memo.get(event)
        if leaf is None:
            values, node = dict(event), self._root
            while node is not None and not isinstance(node, Constant):
                value = values.get(node.key)
                if value is None:
                    node = None
                elif isinstance(node, Table):
                    node = node.children[value] if 0 <= value < len(node.children) else None
                else:
                    yes = self._sets.setdefault(id(node), frozenset(node.yes_set))
                    node = node.yes if value in yes else node.no
            leaf = self._memo[event] = node.leaf if node is not None else -1
        return leaf


# ---------------------------------------------------------------------------------------------------------------
# The `tree` file: ContextDependency N P ToPdf <event map> EndContextDependency (context-dep.cc, event-map.cc)


def _write_map(w: KaldiWriter, m: EventMap | None) -> None:
    if m is None:
        w.token("NULL")
    elif isinstance(m, Constant):
        w.token("CE")
        w.int32(m.leaf)
    elif isinstance(m, Table):
        w.token("TE")
        w.int32(m.key)
        w.parts.append(b"\xfc" + len(m.children).to_bytes(4, "little") if w.binary else f"{len(m.children)} ".encode())
        w.token("(")
        for child in m.children:
            _write_map(w, child)
        w.token(")")
        w.newline()
    else:
        w.token("SE")
        w.int32(m.key)
        w.int_vector(m.yes_set)
        w.token("{")
        _write_map(w, m.yes)
        _write_map(w, m.no)
        w.token("}")
        w.newline()


def write_tree(path: str | Path, m: EventMap, context_width: int = 3, central_position: int = 1, binary: bool = True) -> None:
    """Write `m` as a Kaldi `tree` file (ContextDependency), which tree-info, copy-tree and mkgraph read."""
    w = KaldiWriter(binary)
    w.token("ContextDependency")
    w.int32(context_width)
    w.int32(central_position)
    w.token("ToPdf")
    _write_map(w, m)
    w.token("EndContextDependency")
    with atomic_open(path, "wb", encoding=None) as f:
        f.write((b"\0B" if binary else b"") + b"".join(w.parts))


def _read_map(r: KaldiReader) -> EventMap | None:
    at = r.offset
    kind = r.word()
    if kind == b"NULL":
        return None
    if kind == b"CE":
        return Constant(r.int32())
    if kind == b"TE":
        key = r.int32()
        if r.binary:
            if r.take(1)[0] != 0xFC:
                raise r.fail("expected the unsigned size of a table")
            size = int.from_bytes(r.take(4), "little")
        else:
            size = r.count("table size")
        r.expect("(")
        children = tuple(_read_map(r) for _ in range(size))
        r.expect(")")
        return Table(key, children)
    if kind == b"SE":
        key = r.int32()
        yes_set = tuple(r.int_vector())
        r.expect("{")
        yes, no = _read_map(r), _read_map(r)
        r.expect("}")
        if yes is None or no is None:
            raise r.fail("a question without both answers")
        return Split(key, yes_set, yes, no)
    raise r.fail(f"expected an event map (CE, TE, SE or NULL), found {kind[:12]!r}", at=at)


def read_tree_map(path: str | Path) -> tuple[EventMap, int, int]:
    """Read a Kaldi `tree` file (binary or text): its event map, context width and central position."""
    hint = "is it a tree written by Kaldi's build-tree or asr-bn?"
    with kaldi_object(Path(path), "the decision tree", "give the tree file of the exp dir", hint) as r:
        r.expect("ContextDependency")
        width, central = r.int32(), r.int32()
        r.expect("ToPdf")
        m = _read_map(r)
        r.expect("EndContextDependency")
    if m is None:
        raise AsrBnError(f"{path}: the decision tree is empty ({hint})")
    return m, width, central
