"""Kaldi forced alignments without Kaldi binaries: the TransitionModel at the head of a model file, alignment
archives, per-frame pdf-id targets joined to a prepared data dir, and pdf priors.

Matches Kaldi's tools: `ali-to-pdf` (`TransitionModel.to_pdfs`), `ali-to-phones` (`to_phones`, `phone_segments`),
`hmm-info` (`info_lines`), `analyze-counts` (`count_pdfs`). The layouts and numbering follow Kaldi's
src/hmm/transition-model.cc and hmm-topology.cc: transition-ids are 1-based, pdf-ids and HMM states 0-based.

>>> model = read_transition_model("exp/tri4b_ali_si284/final.mdl")
>>> for utt, tids, path in read_alignments("exp/tri4b_ali_si284"):
...     pdfs = model.to_pdfs(tids)
"""

from __future__ import annotations

import contextlib
import gzip
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import read_table, write_ark_scp, write_text
from asr_bn.report import Report

__all__ = [
    "HmmState",
    "Topology",
    "TransitionModel",
    "read_transition_model",
    "Labels",
    "alignment_files",
    "alignment_model",
    "read_alignments",
    "describe_alignments",
    "join_targets",
    "count_pdfs",
    "write_counts",
    "read_counts",
    "log_priors",
    "transition_id_scores",
]

TARGETS_REPORT = "targets_report.json"
_WS = b" \t\n\r\v\f"
_WORD = re.compile(rb"[ \t\n\r\v\f]*([^ \t\n\r\v\f]{1,4096})")
_INT = re.compile(rb"[+-]?[0-9]+")
_CHUNK = 1 << 20
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
# Kaldi nnet1 (nnet-pdf-prior.cc) gives pdfs below the prior floor this log-prior, so they never win in decoding.
_NEVER_LOG_PRIOR = float(np.finfo(np.float32).max) / 2


# ---------------------------------------------------------------------------------------------------------------
# Kaldi basic types (src/base/io-funcs.cc), binary or text, with the byte offset kept for error messages


