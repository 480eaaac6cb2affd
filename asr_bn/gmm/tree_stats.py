"""Statistics for decision-tree building, as Kaldi's `acc-tree-stats` gathers them, in Kaldi's treeacc format.

For every frame of an aligned utterance the event is (pdf-class, left phone, central phone, right phone) (context
width 3, central position 1 by default; phone 0 outside the utterance); a context-independent central phone (e.g.
silence) keeps only itself and the pdf-class. Each event owns the count, Σx and Σx² of its frames: one diagonal
Gaussian's sufficient statistics, which is all tree building needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from asr_bn.alignments import TransitionModel, _kaldi_object, _KaldiReader
from asr_bn.errors import AsrBnError
from asr_bn.gmm.event_map import MISSING
from asr_bn.io import atomic_open, read_matrix, read_table
from asr_bn.report import Report

_CHUNK_FRAMES = 100_000  # frames summed at once: large enough to amortise numpy calls, small enough for memory
PDF_CLASS = -1  # Kaldi's kPdfClass: the event key of the HMM position
Event = tuple[tuple[int, int], ...]  # sorted (key, value) pairs, as Kaldi's EventType


@dataclass
class TreeStats:
    """Per-event Gaussian statistics: `events[i]` owns `counts[i]` frames with sums `stats[i] = (Σx, Σx²)`."""

    events: list[Event]
    counts: np.ndarray  # (n,) float64
    stats: np.ndarray  # (n, 2, dim) float64
    var_floor: float = float(np.float32(0.01))  # Kaldi: a float 0.01 held in a double

    @property
    def dim(self) -> int:
        return int(self.stats.shape[-1])

    def columns(self, keys: Iterable[int] = ()) -> dict[int, np.ndarray]:
        """The value of each key (those of the events and `keys`) in every event, `MISSING` where it has none: the
        form `event_map.map_events` reads."""
        wanted = sorted({k for e in self.events for k, _ in e} | set(keys))
        return {k: np.array([dict(e).get(k, MISSING) for e in self.events], np.int64) for k in wanted}


def pdf_classes(tm: TransitionModel) -> np.ndarray:
    """The pdf-class of every transition-id (index 0 unused), as Kaldi's TransitionIdToPdfClass."""
    out = np.full(tm.num_transition_ids + 1, -1, dtype=np.int64)
    for tid in range(1, tm.num_transition_ids + 1):
        state = tm.topology.entry(int(tm.tid_phone[tid]))[int(tm.tid_hmm_state[tid])]
        out[tid] = state.self_loop_pdf_class if tm.tid_is_self_loop[tid] else state.forward_pdf_class
    return out


def accumulate_tree_stats(
    tm: TransitionModel,
    feats: Iterable[tuple[str, np.ndarray]],
    alignments: Mapping[str, Sequence[int] | np.ndarray],
    ci_phones: Sequence[int] = (),
    context_width: int = 3,
    central_position: int = 1,
    var_floor: float = float(np.float32(0.01)),
    report: Report | None = None,
) -> TreeStats:
    """Kaldi's `acc-tree-stats`: statistics of every (context, pdf-class) event over aligned utterances.

    `feats` yields (utterance, frames × dim) matrices (streamed: one utterance in memory at a time);
    utterances without an alignment or whose alignment length differs from their frame count are skipped and named
    in `report`.
    """
    if not 0 <= central_position < context_width:
        raise AsrBnError(f"central position {central_position} is outside a context of width {context_width}")
    tid_pdf_class = pdf_classes(tm)
    is_ci = np.zeros(max(tm.phones) + 1, dtype=bool)
    is_ci[[p for p in ci_phones if 0 <= p < len(is_ci)]] = True
    base = len(is_ci) + 1  # event codes: pdf-class, then each context phone + 1 (0: the key is absent)
    codes: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    sums: list[np.ndarray] = []
    pending: list[tuple[np.ndarray, np.ndarray]] = []  # frames not yet summed, in chunks of about _CHUNK_FRAMES
    pending_frames, dim = 0, None
    for utt, mat in feats:
        if utt not in alignments:
            if report is not None:
                report.skip(utt, "no alignment")
            continue
        tids = np.asarray(alignments[utt], dtype=np.int64)
        if len(tids) != len(mat):
            if report is not None:
                report.skip(utt, "alignment length differs from the frame count")
            continue
        if dim is None:
            dim = mat.shape[1]
        elif mat.shape[1] != dim:
            raise AsrBnError(f"utterance {utt}: features of dimension {mat.shape[1]}, others have {dim}")
        segments = np.array(tm.phone_segments(tids, where=f"alignment of {utt}"), dtype=np.int64).reshape(-1, 3)
        padded = np.concatenate([np.zeros(central_position, np.int64), segments[:, 0],
                                 np.zeros(context_width - 1 - central_position, np.int64)])
        seg_of_frame = np.repeat(np.arange(len(segments)), segments[:, 2] - segments[:, 1])
        ci = is_ci[segments[:, 0]]
        code = tid_pdf_class[tids]
        for j in range(context_width):
            phone = padded[j : j + len(segments)] + 1
            phone = phone if j == central_position else np.where(ci, 0, phone)
            code = code * base + phone[seg_of_frame]
        pending.append((code, np.asarray(mat, np.float64)))
        pending_frames += len(code)
        if pending_frames >= _CHUNK_FRAMES:
            _flush(pending, codes, counts, sums)
            pending_frames = 0
        if report is not None:
            report.counts["utterances"] = report.counts.get("utterances", 0) + 1
    if dim is None:
        raise AsrBnError("no aligned utterance to gather tree statistics from (do features and alignments match?)")
    _flush(pending, codes, counts, sums)
    ids, inverse = np.unique(np.concatenate(codes), return_inverse=True)
    total_counts = np.bincount(inverse, weights=np.concatenate(counts), minlength=len(ids))
    all_sums = np.concatenate(sums)
    total = sum_by_group(inverse, all_sums.reshape(len(all_sums), -1), len(ids), squares=False).reshape(-1, 2, dim)
    events = [_decode(int(c), base, context_width) for c in ids]
    order = sorted(range(len(events)), key=events.__getitem__)
    return TreeStats([events[i] for i in order], total_counts[order], total[order], float(var_floor))


