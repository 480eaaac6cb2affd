"""Kaldi's HmmTopology and TransitionModel (src/hmm/hmm-topology.cc, transition-model.cc), read and written as Kaldi
does: transition-ids 1-based, pdf-ids and HMM states 0-based; `to_pdfs` is ali-to-pdf, `phone_segments`
ali-to-phones, `info_lines` hmm-info."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from asr_bn.errors import AsrBnError
from asr_bn.kaldi_binary import KaldiReader, KaldiWriter, kaldi_object, show_word


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
        w = KaldiWriter(binary)
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


def is_reordered(tstate: np.ndarray, loop: np.ndarray) -> bool:
    """Kaldi's IsReordered: whether self-loops follow (reordered) or precede the forward transition of a state."""
    return bool(_reordered(tstate, loop, np.array([0, len(tstate)]))[0])


def _reordered(tstate: np.ndarray, loop: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """`is_reordered` of each alignment `tstate[bounds[u]:bounds[u + 1]]` laid end to end: the first state change
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


def _read_topology(r: KaldiReader) -> Topology:
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
                raise r.fail(f"expected <TopologyEntry> or </Topology>, found {show_word(word)}")
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
    w = KaldiWriter(False)
    _write_topology(w, topology)
    return b"".join(w.parts).decode().strip() + "\n"


def _read_text_states(r: KaldiReader) -> tuple[HmmState, ...]:
    states: list[HmmState] = []
    while (word := r.word()) != b"</TopologyEntry>":
        if word != b"<State>":
            raise r.fail(f"expected <State> or </TopologyEntry>, found {show_word(word)}")
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
            raise r.fail(f"expected <Transition> or </State>, found {show_word(word)}")
        states.append(HmmState(forward, loop, tuple(transitions)))
    return tuple(states)


def _write_topology(w: KaldiWriter, topo: Topology) -> None:
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
    with kaldi_object(Path(path), "the Kaldi transition model", "give the final.mdl of the ali dir", hint) as r:
        r.expect("<TransitionModel>")
        topology = _read_topology(r)
        start = r.offset
        tag = r.word()
        if tag not in (b"<Triples>", b"<Tuples>"):
            raise r.fail(f"expected <Triples> or <Tuples>, found {show_word(tag)}", at=start)
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
    with kaldi_object(Path(path), "the HMM topology", hint, f"is it a Kaldi topo file? {hint}") as r:
        if r.peek(17) == b"<TransitionModel>":
            r.expect("<TransitionModel>")
        return _read_topology(r)

