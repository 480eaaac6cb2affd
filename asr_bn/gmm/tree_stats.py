"""Statistics for decision-tree building, as Kaldi's `acc-tree-stats` gathers them, in Kaldi's treeacc format.

For every frame of an aligned utterance the event is (pdf-class, left phone, central phone, right phone) (context
width 3, central position 1 by default; phone 0 outside the utterance); a context-independent central phone (e.g.
silence) keeps only itself and the pdf-class. Each event owns the count, Σx and Σx² of its frames: one diagonal
Gaussian's sufficient statistics, which is all tree building needs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Mapping, Sequence

import numpy as np

from asr_bn.alignments import TransitionModel
from asr_bn.errors import AsrBnError
from asr_bn.gmm.event_map import MISSING
from asr_bn.io import atomic_open, read_matrix, read_table
from asr_bn.kaldi_binary import KaldiReader, kaldi_object
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
        column = {k: j for j, k in enumerate(wanted)}
        table = np.full((len(wanted), len(self.events)), MISSING, np.int64)
        cells = np.array([(column[k], i, v) for i, e in enumerate(self.events) for k, v in e], np.int64).reshape(-1, 3)
        table[cells[:, 0], cells[:, 1]] = cells[:, 2]
        return dict(zip(wanted, table))


def pdf_classes(tm: TransitionModel) -> np.ndarray:
    """The pdf-class of every transition-id (index 0 unused), as Kaldi's TransitionIdToPdfClass."""
    out = np.full(tm.num_transition_ids + 1, -1, dtype=np.int64)
    for tid in range(1, tm.num_transition_ids + 1):
        state = tm.topology.entry(int(tm.tid_phone[tid]))[int(tm.tid_hmm_state[tid])]
        out[tid] = state.self_loop_pdf_class if tm.tid_is_self_loop[tid] else state.forward_pdf_class
    return out


def phone_instances(tm: TransitionModel, tids: np.ndarray, where: Sequence[str],
                    starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The phone instances of alignments laid end to end (`starts`: their first frames; `where` names each in
    errors): each instance's first frame, end (one past its last frame) and phone."""
    ends = tm.phone_ends(tids, where, starts)
    first = np.append(0, ends[:-1])
    return first, ends, tm.tid_phone[tids[first]].astype(np.int64)


def context_phones(phone: np.ndarray, first: np.ndarray, starts: np.ndarray, width: int,
                   central: int) -> list[np.ndarray]:
    """Per context position j < `width`, each phone instance's neighbour j - `central` instances away in the same
    alignment (`phone_instances`' phones and first frames), 0 beyond the alignment's ends: Kaldi's contexts."""
    alignment = np.searchsorted(starts, first, "right") - 1
    here = np.arange(len(phone))
    out = []
    for j in range(width):
        at = here + (j - central)
        other = np.clip(at, 0, len(phone) - 1)
        out.append(np.where((at == other) & (alignment[other] == alignment), phone[other], 0))
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
    jobs: Sequence[Sequence[str]] = (),
) -> TreeStats:
    """Kaldi's `acc-tree-stats`: statistics of every (context, pdf-class) event over aligned utterances.

    `feats` yields (utterance, frames × dim) matrices (streamed: about `_CHUNK_FRAMES` frames in memory at a time);
    utterances without an alignment or whose alignment length differs from their frame count are skipped and named
    in `report`. Frames are added to their event's sums one by one in corpus order, in double, as Kaldi adds them,
    so the statistics of float features are Kaldi's to the bit. With `jobs` (Kaldi's parts of the data, e.g. the
    ali.N.gz of the alignments), each part is summed on its own, as one acc-tree-stats process per job, and the parts
    added as `sum-tree-stats treeacc *.treeacc` adds them (files in the shell's order: 1, 10, 11, …, 2).
    """
    if not 0 <= central_position < context_width:
        raise AsrBnError(f"central position {central_position} is outside a context of width {context_width}")
    job_of = {utt: job for job, part in enumerate(jobs) for utt in part}
    accs: dict[int, _Accumulator] = {}
    pending: dict[int, list[tuple[str, np.ndarray, np.ndarray]]] = {}  # per job: (utterance, tids, frames) not summed
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
        job = job_of.get(utt, 0)
        if job not in accs:
            accs[job] = _Accumulator(tm, ci_phones, context_width, central_position)
        pending.setdefault(job, []).append((utt, tids, mat))
        pending_frames += len(tids)
        if pending_frames >= _CHUNK_FRAMES:
            for j, part in pending.items():
                accs[j].add(part)
            pending, pending_frames = {}, 0
        if report is not None:
            report.counts["utterances"] = report.counts.get("utterances", 0) + 1
    if dim is None:
        raise AsrBnError("no aligned utterance to gather tree statistics from (do features and alignments match?)")
    for j, part in pending.items():
        accs[j].add(part)
    floor = float(np.float32(var_floor))  # Kaldi's --var-floor is a float
    first, *others = [accs[j] for j in sorted(accs, key=lambda j: str(j + 1))]  # sum-tree-stats' order of files
    row = {c: i for i, c in enumerate(first.codes)}
    counts, sums = first.counts.astype(np.float64), first.sums
    for acc in others:  # sum-tree-stats: the first job's statistics as they are, then each other job's added
        new = [c for c in acc.codes if c not in row]
        row.update({c: len(counts) + i for i, c in enumerate(new)})
        counts = np.concatenate([counts, np.zeros(len(new))])
        sums = np.concatenate([sums, np.zeros((len(new), *sums.shape[1:]))])
        at = np.array([row[c] for c in acc.codes])
        counts[at] += acc.counts
        sums[at] += acc.sums
    events = [_decode(c, first.base, context_width) for c in row]
    order = sorted(range(len(events)), key=events.__getitem__)
    return TreeStats([events[i] for i in order], counts[order], sums[order], floor)