def _flush(pending: list[tuple[np.ndarray, np.ndarray]], codes: list, counts: list, sums: list) -> None:
    """Sum the pending frames per event code into (codes, counts, sums) and empty `pending`."""
    if not pending:
        return
    code = np.concatenate([c for c, _ in pending])
    ids, inverse = np.unique(code, return_inverse=True)
    codes.append(ids)
    counts.append(np.bincount(inverse, minlength=len(ids)).astype(np.float64))
    sums.append(sum_by_group(inverse, np.concatenate([m for _, m in pending]), len(ids)))
    pending.clear()


def sum_by_group(group: np.ndarray, rows: np.ndarray, n: int, squares: bool = True) -> np.ndarray:
    """Per group: the sum of `rows` (and, with `squares`, of their squares, as (n, 2, dim))."""
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(n))
    ordered = rows[order]
    if not squares:
        return np.add.reduceat(ordered, starts, axis=0)
    return np.stack([np.add.reduceat(ordered, starts, axis=0), np.add.reduceat(ordered * ordered, starts, axis=0)], 1)


def _decode(code: int, base: int, context_width: int) -> Event:
    """The event (sorted key/value pairs) of an event code made by `accumulate_tree_stats`."""
    pairs = []
    for j in reversed(range(context_width)):
        code, phone = divmod(code, base)
        if phone:
            pairs.append((j, phone - 1))
    return tuple([(PDF_CLASS, code)] + pairs[::-1])


