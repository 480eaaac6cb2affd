"""Alignments of one model carried over to another with a new tree, as Kaldi's `convert-ali`, and alignments
read with their model, checked to be of that model and tree (`read_model_alignments`).

Each frame keeps its phone, HMM state and transition (self-loop or forward); only the pdfs change: they come from
the new tree asked about the phone in its context (the neighbouring phone instances of the same alignment).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from asr_bn.alignments import Labels, TransitionModel, read_alignments, read_transition_model
from asr_bn.alignments.transition_model import is_reordered
from asr_bn.errors import AsrBnError
from asr_bn.gmm.event_map import EventMap, EventMapper, map_events, read_tree_map
from asr_bn.gmm.tree_stats import PDF_CLASS, context_phones, pdf_classes, phone_instances


def read_model_alignments(source: str | Path, model: str | Path) -> tuple[TransitionModel, list[Labels]]:
    """The TransitionModel of `model` and every utterance of the alignments in `source` (an ali dir or archive),
    checked to be of that model: paths through its HMMs (`TransitionModel.check_paths`) whose pdfs are those its
    `tree` (beside it, if there) gives each phone in its context (`check_tree_contexts`). What the GMM rungs and
    tree statistics read: alignments of another model or tree, whose transition-ids often lie within the model's
    range, are refused in one line before anything is trained from them."""
    tm = read_transition_model(model)
    labels = list(read_alignments(source))
    if labels:
        tids = np.concatenate([x.values for x in labels])
        where = [f"{x.path}, utterance {x.utt}" for x in labels]
        starts = np.cumsum([0] + [len(x.values) for x in labels[:-1]])
        tm.check_paths(tids, where, starts, str(model))
        tree = Path(model).parent / "tree"
        if tree.is_file():
            check_tree_contexts(tm, tree, tids, where, starts, str(model))
    return tm, labels


def check_tree_contexts(tm: TransitionModel, tree_path: Path, tids: np.ndarray, where: Sequence[str],
                        starts: np.ndarray, model: str) -> None:
    """Refuse, in one line naming the utterance and frame, alignments (valid paths, laid end to end from `starts`)
    in which a frame's pdf is not the one the tree gives its phone in its context and its pdf-class: what an
    alignment graph of this tree never yields, and alignments of another tree with the same HMM structure do. The
    contexts are the neighbouring phone instances of the same alignment (0 at its ends), as convert-ali asks."""
    tree, width, central = read_tree_map(tree_path)
    first, ends, phone = phone_instances(tm, tids, where, starts)
    base = max(tm.phones) + 1
    context = np.zeros(len(ends), np.int64)  # each instance's context, coded in base `base`
    for neighbour in context_phones(phone, first, starts, width, central):
        context = context * base + neighbour
    classes = pdf_classes(tm)
    n_classes = int(classes.max()) + 1
    contexts, which = np.unique(context, return_inverse=True)  # per phone instance: few distinct contexts
    columns = {PDF_CLASS: np.tile(np.arange(n_classes), len(contexts))}  # every (context, pdf-class) pair
    rest = np.repeat(contexts, n_classes)
    for j in reversed(range(width)):
        columns[j] = rest % base
        rest //= base
    pair = np.repeat(which.reshape(-1), ends - first) * n_classes + classes[tids]  # each frame's pair
    want = map_events(tree, columns)[pair]
    bad = want != tm.tid_pdf[tids]
    if bad.any():
        i = int(np.argmax(bad))
        u = int(np.searchsorted(starts, i, "right")) - 1
        at = int(np.searchsorted(ends, i, "right"))
        shown = " ".join(str(int(columns[j][pair[i]])) for j in range(width))
        raise AsrBnError(
            f"{where[u]}: frame {i - int(starts[u])} (phone {phone[at]} in context {shown}) has pdf "
            f"{tm.tid_pdf[tids[i]]}, but the tree beside {model} gives "
            + (f"pdf {want[i]}" if want[i] >= 0 else "none") + "; these alignments were made with another model or "
            "tree: realign with this model, or give the ali dir of the model that made them"
        )


class AlignmentConverter:
    """Maps transition-ids of `old` to those of `new` (whose pdfs come from `tree`), utterance by utterance."""

    def __init__(self, old: TransitionModel, new: TransitionModel, tree: EventMap, context_width: int = 3,
                 central_position: int = 1, reorder: bool = True) -> None:
        if old.topology != new.topology:
            raise AsrBnError("the two models have different HMM topologies; convert-ali needs the same topology")
        self.old, self.new, self.mapper = old, new, EventMapper(tree)
        self.width, self.central, self.reorder = context_width, central_position, reorder
        tuples = np.array(new.tuples, np.int64)
        self._base = int(tuples.max()) + 2
        keys = self._key(tuples[:, 0], tuples[:, 1], tuples[:, 2], tuples[:, 3])
        self._order = np.argsort(keys)
        self._keys = keys[self._order]
        first = np.full(new.num_transition_states + 2, 0, np.int64)
        for tid in range(new.num_transition_ids, 0, -1):
            first[new.tid_tstate[tid]] = tid
        self.first_tid = first
        old_first = np.zeros(old.num_transition_states + 2, np.int64)
        for tid in range(old.num_transition_ids, 0, -1):
            old_first[old.tid_tstate[tid]] = tid
        self.old_index = np.arange(old.num_transition_ids + 1) - old_first[old.tid_tstate]  # transition index
        states = [old.topology.entry(int(p))[int(h)] for p, h in zip(old.tid_phone[1:], old.tid_hmm_state[1:])]
        self.forward_class = np.array([-1] + [st.forward_pdf_class for st in states], np.int64)  # per old tid
        self.loop_class = np.array([-1] + [st.self_loop_pdf_class for st in states], np.int64)

    def _key(self, phone: np.ndarray, state: np.ndarray, forward: np.ndarray, loop: np.ndarray) -> np.ndarray:
        b = self._base
        return ((phone * b + state) * b + forward) * b + loop

    def __call__(self, utt: str, tids: np.ndarray) -> np.ndarray:
        """The new model's transition-ids for `tids` (same length)."""
        tids = np.asarray(tids, dtype=np.int64)
        segments = self.old.phone_segments(tids, where=f"alignment of {utt}")
        phones = np.array([p for p, _, _ in segments], np.int64)
        padded = np.concatenate([np.zeros(self.central, np.int64), phones,
                                 np.zeros(self.width - 1 - self.central, np.int64)])
        seg = np.repeat(np.arange(len(segments)), [e - s for _, s, e in segments])
        states = self.old.tid_hmm_state[tids].astype(np.int64)
        phone = self.old.tid_phone[tids].astype(np.int64)
        rows = np.stack([padded[j : j + len(segments)][seg] for j in range(self.width)]
                        + [self.forward_class[tids], self.loop_class[tids]], axis=1)
        unique, inverse = np.unique(rows, axis=0, return_inverse=True)
        event_keys = (PDF_CLASS, *range(self.width))

        def pdfs(column: int) -> np.ndarray:
            """The new pdf of every frame for its pdf-class in `column` (0: forward, 1: self-loop)."""
            per_row = [self.mapper(tuple(zip(event_keys, (u[self.width + column], *u[: self.width]))))
                       for u in unique.tolist()]
            return np.array(per_row, np.int64)[inverse.reshape(-1)]

        forward, loop = pdfs(0), pdfs(1)
        keys = self._key(phone, states, forward, loop)
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        bad = (self._keys[at] != keys) | (forward < 0) | (loop < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise AsrBnError(f"utterance {utt}: frame {i} (phone {phone[i]}, HMM state {states[i]}) has no "
                             f"transition-state in the new model (is the tree made for this topology and these phones?)")
        out = self.first_tid[self._order[at] + 1] + self.old_index[tids]
        old_tstate = self.old.tid_tstate[tids]
        if is_reordered(old_tstate, self.old.tid_is_self_loop[tids]) != self.reorder:
            out = np.array(_toggle_reordering(out.tolist(), [(s, e) for _, s, e in segments], self.new), np.int64)
        return out


def _toggle_reordering(tids: list[int], segments: list[tuple[int, int]], tm: TransitionModel) -> list[int]:
    """Kaldi's ChangeReorderingOfAlignment on each phone's tids[start:end]: in each run of one transition-state,
    swap its first and last transition, which moves the forward transition across the self-loops."""
    tstate, loop = tm.tid_tstate[tids].tolist(), tm.tid_is_self_loop[tids].tolist()
    for start, end in segments:
        pos = start
        while pos != end:
            first_is_loop = loop[pos]
            stop = pos + 1
            while stop != end and tstate[stop] == tstate[pos]:
                if not loop[stop]:
                    stop += first_is_loop  # a forward transition ends a run that starts with self-loops
                    break
                stop += 1
            tids[pos], tids[stop - 1] = tids[stop - 1], tids[pos]
            pos = stop
    return tids