class _Accumulator:
    """Running per-event sums: each event code (pdf-class, then each context phone + 1, 0 for none, in base
    `base`) owns a row of counts and (Σx, Σx²) sums, in order of first appearance."""

    def __init__(self, tm: TransitionModel, ci_phones: Sequence[int], context_width: int, central_position: int) -> None:
        self.tm, self.width, self.central = tm, context_width, central_position
        self.tid_pdf_class = pdf_classes(tm)
        self.is_ci = np.zeros(max(tm.phones) + 1, dtype=bool)
        self.is_ci[[p for p in ci_phones if 0 <= p < len(self.is_ci)]] = True
        self.base = len(self.is_ci) + 1
        self.row: dict[int, int] = {}  # event code → row
        self.codes: list[int] = []
        self.counts = np.zeros(0)
        self.sums = np.zeros((0, 2, 0))

    def rows(self, utts: Sequence[str], tids: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """The row of every frame of alignments laid end to end (`starts`: their first frames), rows added for new
        events. Contexts are coded per phone instance and sorted there, frames only looked up."""
        first, ends, phone = phone_instances(self.tm, tids, [f"alignment of {u}" for u in utts], starts)
        ci = self.is_ci[phone]
        context = np.zeros(len(ends), np.int64)
        for j, neighbour in enumerate(context_phones(phone, first, starts, self.width, self.central)):
            value = neighbour + 1
            context = context * self.base + (value if j == self.central else np.where(ci, 0, value))
        contexts, which = np.unique(context, return_inverse=True)
        classes = int(self.tid_pdf_class.max()) + 1
        key = np.repeat(which.ravel(), ends - first) * classes + self.tid_pdf_class[tids]  # (context, pdf-class)
        seen = np.flatnonzero(np.bincount(key, minlength=len(contexts) * classes))
        codes = (seen % classes) * self.base**self.width + contexts[seen // classes]
        for c in codes.tolist():
            if c not in self.row:
                self.row[c] = len(self.codes)
                self.codes.append(c)
        row = np.zeros(len(contexts) * classes, np.int64)
        row[seen] = [self.row[c] for c in codes.tolist()]
        return row[key]

    def add(self, pending: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> None:
        """Add the frames of `pending` (utterance, tids, frames): one np.bincount per column, the running sums put
        first, so every sum is Kaldi's: the previous sum plus each frame in turn."""
        if not pending:
            return
        lengths = [len(t) for _, t, _ in pending]
        starts = np.cumsum([0] + lengths[:-1])
        rows = self.rows([u for u, _, _ in pending], np.concatenate([t for _, t, _ in pending]), starts)
        old, new, dim = len(self.counts), len(self.codes), pending[0][2].shape[1]
        if not old:
            self.sums = np.zeros((0, 2, dim))
        group = np.concatenate([np.arange(old), rows])
        frames = np.empty((dim, len(rows)), np.float32)  # by column; floats, as Kaldi's frames are
        at = 0
        for _, _, mat in pending:
            frames[:, at : at + len(mat)] = mat.T
            at += len(mat)
        values, squares = np.empty(old + len(rows)), np.empty(old + len(rows))
        sums = np.empty((new, 2, dim))
        for d in range(dim):  # each sum: the running one, then the frames' values, or their squares in float
            values[:old], values[old:] = self.sums[:, 0, d], frames[d]
            sums[:, 0, d] = np.bincount(group, values, new)
            squares[:old], squares[old:] = self.sums[:, 1, d], frames[d] * frames[d]
            sums[:, 1, d] = np.bincount(group, squares, new)
        self.counts = np.bincount(rows, minlength=new) + np.pad(self.counts, (0, new - old))
        self.sums = sums


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
        from asr_bn.gmm.features import prepared_gmm_features

        yield from prepared_gmm_features(source)[0].items()
        return
    if source.suffix != ".scp" or not source.is_file():
        raise AsrBnError(f"{source}: give an `asr-bn prep` output dir or a Kaldi .scp of features")
    files: dict[str, BinaryIO] = {}  # each archive opened once
    try:
        for utt, row in read_table(source, "give a Kaldi .scp of features: `utterance location`").items():
            yield utt, read_matrix(row.rest, source, utt, files)
    finally:
        for f in files.values():
            f.close()


# ---------------------------------------------------------------------------------------------------------------
# Kaldi's treeacc format: BTS <n> then per event `EV <size> key value …`, a present flag and a GaussClusterable
# (`GCL <count> <var_floor> <2 x dim double matrix>`); binary or text (build-tree-utils.cc, clusterable-classes.cc)


@lru_cache(maxsize=None)
def _record(size: int) -> struct.Struct:
    """Layout of one binary event as Kaldi writes it: `EV`, the size, the (key, value) pairs, `T`, `GCL`, count and
    variance floor as doubles, `DM` 2 × dim (the doubles follow)."""
    return struct.Struct("<3sBI" + "BiBi" * size + "c4sBdBd3sBiBi")


def _pack_record(event: Event, count: float, var_floor: float, dim: int) -> bytes:
    """The bytes of `_record` for one event, up to its matrix's doubles."""
    pairs = [x for key, value in event for x in (4, key, 4, value)]
    return _record(len(event)).pack(b"EV ", 0xFC, len(event), *pairs, b"T", b"GCL ", 8, count, 8, var_floor,
                                    b"DM ", 4, 2, 4, dim)


class _StatsReader(KaldiReader):
    def kaldi_layout_event(self) -> tuple[Event, float, float, bytes] | None:
        """The next event (event, count, variance floor, its 2 × dim doubles' bytes) if it is laid out as Kaldi
        writes it (`_record`: its markers checked where they stand), taken in one piece; None, nothing read, for any
        other layout, which `event` then reads token by token (or says what is wrong)."""
        head = self.peek(8)
        size = int.from_bytes(head[4:], "little")
        if len(head) < 8 or head[:4] != b"EV \xfc" or size > 64:
            return None
        layout, tail = _record(size), 8 + 10 * size
        raw = self.peek(layout.size)
        if (len(raw) < layout.size or raw[8:tail:5] != b"\x04" * (2 * size) or raw[tail : tail + 6] != b"TGCL \x08"
                or raw[tail + 14] != 8 or raw[tail + 23 : tail + 32] != b"DM \x04\x02\x00\x00\x00\x04"):
            return None
        fields = layout.unpack(raw)
        dim = fields[-1]
        if dim < 0:
            return None
        record = self.take(layout.size + 16 * dim)
        pairs = fields[3 : 3 + 4 * size]  # (4, key, 4, value) per pair
        return tuple(zip(pairs[1::4], pairs[3::4])), fields[-8], fields[-6], record[layout.size :]

    def event(self) -> tuple[Event, float, float, np.ndarray]:
        """The next event, token by token: (event, count, variance floor, 2 × dim statistics)."""
        self.expect("EV")
        size = self.uint32()
        event = tuple((self.int32(), self.int32()) for _ in range(size))
        if not self.flag():
            raise self.fail("an event without statistics")
        self.expect("GCL")
        return event, self.float64(), self.float64(), self.double_matrix()

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
            if rows != 2:
                raise self.fail(f"a GaussClusterable matrix must have two rows, this one has {rows}")
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
    with kaldi_object(path, "tree statistics", "give the treeacc file of acc-tree-stats", hint, _StatsReader) as r:
        assert isinstance(r, _StatsReader)
        r.expect("BTS")
        n = r.uint32()
        events, counts, matrices, floors = [], [], [], set()
        for _ in range(n):
            record = r.kaldi_layout_event() if r.binary else None
            event, count, floor, matrix = record or r.event()
            events.append(event)
            counts.append(count)
            floors.add(floor)
            matrices.append(matrix)  # as Kaldi lays it out: the bytes of 2 × dim doubles; else read: an array
    if len(floors) > 1:
        raise AsrBnError(f"{path}: statistics with different variance floors {sorted(floors)} (sum-tree-stats mix?)")
    dims = {len(m) // 16 if isinstance(m, bytes) else m.shape[1] for m in matrices}
    if len(dims) > 1:
        raise AsrBnError(f"{path}: statistics of different dimensions {sorted(dims)}")
    dim = dims.pop() if dims else 0
    if all(isinstance(m, bytes) for m in matrices):
        stats = np.frombuffer(bytearray(b"".join(matrices)), "<f8").reshape(len(matrices), 2, dim)
    else:
        stats = np.stack([np.frombuffer(m, "<f8").reshape(2, dim) if isinstance(m, bytes) else m for m in matrices])
    return TreeStats(events, np.array(counts), stats, floors.pop() if floors else 0.01)


def write_tree_stats(path: str | Path, stats: TreeStats, binary: bool = True) -> None:
    """Write `stats` in Kaldi's treeacc format, which Kaldi's `build-tree` and `sum-tree-stats` read."""
    if binary:
        rows = np.ascontiguousarray(stats.stats, "<f8").reshape(len(stats.events), -1)
        parts = [b"\0BBTS ", struct.pack("<BI", 0xFC, len(stats.events))]
        for event, count, row in zip(stats.events, stats.counts.tolist(), rows):
            parts += [_pack_record(event, count, stats.var_floor, stats.dim), row.tobytes()]
    else:
        parts = [f"BTS {len(stats.events)} ".encode()]
        for event, count, s in zip(stats.events, stats.counts, stats.stats):
            pairs = "".join(f"{key} {value} " for key, value in event)
            matrix = "\n  ".join(" ".join(repr(float(v)) for v in row) for row in s)
            parts.append(f"EV {len(event)} {pairs}\nT GCL {float(count)!r} {stats.var_floor!r}  [\n  {matrix} ]\n".encode())
        parts.append(b"\n")
    with atomic_open(path, "wb", encoding=None) as f:
        f.write(b"".join(parts))