def read_features(source: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """The GMM features of an `asr-bn prep` dir (cepstra, speaker CMVN, Δ+ΔΔ: `prepared_gmm_features`), or the
    matrices of a Kaldi .scp of ready features (e.g. Kaldi's add-deltas output), one utterance at a time."""
    source = Path(source)
    if source.is_dir():
        from asr_bn.hmm_gmm import prepared_gmm_features

        yield from prepared_gmm_features(source)[0].items()
        return
    if source.suffix != ".scp" or not source.is_file():
        raise AsrBnError(f"{source}: give an `asr-bn prep` output dir or a Kaldi .scp of features")
    for utt, row in read_table(source, "give a Kaldi .scp of features: `utterance location`").items():
        yield utt, read_matrix(row.rest, source, utt)


# ---------------------------------------------------------------------------------------------------------------
# Kaldi's treeacc format: BTS <n> then per event `EV <size> key value …`, a present flag and a GaussClusterable
# (`GCL <count> <var_floor> <2 x dim double matrix>`); binary or text (build-tree-utils.cc, clusterable-classes.cc)


class _StatsReader(_KaldiReader):
    def uint32(self) -> int:
        """Kaldi's unsigned basic type: size byte -4 (0xFC) in binary."""
        if self.binary:
            if self.take(1)[0] != 0xFC:
                raise self.fail("expected an unsigned 4-byte integer", at=self.offset - 1)
            return int.from_bytes(self.take(4), "little")
        return self.count("size")

    def flag(self) -> bool:
        word = self.take(1) if self.binary else self.word()
        if word not in (b"T", b"F"):
            raise self.fail(f"expected T or F, found {word!r}")
        return word == b"T"

    def float64(self) -> float:
        if self.binary:
            size = self.take(1)[0]
            if size not in (4, 8):
                raise self.fail(f"expected a 4- or 8-byte float, found size byte {size}", at=self.offset - 1)
            return float(np.frombuffer(self.take(size), "<f4" if size == 4 else "<f8")[0])
        word = self.word()
        try:
            return float(word)
        except ValueError:
            raise self.fail(f"expected a number, found {word!r}") from None

    def double_matrix(self) -> np.ndarray:
        if self.binary:
            kind = self.word()
            if kind not in (b"DM", b"FM"):
                raise self.fail(f"expected a Kaldi matrix (DM or FM), found {kind!r}")
            rows, cols = self.count("rows"), self.count("columns")
            dtype = "<f8" if kind == b"DM" else "<f4"
            size = np.dtype(dtype).itemsize * rows * cols
            return np.frombuffer(self.take(size), dtype).astype(np.float64).reshape(rows, cols)
        words = self._bracketed()
        try:
            values = np.array([float(w) for w in words])
        except ValueError:
            raise self.fail("a non-number inside a matrix") from None
        if len(values) % 2:
            raise self.fail("a GaussClusterable matrix must have two rows")
        return values.reshape(2, -1)


def read_tree_stats(path: str | Path) -> TreeStats:
    """Read a Kaldi treeacc file (what `acc-tree-stats` or `sum-tree-stats` writes), binary or text."""
    path = Path(path)
    hint = "is it a treeacc file written by acc-tree-stats?"
    with _kaldi_object(path, "tree statistics", "give the treeacc file of acc-tree-stats", hint, _StatsReader) as r:
        assert isinstance(r, _StatsReader)
        r.expect("BTS")
        n = r.uint32()
        events, counts, stats, floors = [], [], [], set()
        for _ in range(n):
            r.expect("EV")
            size = r.uint32()
            events.append(tuple((r.int32(), r.int32()) for _ in range(size)))
            if not r.flag():
                raise r.fail("an event without statistics")
            r.expect("GCL")
            counts.append(r.float64())
            floors.add(r.float64())
            stats.append(r.double_matrix())
    if len(floors) > 1:
        raise AsrBnError(f"{path}: statistics with different variance floors {sorted(floors)} (sum-tree-stats mix?)")
    dims = {s.shape[1] for s in stats}
    if len(dims) > 1:
        raise AsrBnError(f"{path}: statistics of different dimensions {sorted(dims)}")
    return TreeStats(events, np.array(counts), np.stack(stats), floors.pop() if floors else 0.01)


def write_tree_stats(path: str | Path, stats: TreeStats, binary: bool = True) -> None:
    """Write `stats` in Kaldi's treeacc format, which Kaldi's `build-tree` and `sum-tree-stats` read."""

    def basic(fmt: str, value: float | int) -> bytes:
        """Kaldi's WriteBasicType: a size byte (negative for unsigned types), then the little-endian value."""
        size = np.dtype(fmt).itemsize
        head = bytes([256 - size if fmt.startswith("<u") else size])
        return (head + np.array(value, fmt).tobytes()) if binary else f"{value!r} ".encode()

    parts = [b"\0B" if binary else b"", b"BTS ", basic("<u4", len(stats.events))]
    for event, count, s in zip(stats.events, stats.counts, stats.stats):
        parts += [b"EV ", basic("<u4", len(event))]
        for key, value in event:
            parts += [basic("<i4", key), basic("<i4", value)]
        if not binary:
            parts.append(b"\n")
        parts += [b"T" if binary else b"T ", b"GCL ", basic("<f8", float(count)), basic("<f8", stats.var_floor)]
        if binary:
            parts += [b"DM ", basic("<i4", 2), basic("<i4", stats.dim), np.asarray(s, "<f8").tobytes()]
        else:
            rows = "\n  ".join(" ".join(repr(float(v)) for v in row) for row in s)
            parts.append(f" [\n  {rows} ]\n".encode())
    if not binary:
        parts.append(b"\n")
    with atomic_open(path, "wb", encoding=None) as f:
        f.write(b"".join(parts))