class _KaldiReader:
    """Reads Kaldi tokens and basic types from a byte stream in binary or text form, tracking the byte offset."""

    def __init__(self, f: BinaryIO, name: str, what: str, hint: str) -> None:
        self._f = f
        self._name = name
        self._what = what  # e.g. "the Kaldi transition model"
        self._hint = hint  # the fix to suggest
        self._buf = b""
        self._pos = 0
        self._base = 0  # file offset of self._buf[0]
        self.binary = False

    @property
    def offset(self) -> int:
        return self._base + self._pos

    def fail(self, problem: str, at: int | None = None) -> AsrBnError:
        """The error for a parse failure at byte `at` (default: the current offset)."""
        at = self.offset if at is None else at
        return AsrBnError(f"{self._name}: cannot read {self._what} at byte {at}: {problem} ({self._hint})")

    def _more(self, at_least: int = 1) -> bool:
        chunk = self._f.read(max(_CHUNK, at_least))
        if not chunk:
            return False
        self._buf = self._buf[self._pos :] + chunk
        self._base += self._pos
        self._pos = 0
        return True

    def peek(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n and self._more(n):
            pass
        return self._buf[self._pos : self._pos + n]

    def take(self, n: int) -> bytes:
        data = self.peek(n)
        if len(data) < n:
            raise self.fail(f"the file ends where {n} more bytes were expected")
        self._pos += n
        return data

    def word(self) -> bytes:
        """The next whitespace-delimited word; like Kaldi's ReadToken it consumes one delimiter after it."""
        while True:
            m = _WORD.match(self._buf, self._pos)
            if m is not None and m.end() < len(self._buf):
                if self._buf[m.end()] not in _WS:
                    raise self.fail("a word longer than 4096 bytes")
                self._pos = m.end() + 1
                return m.group(1)
            if not self._more():
                if m is None:
                    self._pos = len(self._buf)
                    raise self.fail("the file ends where a token was expected")
                self._pos = m.end()
                return m.group(1)

    def expect(self, token: str) -> None:
        start = self.offset
        word = self.word()
        if word != token.encode():
            raise self.fail(f"expected {token}, found {_show(word)}", at=start)

    def int32(self) -> int:
        if self.binary:
            size = self.take(1)[0]
            if size != 4:
                raise self.fail(f"expected a 4-byte integer, found size byte {size}", at=self.offset - 1)
            return int.from_bytes(self.take(4), "little", signed=True)
        return self._text_int(self.word())

    def _text_int(self, word: bytes) -> int:
        if not _INT.fullmatch(word) or not _INT32_MIN <= int(word) <= _INT32_MAX:
            raise self.fail(f"expected a 32-bit integer, found {_show(word)}")
        return int(word)

    def float32(self) -> float:
        if self.binary:
            size = self.take(1)[0]
            if size == 4:
                return float(np.frombuffer(self.take(4), "<f4")[0])
            if size == 8:
                return float(np.float32(np.frombuffer(self.take(8), "<f8")[0]))
            raise self.fail(f"expected a 4- or 8-byte float, found size byte {size}", at=self.offset - 1)
        return self._text_float(self.word())

    def _text_float(self, word: bytes) -> float:
        try:
            return float(np.float32(float(word)))
        except ValueError:
            raise self.fail(f"expected a number, found {_show(word)}") from None

    def count(self, what: str) -> int:
        n = self.int32()
        if n < 0:
            raise self.fail(f"negative {what} {n}")
        return n

    def int_vector(self) -> list[int]:
        """Kaldi's ReadIntegerVector: binary `\\4 n v1 v2 …` (raw int32s), text `[ v1 v2 … ]`."""
        if self.binary:
            if self.take(1)[0] != 4:
                raise self.fail("expected a vector of 4-byte integers")
            n = int.from_bytes(self.take(4), "little", signed=True)
            if n < 0:
                raise self.fail(f"negative vector size {n}")
            return np.frombuffer(self.take(4 * n), "<i4").tolist()
        return [self._text_int(w) for w in self._bracketed()]

    def float_vector(self) -> np.ndarray:
        """Kaldi's Vector<float>::Read: binary `FV n <raw floats>` (or `DV` doubles), text `[ x1 x2 … ]`."""
        if self.binary:
            kind = self.word()
            if kind not in (b"FV", b"DV"):
                raise self.fail(f"expected a Kaldi vector (FV or DV), found {_show(kind)}")
            n = self.int32()
            if n < 0:
                raise self.fail(f"negative vector size {n}")
            size = 4 if kind == b"FV" else 8
            return np.frombuffer(self.take(size * n), "<f4" if size == 4 else "<f8").astype(np.float32)
        return np.array([self._text_float(w) for w in self._bracketed()], dtype=np.float32)

    def _bracketed(self) -> list[bytes]:
        first = self.word()
        if not first.startswith(b"["):
            raise self.fail(f"expected '[', found {_show(first)}")
        words, word = [], first[1:]
        while not word.endswith(b"]"):
            if word:
                words.append(word)
            word = self.word()
        if word[:-1]:
            words.append(word[:-1])
        return words


@contextlib.contextmanager
def _kaldi_object(
    path: Path, what: str, open_fix: str, hint: str, reader: type[_KaldiReader] = _KaldiReader
) -> Iterator[_KaldiReader]:
    """A reader (of class `reader`) over one Kaldi object file, binary if it starts with `\\0B`, else text; a file
    that cannot be opened is one line naming it and `open_fix`."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise AsrBnError(f"cannot open {what} {path}: {e.strerror or e} ({open_fix})") from e
    with f:
        r = reader(f, str(path), what, hint)
        r.binary = r.peek(2) == b"\0B"
        if r.binary:
            r.take(2)
        yield r


def _show(word: bytes) -> str:
    return repr(word[:24].decode("utf-8", "backslashreplace")) + ("…" if len(word) > 24 else "")


class _KaldiWriter:
    """Writes Kaldi tokens and basic types in binary or text form (the inverse of `_KaldiReader`)."""

    def __init__(self, binary: bool) -> None:
        self.binary = binary
        self.parts: list[bytes] = []

    def token(self, token: str) -> None:
        self.parts.append(token.encode() + b" ")

    def newline(self) -> None:
        if not self.binary:
            self.parts.append(b"\n")

    def int32(self, v: int) -> None:
        self.parts.append(b"\x04" + struct.pack("<i", v) if self.binary else f"{v} ".encode())

    def float32(self, v: float) -> None:
        self.parts.append(b"\x04" + struct.pack("<f", v) if self.binary else f"{str(np.float32(v))} ".encode())

    def int_vector(self, values: Sequence[int]) -> None:
        if self.binary:
            self.parts.append(b"\x04" + struct.pack("<i", len(values)) + np.asarray(values, "<i4").tobytes())
        else:
            self.parts.append(("[ " + "".join(f"{v} " for v in values) + "]\n").encode())

    def float_vector(self, values: np.ndarray) -> None:
        if self.binary:
            self.token("FV")
            self.int32(len(values))
            self.parts.append(np.asarray(values, "<f4").tobytes())
        else:
            self.parts.append((" [ " + "".join(f"{str(np.float32(v))} " for v in values) + "]\n").encode())


# ---------------------------------------------------------------------------------------------------------------
# Topology and transition model


@dataclass(frozen=True)
class HmmState:
    """One state of a phone's HMM: its pdf-classes (-1: non-emitting) and transitions (destination, probability)."""

    forward_pdf_class: int
    self_loop_pdf_class: int
    transitions: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class Topology:
    """Kaldi's HmmTopology: one HMM per group of phones; each HMM's last state is final and non-emitting."""

    phones: tuple[int, ...]  # sorted phone ids (1-based) that have an HMM
    phone2entry: tuple[int, ...]  # index: phone id; value: index into `entries`, -1 for phones without one
    entries: tuple[tuple[HmmState, ...], ...]

    def __post_init__(self) -> None:
        if not self.entries or not self.phones:
            raise ValueError("empty topology")
        if list(self.phones) != sorted(set(self.phones)) or self.phones[0] < 1:
            raise ValueError(f"topology phones must be sorted, unique and positive: {list(self.phones)[:10]}")
        for phone in self.phones:
            if phone >= len(self.phone2entry) or not 0 <= self.phone2entry[phone] < len(self.entries):
                raise ValueError(f"topology has no HMM for phone {phone}")
        for i, entry in enumerate(self.entries):
            if len(entry) < 2 or entry[-1].transitions or entry[-1].forward_pdf_class != -1:
                raise ValueError(f"topology entry {i} must end with a final state without pdf or transitions")
            for j, state in enumerate(entry):
                for dest, prob in state.transitions:
                    if not 0 <= dest < len(entry):
                        raise ValueError(f"topology entry {i} state {j}: transition to missing state {dest}")
                    if dest == j and state.self_loop_pdf_class < 0:
                        raise ValueError(f"topology entry {i} state {j}: a non-emitting state has a self-loop")

    def entry(self, phone: int) -> tuple[HmmState, ...]:
        """The HMM (list of states) of `phone`."""
        return self.entries[self.phone2entry[phone]]

    @property
    def is_hmm(self) -> bool:
        """True when every state's self-loop uses the same pdf-class as its forward transitions (classic layout)."""
        return all(s.forward_pdf_class == s.self_loop_pdf_class for e in self.entries for s in e)


class TransitionModel:
    """Kaldi's TransitionModel: topology, the sorted (phone, hmm-state, forward-pdf, self-loop-pdf) tuples that
    define the transition-states, and the log-probability of every transition-id (index 0 unused).

    Transition-ids are numbered as Kaldi does: transition-state by transition-state (1-based, in tuple order),
    one id per transition of that state's HMM state, in topology order.
    """

    def __init__(self, topology: Topology, tuples: Sequence[tuple[int, int, int, int]], log_probs: np.ndarray) -> None:
        tuples = [tuple(int(x) for x in t) for t in tuples]
        if not tuples:
            raise ValueError("no transition-states")
        if any(a >= b for a, b in zip(tuples, tuples[1:])):
            raise ValueError("transition-state tuples are not sorted and unique")
        known_phones = set(topology.phones)
        ids: list[tuple[int, ...]] = []  # per transition-id: tstate, phone, state, pdf, loop, final, destination
        for tstate, (phone, hmm_state, forward_pdf, self_loop_pdf) in enumerate(tuples, start=1):
            if phone not in known_phones:
                raise ValueError(f"transition-state {tstate} refers to phone {phone}, absent from the topology")
            entry = topology.entry(phone)
            if not 0 <= hmm_state < len(entry) or min(forward_pdf, self_loop_pdf) < 0:
                raise ValueError(
                    f"transition-state {tstate} has HMM state {hmm_state} / pdfs {forward_pdf}, {self_loop_pdf}"
                )
            for dest, _ in entry[hmm_state].transitions:
                loop = dest == hmm_state
                pdf = self_loop_pdf if loop else forward_pdf
                ids.append((tstate, phone, hmm_state, pdf, loop, dest + 1 == len(entry), dest))
        log_probs = np.asarray(log_probs, dtype=np.float32)
        if log_probs.shape != (len(ids) + 1,):
            raise ValueError(f"{log_probs.size} log-probs for {len(ids)} transition-ids (expected {len(ids) + 1})")
        self.topology = topology
        self.tuples: list[tuple[int, int, int, int]] = tuples  # type: ignore[assignment]
        self.log_probs = log_probs
        table = np.array([(0, 0, -1, -1, 0, 0, 0)] + ids, dtype=np.int64)
        self.tid_tstate = table[:, 0].astype(np.int32)
        self.tid_phone = table[:, 1].astype(np.int32)
        self.tid_hmm_state = table[:, 2].astype(np.int32)
        self.tid_pdf = table[:, 3].astype(np.int32)
        self.tid_is_self_loop = table[:, 4].astype(bool)
        self.tid_is_final = table[:, 5].astype(bool)
        self.tid_dest = table[:, 6].astype(np.int32)  # the HMM state a transition goes to
        self._tables: tuple[np.ndarray, np.ndarray] | None = None  # `_path_tables`, made when first needed
        self.num_pdfs = 1 + max(max(t[2], t[3]) for t in tuples)

    @property
    def num_transition_ids(self) -> int:
        return len(self.tid_pdf) - 1

    @property
    def num_transition_states(self) -> int:
        return len(self.tuples)

    @property
    def phones(self) -> tuple[int, ...]:
        return self.topology.phones

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TransitionModel)
            and self.topology == other.topology
            and self.tuples == other.tuples
            and np.array_equal(self.log_probs, other.log_probs)
        )

    def _checked(self, tids: np.ndarray, where: str | Sequence[str], starts: np.ndarray | None = None) -> np.ndarray:
        """`tids`, refused with one line naming `where` and the frame if one is outside 1..n. Alignments laid end to
        end give their first frames as `starts` and their names as `where`: the error names the one at fault."""
        tids = np.asarray(tids)
        bad = (tids < 1) | (tids > self.num_transition_ids)
        if bad.any():
            i = int(np.argmax(bad))
            tid = int(tids[i])
            if not isinstance(where, str):
                u = int(np.searchsorted(np.asarray(starts), i, "right")) - 1
                where, i = where[u], i - int(np.asarray(starts)[u])
            raise AsrBnError(
                f"{where}: transition-id {tid} at frame {i} is outside 1..{self.num_transition_ids} of the "
                f"model (were these alignments made with another final.mdl? use the model of the ali dir)"
            )
        return tids

    def to_pdfs(self, tids: np.ndarray, where: str = "alignment") -> np.ndarray:
        """pdf-id (0-based) of each frame's transition-id, like Kaldi's `ali-to-pdf`."""
        return self.tid_pdf[self._checked(tids, where)]

    def to_phones(self, tids: np.ndarray, where: str = "alignment") -> np.ndarray:
        """Phone id of each frame, like `ali-to-phones --per-frame`."""
        return self.tid_phone[self._checked(tids, where)]

    def to_hmm_states(self, tids: np.ndarray, where: str = "alignment") -> np.ndarray:
        """HMM state (0-based, within the phone's topology) of each frame."""
        return self.tid_hmm_state[self._checked(tids, where)]

    def is_self_loop(self, tids: np.ndarray, where: str = "alignment") -> np.ndarray:
        """Whether each frame's transition-id is a self-loop."""
        return self.tid_is_self_loop[self._checked(tids, where)]

    def phone_segments(self, tids: np.ndarray, where: str = "alignment") -> list[tuple[int, int, int]]:
        """Phone instances as (phone, first frame, end frame exclusive), split as Kaldi's SplitToPhones does
        (`phone_ends`)."""
        tids = np.asarray(tids)
        ends = self.phone_ends(tids, where)
        starts = np.append(0, ends[:-1])[: len(ends)]
        return list(zip(self.tid_phone[tids[starts]].tolist(), starts.tolist(), ends.tolist()))

    def phone_ends(self, tids: np.ndarray, where: str | Sequence[str] = "alignment",
                   starts: np.ndarray | None = None) -> np.ndarray:
        """End frame (exclusive) of every phone instance, as Kaldi's SplitToPhones splits them, of one alignment or,
        with `starts` (first frames) and `where` (names), of alignments laid end to end: whole arrays at once.

        A phone ends at a transition into its HMM's final state (plus, in reordered alignments, the self-loops that
        follow it), so two consecutive instances of the same phone stay apart; one cut off without its final
        transition ends at the next phone or the alignment's end (Kaldi warns there).
        """
        starts = np.zeros(1, np.int64) if starts is None else np.asarray(starts, np.int64)
        tids = self._checked(tids, where, starts)
        n = len(tids)
        bounds = np.append(starts, n)
        tstate, loop, final = self.tid_tstate[tids], self.tid_is_self_loop[tids], self.tid_is_final[tids]
        phone = self.tid_phone[tids]
        first = np.zeros(n + 1, bool)
        first[bounds] = True  # the first frame of each alignment, and the end
        cut = ~final & (first[1:] | np.append(phone[1:] != phone[:-1], True))  # ends a phone without a final
        finals = np.flatnonzero(final)
        # reordered: a final transition takes the self-loops of its state that follow it (first frames break runs)
        carried = np.flatnonzero(first[:n] | ~loop | np.append(True, tstate[1:] != tstate[:-1]))
        carried = np.append(carried, n)
        reordered = _reordered(tstate, loop, bounds)[np.searchsorted(bounds, finals, "right") - 1]
        final_ends = np.where(reordered, carried[np.searchsorted(carried, finals, "right")], finals + 1)
        is_end = np.zeros(n + 1, bool)  # (a mask, not np.union1d: that imports numpy.ma, 10 ms of start-up)
        is_end[np.flatnonzero(cut) + 1] = True
        is_end[final_ends] = True
        return np.flatnonzero(is_end)

    def _path_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Where a path through the HMMs may go, as boolean tables over HMM states: (per transition-id, the states
        its phone may leave next after it, for a forward transition into a non-final state; per phone, the states
        it may start in). A non-emitting state (Kaldi allows them, though not into the final state) stands for the
        emitting states it leads to."""
        if self._tables is None:
            width = max(len(e) for e in self.topology.entries)
            reach = []  # per entry, per state: the emitting states entered through it
            for entry in self.topology.entries:
                r = np.zeros((len(entry), width), bool)
                emitting = [d for d, st in enumerate(entry) if st.forward_pdf_class >= 0]
                r[emitting, emitting] = True
                for _ in entry:  # relax: a non-emitting state enters what its destinations enter
                    for d, st in enumerate(entry):
                        if st.forward_pdf_class < 0:
                            for dest, _ in st.transitions:
                                r[d] |= r[dest]
                reach.append(r)
            entry_of = np.asarray(self.topology.phone2entry)[self.tid_phone[1:]]
            after = np.zeros((len(self.tid_pdf), width), bool)
            after[1:] = [reach[e][d] for e, d in zip(entry_of.tolist(), self.tid_dest[1:].tolist())]
            start = np.zeros((len(self.topology.phone2entry), width), bool)
            for phone in self.phones:
                start[phone] = reach[self.topology.phone2entry[phone]][0]
            self._tables = (after, start)
        return self._tables

    def check_paths(self, tids: np.ndarray, where: str | Sequence[str], starts: np.ndarray | None = None,
                    model: str = "the model") -> None:
        """Refuse, with one line naming `where` and the frame, an alignment that is no path through the HMMs of the
        model (named `model` in the message): of one alignment or, with `starts` (first frames) and names as
        `where`, of alignments laid end to end, whole arrays at once. Another model's or tree's transition-ids pass
        the range check but not this one: their HMM states do not follow one another.

        A path starts a phone in its first HMM state and ends with a transition into a phone's final state. The
        self-loops of a transition-state stay with its forward transition: after it (reordered, Kaldi's default)
        or before it. A forward transition into HMM state d is followed by a transition of the same phone leaving
        state d (or a state that d leads to without emitting), and one into the final state by a new phone. Kaldi's
        SplitToPhones (convert-ali, ali-to-phones) checks part of this: phones start in their first state and
        change only after a final transition.
        """
        starts = np.zeros(1, np.int64) if starts is None else np.asarray(starts, np.int64)
        tids = self._checked(tids, where, starts).astype(np.int64)
        n = len(tids)
        if n == 0:
            return
        after, start_ok = self._path_tables()
        bounds = np.append(starts, n)
        lengths = np.diff(bounds)
        firsts, lasts = starts[lengths > 0], bounds[1:][lengths > 0] - 1
        tstate, loop = self.tid_tstate[tids], self.tid_is_self_loop[tids]
        phone, state = self.tid_phone[tids], self.tid_hmm_state[tids]
        reordered = np.repeat(_reordered(tstate, loop, bounds), lengths)
        last_forward = np.maximum.accumulate(np.where(loop, 0, np.arange(n)))
        leader = tids[np.where(reordered, last_forward, np.arange(n))]  # the forward transition the next frame follows
        stays = np.where(reordered[:-1], loop[1:], loop[:-1])  # the next frame is in the same transition-state
        step_ok = np.where(stays, tstate[1:] == tstate[:-1],
                           np.where(self.tid_is_final[leader[:-1]], start_ok[phone[1:], state[1:]],
                                    (phone[1:] == phone[:-1]) & after[leader[:-1], state[1:]]))
        bad_step = np.append(~step_ok, False)
        bad_step[lasts] = False  # the next frame is another alignment's
        bad_start = np.zeros(n, bool)
        bad_start[firsts] = ~start_ok[phone[firsts], state[firsts]] | (reordered & loop)[firsts]
        bad_end = np.zeros(n, bool)
        bad_end[lasts] = ~self.tid_is_final[leader[lasts]]
        bad = bad_start | bad_step | bad_end
        if not bad.any():
            return
        i = int(np.argmax(bad))
        u = int(np.searchsorted(starts, i, "right")) - 1
        if bad_start[i]:
            what = f"starts a phone ({phone[i]}) in HMM state {state[i]}" + (" with a self-loop" if loop[i] else "")
        elif bad_step[i]:
            what = (f"goes from transition-id {tids[i]} (HMM state {state[i]} of phone {phone[i]}) to {tids[i + 1]} "
                    f"(HMM state {state[i + 1]} of phone {phone[i + 1]})")
        else:
            what = f"ends the alignment inside phone {phone[i]}"
        raise AsrBnError(
            f"{where if isinstance(where, str) else where[u]}: frame {i - int(starts[u])} {what}, which no path "
            f"through the HMMs of {model} does; these alignments were made with another model or tree: realign "
            f"with this model, or give the ali dir of the model that made them"
        )

    def info_lines(self) -> list[str]:
        """What Kaldi's `hmm-info` prints, then one line per topology entry."""
        lines = [
            f"number of phones {len(self.phones)}",
            f"number of pdfs {self.num_pdfs}",
            f"number of transition-ids {self.num_transition_ids}",
            f"number of transition-states {self.num_transition_states}",
        ]
        for i, entry in enumerate(self.topology.entries):
            phones = [p for p in self.phones if self.topology.phone2entry[p] == i]
            shown = " ".join(map(str, phones[:20])) + (f" … ({len(phones)} phones)" if len(phones) > 20 else "")
            emitting = [s for s in entry if s.forward_pdf_class >= 0]
            classes = {s.forward_pdf_class for s in emitting} | {s.self_loop_pdf_class for s in emitting}
            loops = sum(any(d == j for d, _ in s.transitions) for j, s in enumerate(entry))
            separate = any(s.forward_pdf_class != s.self_loop_pdf_class for s in emitting)
            lines.append(
                f"topology entry {i}: phones {shown}; {len(emitting)} emitting states + final, "
                f"{len(classes)} pdf-classes, {loops} self-loops"
                + (" with separate self-loop pdf-classes" if separate else "")
            )
        return lines

    def topology_text(self) -> str:
        """Kaldi's text form of the topology alone (a lang dir's `topo`, what kaldi-hmm-gmm's HmmTopology.read
        parses)."""
        return topology_text(self.topology)

    def to_kaldi(self, binary: bool = False) -> bytes:
        """The model in Kaldi's format (text as `gmm-copy --binary=false` writes, or binary), up to
        </TransitionModel>."""
        w = _KaldiWriter(binary)
        if binary:
            w.parts.append(b"\0B")
        w.token("<TransitionModel>")
        w.newline()
        _write_topology(w, self.topology)
        tag = "Triples" if self.topology.is_hmm else "Tuples"
        w.token(f"<{tag}>")
        w.int32(len(self.tuples))
        w.newline()
        for t in self.tuples:
            for v in t[:3] if tag == "Triples" else t:
                w.int32(v)
            w.newline()
        w.token(f"</{tag}>")
        w.newline()
        w.token("<LogProbs>")
        w.newline()
        w.float_vector(self.log_probs)
        w.token("</LogProbs>")
        w.newline()
        w.token("</TransitionModel>")
        w.newline()
        return b"".join(w.parts)


def _is_reordered(tstate: np.ndarray, loop: np.ndarray) -> bool:
    """Kaldi's IsReordered: whether self-loops follow (reordered) or precede the forward transition of a state."""
    return bool(_reordered(tstate, loop, np.array([0, len(tstate)]))[0])


def _reordered(tstate: np.ndarray, loop: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """`_is_reordered` of each alignment `tstate[bounds[u]:bounds[u + 1]]` laid end to end: the first state change
    next to a self-loop tells (the self-loop last: reordered); without one, a self-loop at the end and not at the
    start."""
    n, lengths = len(tstate), np.diff(bounds)
    inside = np.ones(max(n - 1, 0), bool)
    inside[bounds[1:-1][(bounds[1:-1] > 0) & (bounds[1:-1] < n)] - 1] = False  # no change across alignments
    change = np.flatnonzero(inside & (tstate[1:] != tstate[:-1]))
    telling = change[loop[change] | loop[change + 1]]
    alignment = np.searchsorted(bounds, telling, "right") - 1
    told, first = np.unique(alignment, return_index=True)
    out = np.zeros(len(lengths), bool)
    some = lengths > 0
    out[some] = ~loop[bounds[:-1][some]] & loop[bounds[1:][some] - 1]
    out[told] = loop[telling[first]]
    return out


def _read_topology(r: _KaldiReader) -> Topology:
    r.expect("<Topology>")
    if r.binary:
        phones = r.int_vector()
        phone2entry = r.int_vector()
        n = r.int32()
        separate_loops = n == -1  # newer layout: each state also stores its self-loop pdf-class
        if separate_loops:
            n = r.int32()
        if n < 0:
            raise r.fail(f"negative number of topology entries {n}")
        entries = []
        for _ in range(n):
            states = []
            for _ in range(r.count("number of HMM states")):
                forward = r.int32()
                loop = r.int32() if separate_loops else forward
                transitions = tuple((r.int32(), r.float32()) for _ in range(r.count("number of transitions")))
                states.append(HmmState(forward, loop, transitions))
            entries.append(tuple(states))
        r.expect("</Topology>")
    else:
        phones, phone2entry, entries = [], [], []
        while (word := r.word()) != b"</Topology>":
            if word != b"<TopologyEntry>":
                raise r.fail(f"expected <TopologyEntry> or </Topology>, found {_show(word)}")
            entry_phones = []
            r.expect("<ForPhones>")
            while (word := r.word()) != b"</ForPhones>":
                entry_phones.append(r._text_int(word))
            entries.append(_read_text_states(r))
            for phone in entry_phones:
                if phone < 1 or phone > 10_000_000:
                    raise r.fail(f"phone id {phone} out of range")
                phone2entry += [-1] * (phone + 1 - len(phone2entry))
                if phone2entry[phone] != -1:
                    raise r.fail(f"phone {phone} appears in two topology entries")
                phone2entry[phone] = len(entries) - 1
                phones.append(phone)
        phones.sort()
    try:
        return Topology(tuple(phones), tuple(phone2entry), tuple(entries))
    except ValueError as e:
        raise r.fail(str(e)) from None


def topology_text(topology: Topology) -> str:
    """Kaldi's text form of a topology (a lang dir's `topo`, as utils/gen_topo.pl writes it)."""
    w = _KaldiWriter(False)
    _write_topology(w, topology)
    return b"".join(w.parts).decode().strip() + "\n"


def _read_text_states(r: _KaldiReader) -> tuple[HmmState, ...]:
    states: list[HmmState] = []
    while (word := r.word()) != b"</TopologyEntry>":
        if word != b"<State>":
            raise r.fail(f"expected <State> or </TopologyEntry>, found {_show(word)}")
        if r.int32() != len(states):
            raise r.fail(f"HMM states must be numbered in order from 0 (expected {len(states)})")
        forward = loop = -1
        word = r.word()
        if word == b"<PdfClass>":
            forward = loop = r.int32()
            word = r.word()
        elif word == b"<ForwardPdfClass>":
            forward = r.int32()
            r.expect("<SelfLoopPdfClass>")
            loop = r.int32()
            word = r.word()
        transitions = []
        while word == b"<Transition>":
            transitions.append((r.int32(), r.float32()))
            word = r.word()
        if word != b"</State>":
            raise r.fail(f"expected <Transition> or </State>, found {_show(word)}")
        states.append(HmmState(forward, loop, tuple(transitions)))
    return tuple(states)


def _write_topology(w: _KaldiWriter, topo: Topology) -> None:
    w.token("<Topology>")
    w.newline()
    separate_loops = not topo.is_hmm
    if w.binary:
        w.int_vector(topo.phones)
        w.int_vector(topo.phone2entry)
        if separate_loops:
            w.int32(-1)
        w.int32(len(topo.entries))
        for entry in topo.entries:
            w.int32(len(entry))
            for s in entry:
                w.int32(s.forward_pdf_class)
                if separate_loops:
                    w.int32(s.self_loop_pdf_class)
                w.int32(len(s.transitions))
                for dest, prob in s.transitions:
                    w.int32(dest)
                    w.float32(prob)
    else:
        for i, entry in enumerate(topo.entries):
            w.token("<TopologyEntry>")
            w.newline()
            w.token("<ForPhones>")
            w.newline()
            w.parts.append("".join(f"{p} " for p in topo.phones if topo.phone2entry[p] == i).encode())
            w.newline()
            w.token("</ForPhones>")
            w.newline()
            for j, s in enumerate(entry):
                w.token("<State>")
                w.int32(j)
                if s.forward_pdf_class >= 0 and separate_loops:
                    w.token("<ForwardPdfClass>")
                    w.int32(s.forward_pdf_class)
                    w.token("<SelfLoopPdfClass>")
                    w.int32(s.self_loop_pdf_class)
                elif s.forward_pdf_class >= 0:
                    w.token("<PdfClass>")
                    w.int32(s.forward_pdf_class)
                for dest, prob in s.transitions:
                    w.token("<Transition>")
                    w.int32(dest)
                    w.float32(prob)
                w.token("</State>")
                w.newline()
            w.token("</TopologyEntry>")
            w.newline()
    w.token("</Topology>")
    w.newline()


def read_transition_model(path: str | Path) -> TransitionModel:
    """Read the TransitionModel at the head of a Kaldi model file (GMM or nnet `final.mdl`, binary or text).

    Reading stops after </TransitionModel>; the acoustic model that follows is never read. Both the classic
    `<Triples>` layout and the newer `<Tuples>` one (separate self-loop pdf-classes) are understood.
    """
    hint = "is the file truncated, or not a Kaldi model such as exp/tri4b/final.mdl?"
    with _kaldi_object(Path(path), "the Kaldi transition model", "give the final.mdl of the ali dir", hint) as r:
        r.expect("<TransitionModel>")
        topology = _read_topology(r)
        start = r.offset
        tag = r.word()
        if tag not in (b"<Triples>", b"<Tuples>"):
            raise r.fail(f"expected <Triples> or <Tuples>, found {_show(tag)}", at=start)
        size = 4 if tag == b"<Tuples>" else 3
        tuples = []
        for _ in range(r.count("number of transition-states")):
            t = [r.int32() for _ in range(size)]
            tuples.append((t[0], t[1], t[2], t[-1]))
        r.expect(tag.replace(b"<", b"</").decode())
        r.expect("<LogProbs>")
        log_probs = r.float_vector()
        r.expect("</LogProbs>")
        r.expect("</TransitionModel>")
        try:
            return TransitionModel(topology, tuples, log_probs)
        except ValueError as e:
            raise r.fail(str(e)) from None


def read_topology(path: str | Path) -> Topology:
    """Kaldi's HmmTopology from a `topo` file (lang/topo) or from the TransitionModel of a model file."""
    hint = "give lang/topo or a final.mdl"
    with _kaldi_object(Path(path), "the HMM topology", hint, f"is it a Kaldi topo file? {hint}") as r:
        if r.peek(17) == b"<TransitionModel>":
            r.expect("<TransitionModel>")
        return _read_topology(r)


# ---------------------------------------------------------------------------------------------------------------
# Alignment archives: Kaldi int-vector archives (binary or text, gzipped or not) and plain `utt label label …`


class Labels(NamedTuple):
    """One utterance of an alignment archive: its labels (transition-ids or pdf-ids) and the file they came from."""

    utt: str
    values: np.ndarray  # int32, one per frame
    path: Path


_NUMBERED = re.compile(r"ali\.(\d+)(\.gz)?")
_INT_ELEMENT = np.dtype([("size", "u1"), ("value", "<i4")])


def alignment_files(source: str | Path) -> list[Path]:
    """The archives of `source`: an alignment dir's `ali.N.gz` (or `ali.N`) ordered by N, or the file itself."""
    source = Path(source)
    if not source.is_dir():
        if not source.exists():
            raise AsrBnError(f"alignments {source} not found (give an ali dir with ali.*.gz, or an archive)")
        return [source]
    numbered = [(int(m.group(1)), p) for p in source.iterdir() if (m := _NUMBERED.fullmatch(p.name))]
    if not numbered:
        raise AsrBnError(f"{source} has no ali.N.gz files (is it a Kaldi alignment dir such as exp/tri4b_ali_si284?)")
    return [p for _, p in sorted(numbered)]


def alignment_model(source: str | Path, model: str | Path | None, pdf_ids: bool) -> Path | None:
    """The model of the alignments in `source`: `model`, else the ali dir's final.mdl; None for pdf-ids without
    one. Transition-ids without a model are a UsageError (prep checks this before computing features)."""
    source = Path(source)
    if model is None and source.is_dir() and (source / "final.mdl").exists():
        model = source / "final.mdl"
    if model is None and not pdf_ids:
        raise UsageError(
            f"{source}: transition-id alignments need the final.mdl they were made with (none found); "
            "give --model, or --pdf-ids for pdf-id labels"
        )
    return None if model is None else Path(model)


def read_alignments(source: str | Path) -> Iterator[Labels]:
    """Every utterance of an alignment dir (`ali.N.gz` by number) or archive, as int32 labels with their file.

    Reads Kaldi int-vector archives (`ali.*.gz`, `ali-to-pdf` output) in binary or text form, gzipped or not, and the
    plain text `utt-id label label …` of other aligners. An utterance in two files is an error naming both.
    """
    seen: dict[str, Path] = {}
    for path in alignment_files(source):
        for utt, values in _parse_int_archive(_read_maybe_gzip(path), path):
            if utt in seen:
                raise AsrBnError(f"utterance {utt} appears twice: in {seen[utt]} and in {path} (remove one of them)")
            seen[utt] = path
            yield Labels(utt, values, path)


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, zlib.error) as e:
        raise AsrBnError(f"cannot read alignments {path}: {e} (truncated or corrupt gzip? re-run the alignment)") from e


def _parse_int_archive(data: bytes, path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(key, int32 vector) pairs of a Kaldi archive; each entry may be binary (`key \\0B…`) or a text line.

    A text line must end with a newline, as every writer ends it: without one the file was cut off (a truncated
    copy, a full disk), and reading on would give its utterance fewer frames without a word.
    """
    pos, end = 0, len(data)
    last = None  # the last complete utterance, for the error of a cut-off file
    while (m := _WORD.match(data, pos)) is not None:
        start, pos = m.start(1), m.end()
        if pos < end and data[pos] not in _WS:
            raise AsrBnError(f"{path}: byte {start}: utterance id longer than 4096 bytes (not an alignment archive?)")
        try:
            utt = m.group(1).decode("utf-8")
        except UnicodeDecodeError:
            raise AsrBnError(f"{path}: byte {start}: utterance id is not UTF-8 (not an alignment archive?)") from None
        if data.startswith(b" \0B", pos):
            values, pos = _binary_int_vector(data, pos + 3, path, utt)
        else:
            eol = data.find(b"\n", pos)
            if eol < 0:
                after = f" (the last complete one is {last})" if last is not None else ""
                raise AsrBnError(
                    f"{path}: byte {start}: the file ends inside the line of utterance {utt}{after}, without its "
                    "newline: the archive is cut off; re-run the alignment (or end the file with a newline if the "
                    "line is whole)"
                )
            values = _text_ints(data[pos:eol], path, pos, utt)
            pos = eol + 1
        last = utt
        yield utt, values


def _binary_int_vector(data: bytes, pos: int, path: Path, utt: str) -> tuple[np.ndarray, int]:
    where = f"{path}: byte {pos} (utterance {utt})"
    if data[pos : pos + 1] != b"\x04" or pos + 5 > len(data):
        raise AsrBnError(f"{where}: expected a binary int32 vector (truncated file, or features, not alignments?)")
    n = int.from_bytes(data[pos + 1 : pos + 5], "little", signed=True)
    pos += 5
    if n < 0 or pos + 5 * n > len(data):
        raise AsrBnError(f"{where}: vector of {n} integers does not fit in the file (truncated file?)")
    items = np.frombuffer(data, _INT_ELEMENT, count=n, offset=pos)
    if (items["size"] != 4).any():
        raise AsrBnError(f"{where}: expected 4-byte integers in the vector (not an alignment archive?)")
    return items["value"].astype(np.int32), pos + 5 * n


def _text_ints(line: bytes, path: Path, pos: int, utt: str) -> np.ndarray:
    words = line.split()
    try:
        values = np.array(words, dtype=np.int64) if words else np.zeros(0, np.int64)
    except (ValueError, OverflowError):
        bad = next((w for w in words if not _INT.fullmatch(w)), words[0])
        raise AsrBnError(
            f"{path}: byte {pos} (utterance {utt}): expected integer labels, found {_show(bad)} "
            f"(alignments are lines `utt-id label label …` or a Kaldi int-vector archive)"
        ) from None
    if values.size and (values.min() < _INT32_MIN or values.max() > _INT32_MAX):
        raise AsrBnError(f"{path}: byte {pos} (utterance {utt}): a label does not fit in 32 bits")
    return values.astype(np.int32)


def describe_alignments(
    model: str | Path,
    alignments: str | Path,
    utt: str | None = None,
    phones: str | Path | None = None,
    frame_shift_ms: float = 10.0,
) -> Iterator[str]:
    """Lines `utt start end phone` (seconds) of each phone instance, for `asr-bn ali show`.

    Phones are named from `phones` (a Kaldi phones.txt) when given, else printed as ids. With `utt`, only that
    utterance; an `utt` absent from the archives is an error.
    """
    from asr_bn.lang import read_symbol_table

    tm = read_transition_model(model)
    names = {i: name for name, i in read_symbol_table(phones).items()} if phones is not None else {}
    shift = frame_shift_ms / 1000.0
    found = False
    for entry in read_alignments(alignments):
        if utt is not None and entry.utt != utt:
            continue
        found = True
        for phone, start, end in tm.phone_segments(entry.values, f"{entry.path}, utterance {entry.utt}"):
            yield f"{entry.utt} {start * shift:.3f} {end * shift:.3f} {names.get(phone, phone)}"
        if utt is not None:
            return
    if utt is not None and not found:
        raise AsrBnError(f"utterance {utt} is not in {alignments} (check the id; without UTT, ali show lists all)")


# ---------------------------------------------------------------------------------------------------------------
# Targets joined to features


def _read_num_frames(path: Path) -> dict[str, int]:
    frames: dict[str, int] = {}
    for utt, row in read_table(path, "run `asr-bn prep` on this data dir first").items():
        if not row.rest.isdigit():
            raise AsrBnError(f"{path} line {row.line}: {row.rest!r} is not a frame count (re-run asr-bn prep)")
        frames[utt] = int(row.rest)
    return frames


def join_targets(
    data_dir: str | Path,
    source: str | Path,
    *,
    model: str | Path | None = None,
    pdf_ids: bool = False,
    num_pdfs: int | None = None,
    length_tolerance: int = 0,
) -> Report:
    """Write per-frame pdf-id targets (`pdf.ark/.scp`, int32) for a prepared data dir, and `targets_report.json`.

    `source` is a Kaldi alignment dir (`ali.N.gz` of transition-ids, with its `final.mdl` unless `model` is given)
    or an archive; `pdf_ids=True` means its labels are pdf-ids already (`ali-to-pdf` output or another aligner),
    checked against `num_pdfs`, else against the pdf count of the model when there is one, else only for being
    negative (an id outside is an error naming the file and the utterance). Frame counts must equal
    `utt2num_frames`; an utterance off by at most `length_tolerance` frames is trimmed or padded by repeating its
    last label, one further off is dropped. Drops and utterances with features but no alignment (or the reverse)
    are named in the report. The caller holds the data dir's OutputLock.
    """
    data_dir, source = Path(data_dir), Path(source)
    if length_tolerance < 0:
        raise UsageError(f"--length-tolerance must be 0 or more, not {length_tolerance}")
    frames = _read_num_frames(data_dir / "utt2num_frames")
    model = alignment_model(source, model, pdf_ids)
    check_num_pdfs(pdf_ids, num_pdfs)
    tm = read_transition_model(model) if model is not None else None
    if num_pdfs is not None and tm is not None and tm.num_pdfs != num_pdfs:
        raise UsageError(f"--num-pdfs {num_pdfs} disagrees with the {tm.num_pdfs} pdfs of {model}; give one of them")
    limit, bound = _pdf_bound(num_pdfs, tm, model)
    report = Report("targets")
    targets: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    adjusted = 0
    for utt, values, path in read_alignments(source):
        seen.add(utt)
        where = f"{path}, utterance {utt}"
        pdfs = values if pdf_ids else tm.to_pdfs(values, where)  # type: ignore[union-attr]
        if pdf_ids and values.size and (values.min() < 0 or values.max() >= limit):
            bad = int(values[(values < 0) | (values >= limit)][0])
            raise AsrBnError(
                f"{where}: pdf-id {bad} is outside 0..{limit - 1} of {bound} "
                "(targets of another model, or transition-ids? give the model they were made with, or drop --pdf-ids)"
            )
        if utt not in frames:
            report.skip(utt, "alignment but no features")
            continue
        diff = len(pdfs) - frames[utt]
        if diff and (abs(diff) > length_tolerance or not len(pdfs)):
            report.skip(utt, f"alignment length differs from the feature frames by more than {length_tolerance}")
            if len(report.notes) < 5:
                report.note(f"{utt}: {len(pdfs)} alignment frames vs {frames[utt]} feature frames")
            continue
        if diff:
            adjusted += 1
            pdfs = pdfs[: frames[utt]] if diff > 0 else np.concatenate([pdfs, np.repeat(pdfs[-1:], -diff)])
        targets[utt] = np.ascontiguousarray(pdfs, dtype=np.int32)
    for utt in frames:
        if utt not in seen:
            report.skip(utt, "features but no alignment")
    report.counts = {
        "features": len(frames), "alignments": len(seen), "written": len(targets), "trimmed_or_padded": adjusted,
    }
    if limit != _INT32_MAX:
        report.counts["num_pdfs"] = limit
    if not targets:
        raise AsrBnError(
            f"no utterance of {data_dir} got targets from {source}: "
            + "; ".join(x.strip() for x in report.lines()[1:3])
            + " (same utterance ids? same frame shift? try --length-tolerance 2)"
        )
    write_ark_scp(data_dir / "pdf.ark", data_dir / "pdf.scp", ((u, targets[u]) for u in sorted(targets)))
    report.save(data_dir / TARGETS_REPORT)
    return report


def check_num_pdfs(pdf_ids: bool, num_pdfs: int | None) -> None:
    """Refuse a `num_pdfs` bound that cannot apply (a UsageError before any work): it needs pdf-id labels and >= 1."""
    if num_pdfs is not None and (not pdf_ids or num_pdfs < 1):
        raise UsageError(f"--num-pdfs {num_pdfs} bounds pdf-id targets: give a count >= 1, with --pdf-ids")


def _pdf_bound(num_pdfs: int | None, tm: TransitionModel | None, model: str | Path | None) -> tuple[int, str]:
    """The pdf count pdf-id targets must stay below, and where it comes from (for the out-of-range error)."""
    if num_pdfs is not None:
        return num_pdfs, f"--num-pdfs {num_pdfs}"
    if tm is not None:
        return tm.num_pdfs, f"model {model}"
    return _INT32_MAX, "int32 (no model or --num-pdfs to bound them)"


# ---------------------------------------------------------------------------------------------------------------
# Priors


def count_pdfs(targets: Iterable[np.ndarray], num_pdfs: int = 0) -> np.ndarray:
    """Frames per pdf-id over all `targets` (float64): what Kaldi's `analyze-counts --counts-dim=num_pdfs` writes
    less the half frame it adds to every pdf, so a pdf never seen stays 0 and `log_priors` floors it as nnet1 does.

    The vector grows past `num_pdfs` when a larger pdf-id appears, as analyze-counts does.
    """
    counts = np.zeros(num_pdfs, dtype=np.float64)
    for labels in targets:
        labels = np.asarray(labels)
        if labels.size == 0:
            continue
        if labels.min() < 0:
            raise AsrBnError(f"negative pdf-id {int(labels.min())} among the targets (corrupt pdf.ark? re-run prep)")
        c = np.bincount(labels, minlength=len(counts))
        if len(c) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(c) - len(counts))])
        counts += c
    return counts


def write_counts(path: str | Path, counts: np.ndarray) -> None:
    """Save pdf counts as a Kaldi text vector `[ 12 0 7 ]` (what nnet-forward's --class-frame-counts reads)."""
    values = " ".join(str(int(c)) if float(c).is_integer() else repr(float(c)) for c in np.asarray(counts, np.float64))
    write_text(path, f"[ {values} ]\n")


def read_counts(path: str | Path) -> np.ndarray:
    """Read pdf counts saved by `write_counts` or Kaldi's analyze-counts (text or binary vector) as float64."""
    hint = "expected a Kaldi vector such as `[ 12 0 7 ]`; re-create it with count_pdfs"
    with _kaldi_object(Path(path), "pdf counts", "train again, or copy priors.vec", hint) as r:
        return r.float_vector().astype(np.float64)


def log_priors(counts: np.ndarray, floor: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Log prior of each pdf from its counts, and the ids of pdfs whose relative count is below `floor`.

    As Kaldi nnet1's PdfPrior (--prior-floor): floored pdfs count as `floor` in the normalization and get a huge
    log-prior, so their log-likelihood (log-posterior minus log-prior) never wins in decoding.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if counts.size == 0 or not np.isfinite(total) or total <= 0 or counts.min() < 0:
        raise AsrBnError("pdf counts are empty, negative or all zero (empty targets? re-run prep with --ali-dir)")
    rel = counts / total
    floored = np.flatnonzero(rel < floor)
    rel[floored] = floor
    logp = np.log(rel / rel.sum())
    logp[floored] = _NEVER_LOG_PRIOR
    return logp.astype(np.float32), floored


def transition_id_scores(loglikes: np.ndarray, tid2pdf: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(T, num_transition_ids) float32 scores of a (T, num_pdfs) log-likelihood matrix for a DecodableCtc (kaldi-decoder,
    kaldi-hmm-gmm), which scores transition-id k at frame t as M[t, k-1]; `tid2pdf[k]` is k's pdf (entry 0 unused)."""
    scaled = np.asarray(loglikes, dtype=np.float32) * np.float32(scale)  # scale the smaller matrix, then gather
    return scaled.take(tid2pdf[1:], axis=1)
