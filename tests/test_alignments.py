"""Kaldi transition models, alignment archives, targets joined to features, priors: against real Kaldi output
(../shared/data/yesno), kaldi_hmm_gmm's TransitionModel, and fuzzed inputs (only AsrBnError may escape)."""

from __future__ import annotations

import bisect
import gzip
import hashlib
import io
import itertools
import re
import struct
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from asr_bn.alignments import (
    HmmState,
    Topology,
    TransitionModel,
    alignment_files,
    check_num_pdfs,
    count_pdfs,
    join_targets,
    log_priors,
    read_alignments,
    read_counts,
    read_transition_model,
    write_counts,
)
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg
from asr_bn_cli.main import build_app
from conftest import run_kaldi

app = build_app()

runner = CliRunner()
TEXT_HEAD = b"<TransitionModel> <Topology> <TopologyEntry> "
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _mono(yesno: Path) -> Path:
    return yesno / "exp" / "mono"


def _digest(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def _binary_ark(items: list[tuple[str, np.ndarray]]) -> bytes:
    """A Kaldi binary int32-vector archive, as Kaldi's Int32VectorWriter writes it (via kaldiio, checked below)."""
    buf = io.BytesIO()
    for key, values in items:
        kaldiio.save_ark(buf, {key: np.asarray(values, dtype=np.int32)})
    return buf.getvalue()


def _khg_model(topo_text: str) -> khg.TransitionModel:
    """kaldi_hmm_gmm's TransitionModel for a monophone system on this topology (the reference we compare with)."""
    topo = khg.HmmTopology()
    topo.read(topo_text)
    ctx = khg.monophone_context_dependency(topo.phones, topo.get_phone_to_num_pdf_classes())
    return khg.TransitionModel(ctx, topo)


def _khg_tuples(ref: khg.TransitionModel) -> list[tuple[int, int, int, int]]:
    """kaldi_hmm_gmm exposes its tuples only as text: TransitionModelTuple(phone=1,hmm_state=0,…)."""
    return [tuple(int(v) for v in re.findall(r"=(-?\d+)", str(t))) for t in ref.tuples]  # type: ignore[misc]


def _from_khg(ref: khg.TransitionModel, topology: Topology) -> TransitionModel:
    return TransitionModel(topology, _khg_tuples(ref), np.array(ref.log_probs, dtype=np.float32))


def _assert_same_as_khg(ours: TransitionModel, ref: khg.TransitionModel) -> None:
    assert ours.num_pdfs == ref.num_pdfs
    assert ours.num_transition_ids == ref.num_transition_ids
    assert ours.num_transition_states == ref.num_transition_states
    tids = np.arange(1, ref.num_transition_ids + 1)
    assert ours.to_pdfs(tids).tolist() == [ref.transition_id_to_pdf(int(t)) for t in tids]
    assert ours.to_phones(tids).tolist() == [ref.transition_id_to_phone(int(t)) for t in tids]
    assert ours.is_self_loop(tids).tolist() == [ref.is_self_loop(int(t)) for t in tids]
    assert ours.tid_is_final[1:].tolist() == [ref.is_final(int(t)) for t in tids]
    assert ours.tid_tstate[1:].tolist() == [ref.id2state[int(t)] for t in tids]


# ---------------------------------------------------------------------------------------------------------------
# the real Kaldi run


@pytest.mark.parametrize("name", ["final.mdl", "0.mdl"])
def test_yesno_models_have_11_pdfs_and_phones_sil_y_n(yesno_root: Path, name: str) -> None:
    model = read_transition_model(_mono(yesno_root) / name)
    assert model.num_pdfs == 11
    assert model.phones == (1, 2, 3)
    assert model.num_transition_ids == 30 and model.num_transition_states == 11
    phones = dict(line.split()[::-1] for line in (yesno_root / "data/lang/phones.txt").read_text().splitlines())
    assert [phones[str(p)] for p in model.phones] == ["SIL", "Y", "N"]
    assert model.info_lines()[:4] == [
        "number of phones 3", "number of pdfs 11", "number of transition-ids 30", "number of transition-states 11",
    ]


def test_yesno_model_matches_kaldi_hmm_gmm(yesno_root: Path) -> None:
    model = read_transition_model(_mono(yesno_root) / "final.mdl")
    ref = _khg_model((yesno_root / "data/lang/topo").read_text())
    assert model.tuples == _khg_tuples(ref)
    _assert_same_as_khg(model, ref)


@pytest.mark.parametrize("method", ["to_pdfs", "to_phones", "to_hmm_states", "is_self_loop", "phone_segments"])
@pytest.mark.parametrize("tid", [0, -1, 31])
def test_transition_ids_outside_1_to_n_are_refused(yesno_root: Path, method: str, tid: int) -> None:
    """Index 0 of the tables is a placeholder (pdf -1): both bounds are checked by every accessor."""
    model = read_transition_model(_mono(yesno_root) / "final.mdl")
    with pytest.raises(AsrBnError, match=rf"u1: transition-id {tid} at frame 2 is outside 1\.\.30"):
        getattr(model, method)(np.array([1, 2, tid, 3]), "u1")


def test_yesno_binary_text_round_trip(yesno_root: Path, tmp_path: Path) -> None:
    path = _mono(yesno_root) / "final.mdl"
    model = read_transition_model(path)
    binary = model.to_kaldi(binary=True)
    assert path.read_bytes()[: len(binary)] == binary  # our binary writer reproduces Kaldi's bytes
    (tmp_path / "text.mdl").write_bytes(model.to_kaldi())
    assert (tmp_path / "text.mdl").read_bytes().startswith(b"<TransitionModel> \n<Topology> \n")
    assert read_transition_model(tmp_path / "text.mdl") == model


def test_yesno_alignments_give_transcripts_and_mfcc_lengths(yesno_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = read_transition_model(_mono(yesno_root) / "final.mdl")
    names = {"1": "SIL", "2": "Y", "3": "N"}
    lexicon = {"YES": "Y", "NO": "N"}
    text = dict(line.split(maxsplit=1) for line in (yesno_root / "data/train_yesno/text").read_text().splitlines())
    monkeypatch.chdir(yesno_root)  # the scp's ark paths are relative to the yesno folder
    scp = "data/train_yesno/data/raw_mfcc_train_yesno.1.scp"
    mfcc_frames = {utt: m.shape[0] for utt, m in kaldiio.load_scp_sequential(scp)}
    entries = list(read_alignments(_mono(yesno_root) / "ali.1.gz"))
    assert len(entries) == 31 and {e.utt for e in entries} <= set(text)
    assert len(mfcc_frames) == 8 and set(mfcc_frames) <= {e.utt for e in entries}
    # Every utterance: the frames of its wav at 8 kHz, 25 ms window, 10 ms shift, snip_edges (Kaldi's defaults).
    wavs = dict(line.split() for line in (yesno_root / "data/train_yesno/wav.scp").read_text().splitlines())
    wav_frames = {}
    for utt, path in wavs.items():
        info = sf.info(path)
        assert info.samplerate == 8000 and info.channels == 1, path
        wav_frames[utt] = 1 + (info.frames - 200) // 80
    assert {e.utt for e in entries} <= set(wav_frames)
    assert all(wav_frames[u] == n for u, n in mfcc_frames.items())  # Kaldi's own MFCCs agree on the 8 they hold
    for utt, tids, _ in entries:
        segments = model.phone_segments(tids, utt)
        assert segments[0][1] == 0 and segments[-1][2] == len(tids)
        assert all(a[2] == b[1] for a, b in zip(segments, segments[1:]))
        phones = [names[str(p)] for p, _, _ in segments if names[str(p)] != "SIL"]
        assert phones == [lexicon[w] for w in text[utt].split()], utt
        assert len(tids) == wav_frames[utt], utt
        per_frame = model.to_phones(tids)
        assert all((per_frame[s:e] == p).all() for p, s, e in segments)


def test_consecutive_identical_phones_are_split(yesno_root: Path) -> None:
    model = read_transition_model(_mono(yesno_root) / "final.mdl")
    # N (phone 3): tstates 9, 10, 11 hold tids 25/26, 27/28, 29/30 (self-loop first, then forward; 30 is final)
    reordered = [26, 25, 28, 27, 30, 29, 29] * 2  # forward first, self-loops after (Kaldi's default --reorder)
    plain = [25, 26, 27, 28, 29, 29, 30] * 2
    for tids in (reordered, plain):
        assert model.phone_segments(np.array(tids)) == [(3, 0, 7), (3, 7, 14)]
    assert model.is_self_loop(np.array([25, 26, 29, 30])).tolist() == [True, False, True, False]
    assert model.to_hmm_states(np.array([25, 27, 29])).tolist() == [0, 1, 2]


def _random_alignments(model: TransitionModel, seed: int = 0) -> dict[str, list[int]]:
    """Alignments through `model`'s HMMs: 1-5 random phones, 0-2 self-loops per state, every other one reordered
    (self-loops after the forward transition), every fifth cut off inside its last phone."""
    dest_tid = {}  # (phone, HMM state, destination state) → transition-id
    for tid in range(1, model.num_transition_ids + 1):
        first = int(np.flatnonzero(model.tid_tstate == model.tid_tstate[tid])[0])
        phone, state = int(model.tid_phone[tid]), int(model.tid_hmm_state[tid])
        dest_tid[phone, state, model.topology.entry(phone)[state].transitions[tid - first][0]] = tid
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(40):
        tids: list[int] = []
        for phone in rng.choice(model.phones, int(rng.integers(1, 6))).tolist():
            for state in range(len(model.topology.entry(phone)) - 1):
                loops, forward = [dest_tid[phone, state, state]] * int(rng.integers(0, 3)), [dest_tid[phone, state, state + 1]]
                tids += forward + loops if u % 2 == 0 else loops + forward
        out[f"u{u:02d}"] = tids[: max(1, len(tids) - int(rng.integers(1, 4)))] if u % 5 == 4 else tids
    return out


def test_phone_segments_are_ali_to_phones(yesno_root: Path, kaldi_bundle: Path, tmp_path: Path) -> None:
    """SplitToPhones as Kaldi's ali-to-phones --write-lengths splits (plain, reordered and cut-off alignments), one
    alignment at a time and laid end to end (`phone_ends`, as tree statistics use it)."""
    mdl = _mono(yesno_root) / "final.mdl"
    model = read_transition_model(mdl)
    alignments = _random_alignments(model)
    (tmp_path / "ali.txt").write_text("".join(f"{u} {' '.join(map(str, t))}\n" for u, t in alignments.items()))
    out = run_kaldi(kaldi_bundle, "ali-to-phones", "--write-lengths", mdl, f"ark,t:{tmp_path / 'ali.txt'}", "ark,t:-")
    kaldi = {u: [tuple(map(int, pair.split())) for pair in rest.split(";")]
             for u, rest in (line.split(maxsplit=1) for line in out.splitlines())}
    assert kaldi.keys() == alignments.keys()
    for utt, tids in alignments.items():
        assert [(p, e - s) for p, s, e in model.phone_segments(np.array(tids))] == kaldi[utt], utt
    lengths = [len(t) for t in alignments.values()]
    starts = np.cumsum([0] + lengths[:-1])
    ends = model.phone_ends(np.concatenate(list(alignments.values())), list(alignments), starts)
    assert ends.tolist() == [s + sum(n for _, n in kaldi[u][: i + 1]) for u, s in zip(alignments, starts)
                             for i in range(len(kaldi[u]))]
    bad = [list(t) for t in alignments.values()]
    bad[3][2] = 99
    with pytest.raises(AsrBnError, match=r"^u03: transition-id 99 at frame 2 is outside"):
        model.phone_ends(np.concatenate(bad), list(alignments), starts)


def test_alignment_archive_forms_read_alike(yesno_root: Path, tmp_path: Path) -> None:
    text = list(read_alignments(_mono(yesno_root) / "ali.1.gz"))
    items = [(e.utt, e.values) for e in text]
    binary = _binary_ark(items)
    assert binary.startswith(f"{items[0][0]} \0B\x04".encode())  # Kaldi's BasicVectorHolder layout
    (tmp_path / "ali.1").write_bytes(binary)
    (tmp_path / "ali.2.gz").write_bytes(gzip.compress(binary))
    (tmp_path / "plain.txt").write_text("".join(f"{u} {' '.join(map(str, v))}\n" for u, v in items))
    for source in (tmp_path / "ali.1", tmp_path / "ali.2.gz", tmp_path / "plain.txt"):
        got = list(read_alignments(source))
        assert [e.utt for e in got] == [u for u, _ in items]
        assert all(np.array_equal(e.values, v) and e.values.dtype == np.int32 for e, (_, v) in zip(got, items))


def test_numbered_files_are_ordered_by_number_and_duplicates_named(tmp_path: Path) -> None:
    for n in (10, 2, 1):
        (tmp_path / f"ali.{n}.gz").write_bytes(gzip.compress(f"utt{n:02d} 1 2\n".encode()))
    (tmp_path / "final.mdl").write_bytes(b"")
    assert [p.name for p in alignment_files(tmp_path)] == ["ali.1.gz", "ali.2.gz", "ali.10.gz"]
    assert [e.utt for e in read_alignments(tmp_path)] == ["utt01", "utt02", "utt10"]
    (tmp_path / "ali.3.gz").write_bytes(gzip.compress(b"utt02 1\n"))
    with pytest.raises(AsrBnError, match=r"utt02 appears twice: in .*ali\.2\.gz and in .*ali\.3\.gz"):
        list(read_alignments(tmp_path))
    assert alignment_files(tmp_path / "ali.3.gz") == [tmp_path / "ali.3.gz"]
    with pytest.raises(AsrBnError, match="has no ali.N.gz files"):
        alignment_files(tmp_path.parent)


def test_bad_labels_name_file_and_utterance(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("u1 1 2\nu2 3 x 4\n")
    with pytest.raises(AsrBnError, match=r"a\.txt: byte \d+ \(utterance u2\): expected integer labels, found 'x'"):
        list(read_alignments(tmp_path / "a.txt"))
    (tmp_path / "feats.ark").write_bytes(_binary_ark([("u1", np.array([1, 2]))])[:-3])
    with pytest.raises(AsrBnError, match=r"feats\.ark: byte \d+ \(utterance u1\).*truncated"):
        list(read_alignments(tmp_path / "feats.ark"))
    buf = io.BytesIO()
    kaldiio.save_ark(buf, {"u1": np.zeros((2, 3), np.float32)})
    (tmp_path / "floats.ark").write_bytes(buf.getvalue())
    with pytest.raises(AsrBnError, match="expected a binary int32 vector"):
        list(read_alignments(tmp_path / "floats.ark"))


# ---------------------------------------------------------------------------------------------------------------
# generated topologies: our writer → our parser, and the numbering against kaldi_hmm_gmm


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    """Kaldi-valid topologies: 1-4 entries over distinct phones, 1-5 emitting states, optional skips/self-loops,
    self-loop pdf-classes either equal to the forward ones (Triples) or separate (Tuples)."""
    phones = draw(st.lists(st.integers(1, 30), min_size=1, max_size=6, unique=True))
    n_entries = draw(st.integers(1, min(4, len(phones))))
    assignment = [i % n_entries for i in range(len(phones))]
    separate = draw(st.booleans())
    entries = []
    for _ in range(n_entries):
        n = draw(st.integers(1, 5))
        states = []
        for j in range(n):
            dests = [j] if draw(st.booleans()) else []
            dests.append(j + 1)
            if j + 2 <= n and draw(st.booleans()):
                dests.append(j + 2)
            weights = [draw(st.integers(1, 9)) for _ in dests]
            probs = [float(np.float32(w / sum(weights))) for w in weights]
            loop_class = n + j if separate and draw(st.booleans()) else j
            states.append(HmmState(j, loop_class, tuple(zip(dests, probs))))
        # keep pdf-classes contiguous from 0, as Kaldi's topology check requires
        used = sorted({s.forward_pdf_class for s in states} | {s.self_loop_pdf_class for s in states})
        renumber = {c: i for i, c in enumerate(used)}
        states = [
            HmmState(renumber[s.forward_pdf_class], renumber[s.self_loop_pdf_class], s.transitions) for s in states
        ]
        entries.append(tuple(states) + (HmmState(-1, -1, ()),))
    phone2entry = [-1] * (max(phones) + 1)
    for phone, entry in zip(phones, assignment):
        phone2entry[phone] = entry
    return Topology(tuple(sorted(phones)), tuple(phone2entry), tuple(entries))


def _topology_text(topology: Topology) -> str:
    first = topology.phones[0]
    model = TransitionModel(topology, [(first, 0, 0, 0)], np.zeros(len(topology.entry(first)[0].transitions) + 1))
    text = model.to_kaldi().decode()
    return text[text.index("<Topology>") : text.index("</Topology>") + len("</Topology>")]


@settings(max_examples=40, deadline=None)
@given(topologies())
def test_generated_topologies_round_trip_and_match_kaldi_hmm_gmm(topology: Topology) -> None:
    import tempfile

    ref = _khg_model(_topology_text(topology))
    model = _from_khg(ref, topology)
    _assert_same_as_khg(model, ref)
    text = model.to_kaldi()
    assert (b"<Tuples>" in text) == (not topology.is_hmm) and (b"<ForwardPdfClass>" in text) == (not topology.is_hmm)
    with tempfile.TemporaryDirectory() as tmp:
        for binary in (False, True):
            path = Path(tmp) / f"m{int(binary)}.mdl"
            path.write_bytes(model.to_kaldi(binary=binary) + b"<DiagGmm> trailing acoustic model never read")
            assert read_transition_model(path) == model


# ---------------------------------------------------------------------------------------------------------------
# a chain-style model (<Tuples>) in Kaldi's own layout, written by hand from Kaldi's writers, not by ours
#
# Layout from kaldi src/hmm/transition-model.cc TransitionModel::Write (<Tuples> with 4 ints per transition-state
# when !IsHmm(), i.e. when some state's forward and self-loop pdf-classes differ; <Triples> with 3 otherwise) and
# src/hmm/hmm-topology.cc HmmTopology::Write (text: <ForwardPdfClass> x <SelfLoopPdfClass> y on EVERY emitting
# state once !IsHmm(); binary: phones, phone2idx, then an int32 -1 marking the extended format, then per state
# forward and self-loop pdf-class). Basic types from src/base/io-funcs.cc / io-funcs-inl.h: WriteToken writes
# the token and one space; binary WriteBasicType writes a size byte (4) and 4 little-endian bytes; binary
# WriteIntegerVector writes one size byte, an int32 count and the raw int32s; text floats use precision 7
# (InitKaldiOutputStream). Vector<float>::Write (src/matrix/kaldi-vector.cc): binary `FV `, int32 dim, raw
# floats; text ` [ x1 x2 … ]\n`.
#
# Topology: phones 1 2 3 share a chain entry (1 emitting state, <ForwardPdfClass> 0 <SelfLoopPdfClass> 1, the
# one of src/hmm/hmm-test-utils.cc GetSimpleChainTransitionModel); phone 5 has a classic 3-state entry whose
# last state lists its forward transition before its self-loop; phone 4 has no entry. Tree: monophone with
# phones 1 and 2 sharing a root (word-position variants of one phone): pdfs (1|2, class 0) = 0,
# (1|2, class 1) = 1, (3, 0) = 2, (3, 1) = 3, (5, 0..2) = 4..6. Tuples (phone, hmm-state, forward-pdf,
# self-loop-pdf) sorted as ComputeTuples leaves them (Tuple::operator< in transition-model.h: lexicographic).
# Transition-ids (ComputeDerived): tstate by tstate, one per transition of its HMM state in topology order;
# TransitionIdToPdf is the self-loop pdf for a self-loop (destination == own state), else the forward pdf.
# Log-probs as InitializeProbs sets them: log of the topology probabilities, entry 0 unused (0).

CHAIN_TUPLES = [(1, 0, 0, 1), (2, 0, 0, 1), (3, 0, 2, 3), (5, 0, 4, 4), (5, 1, 5, 5), (5, 2, 6, 6)]
CHAIN_PROBS = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.75, 0.25, 0.75, 0.25, 0.25, 0.75]  # of transition-ids 1..12
CHAIN_TEXT = (
    b"<TransitionModel> \n"
    b"<Topology> \n"
    b"<TopologyEntry> \n"
    b"<ForPhones> \n"
    b"1 2 3 \n"
    b"</ForPhones> \n"
    b"<State> 0 <ForwardPdfClass> 0 <SelfLoopPdfClass> 1 <Transition> 0 0.5 <Transition> 1 0.5 </State> \n"
    b"<State> 1 </State> \n"
    b"</TopologyEntry> \n"
    b"<TopologyEntry> \n"
    b"<ForPhones> \n"
    b"5 \n"
    b"</ForPhones> \n"
    b"<State> 0 <ForwardPdfClass> 0 <SelfLoopPdfClass> 0 <Transition> 0 0.75 <Transition> 1 0.25 </State> \n"
    b"<State> 1 <ForwardPdfClass> 1 <SelfLoopPdfClass> 1 <Transition> 1 0.75 <Transition> 2 0.25 </State> \n"
    b"<State> 2 <ForwardPdfClass> 2 <SelfLoopPdfClass> 2 <Transition> 3 0.25 <Transition> 2 0.75 </State> \n"
    b"<State> 3 </State> \n"
    b"</TopologyEntry> \n"
    b"</Topology> \n"
    b"<Tuples> 6 \n"
    b"1 0 0 1 \n"
    b"2 0 0 1 \n"
    b"3 0 2 3 \n"
    b"5 0 4 4 \n"
    b"5 1 5 5 \n"
    b"5 2 6 6 \n"
    b"</Tuples> \n"
    b"<LogProbs> \n"
    b" [ 0 -0.6931472 -0.6931472 -0.6931472 -0.6931472 -0.6931472 -0.6931472 -0.2876821 -1.386294 -0.2876821 "
    b"-1.386294 -1.386294 -0.2876821 ]\n"
    b"</LogProbs> \n"
    b"</TransitionModel> \n"
)
NNET3_TAIL = b"<Nnet3> \ninput-node name=input dim=40\n"  # what follows in a chain final.mdl; never read


def _tok(token: str) -> bytes:
    return token.encode() + b" "


def _i32(v: int) -> bytes:
    return b"\x04" + struct.pack("<i", v)


def _f32(v: float) -> bytes:
    return b"\x04" + struct.pack("<f", v)


def _ivec(values: list[int]) -> bytes:
    return b"\x04" + struct.pack(f"<i{len(values)}i", len(values), *values)


def _state(forward: int, self_loop: int, transitions: list[tuple[int, float]]) -> bytes:
    arcs = b"".join(_i32(dest) + _f32(prob) for dest, prob in transitions)
    return _i32(forward) + _i32(self_loop) + _i32(len(transitions)) + arcs


def _chain_binary() -> bytes:
    """CHAIN_TEXT's model as Kaldi's binary writers emit it (`\\0B` header), byte by byte."""
    chain_entry = _i32(2) + _state(0, 1, [(0, 0.5), (1, 0.5)]) + _state(-1, -1, [])
    classic_entry = (
        _i32(4)
        + _state(0, 0, [(0, 0.75), (1, 0.25)])
        + _state(1, 1, [(1, 0.75), (2, 0.25)])
        + _state(2, 2, [(3, 0.25), (2, 0.75)])
        + _state(-1, -1, [])
    )
    topology = (
        _tok("<Topology>") + _ivec([1, 2, 3, 5]) + _ivec([-1, 0, 0, 0, -1, 1]) + _i32(-1) + _i32(2)
        + chain_entry + classic_entry + _tok("</Topology>")
    )  # fmt: skip
    tuples = _tok("<Tuples>") + _i32(len(CHAIN_TUPLES)) + b"".join(_i32(v) for t in CHAIN_TUPLES for v in t)
    log_probs = np.log(np.array([1.0] + CHAIN_PROBS)).astype("<f4")  # entry 0: log(1) = 0, unused
    return (
        b"\0B" + _tok("<TransitionModel>") + topology + tuples + _tok("</Tuples>")
        + _tok("<LogProbs>") + _tok("FV") + _i32(len(log_probs)) + log_probs.tobytes() + _tok("</LogProbs>")
        + _tok("</TransitionModel>")
    )  # fmt: skip


def test_kaldi_written_chain_model_text_and_binary(tmp_path: Path) -> None:
    binary = _chain_binary()
    (tmp_path / "text.mdl").write_bytes(CHAIN_TEXT + NNET3_TAIL)
    (tmp_path / "binary.mdl").write_bytes(binary + NNET3_TAIL)
    text_model = read_transition_model(tmp_path / "text.mdl")
    model = read_transition_model(tmp_path / "binary.mdl")
    # Hand-derived from Kaldi's numbering rules (see above), transition-ids 1..12:
    #   tstate 1 (1,0,0,1): 1 = 0->0 loop pdf 1, 2 = 0->1 final pdf 0;  tstate 2 (2,0,0,1): 3, 4 alike
    #   tstate 3 (3,0,2,3): 5 = loop pdf 3, 6 = final pdf 2;  tstates 4, 5 (5,0|1,...): loop then forward
    #   tstate 6 (5,2,6,6): 11 = 2->3 final pdf 6 (listed first), 12 = 2->2 loop pdf 6
    tids = np.arange(1, 13)
    for m in (model, text_model):
        assert m.num_pdfs == 7 and m.num_transition_ids == 12 and m.num_transition_states == 6
        assert m.phones == (1, 2, 3, 5) and m.tuples == CHAIN_TUPLES and not m.topology.is_hmm
        assert m.to_pdfs(tids).tolist() == [1, 0, 1, 0, 3, 2, 4, 4, 5, 5, 6, 6]
        assert m.to_phones(tids).tolist() == [1, 1, 2, 2, 3, 3, 5, 5, 5, 5, 5, 5]
        assert m.to_hmm_states(tids).tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
        assert m.is_self_loop(tids).tolist() == [True, False] * 5 + [False, True]
        assert m.tid_is_final[1:].tolist() == [False, True] * 3 + [False] * 4 + [True, False]
        assert m.tid_tstate[1:].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
        # SplitToPhones: a phone ends at its transition into the final state (self-loops precede it here)
        segments = m.phone_segments(np.array([1, 1, 2, 3, 4, 7, 8, 9, 10, 12, 12, 11]))
        assert segments == [(1, 0, 3), (2, 3, 5), (5, 5, 12)]
    assert model.log_probs.tolist() == np.log(np.array([1.0] + CHAIN_PROBS)).astype(np.float32).tolist()
    # Kaldi's text keeps 7 significant digits, so text log-probs are the decimals as written, within 1e-6
    assert text_model.log_probs[8] == np.float32(-1.386294) and text_model.log_probs[8] != model.log_probs[8]
    assert text_model.topology == model.topology and text_model.tuples == model.tuples
    assert np.allclose(text_model.log_probs, model.log_probs, rtol=1e-6, atol=0)
    assert model.to_kaldi(binary=True) == binary  # our binary writer emits Kaldi's bytes for <Tuples> too

    # kaldi-hmm-gmm (a port of Kaldi's TransitionModel) on the same topology text and tree numbers alike
    topo = khg.HmmTopology()
    topo_text = CHAIN_TEXT.decode()
    topo.read(topo_text[topo_text.index("<Topology>") : topo_text.index("</Topology>") + len("</Topology>")])
    assert not topo.is_hmm and topo.phones == [1, 2, 3, 5]
    ctx = khg.monophone_context_dependency_shared([[1, 2], [3], [5]], topo.get_phone_to_num_pdf_classes())
    ref = khg.TransitionModel(ctx, topo)
    assert _khg_tuples(ref) == CHAIN_TUPLES
    assert np.array(ref.log_probs, dtype=np.float32).tolist() == model.log_probs.tolist()
    _assert_same_as_khg(model, ref)
    _assert_same_as_khg(text_model, ref)


# ---------------------------------------------------------------------------------------------------------------
# fuzz: truncated, corrupt and foreign inputs only ever raise AsrBnError


def test_every_truncation_of_final_mdl_names_the_byte_offset(yesno_root: Path, tmp_path: Path) -> None:
    head = read_transition_model(_mono(yesno_root) / "final.mdl").to_kaldi(binary=True)
    text = read_transition_model(_mono(yesno_root) / "final.mdl").to_kaldi()
    path = tmp_path / "cut.mdl"
    for data in (head, text):
        for cut in range(0, len(data) - 1, 1 if data is head else 7):
            path.write_bytes(data[:cut])
            with pytest.raises(AsrBnError, match=r"cut\.mdl: cannot read the Kaldi transition model at byte \d+"):
                read_transition_model(path)


@FUZZ
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"\0B<TransitionModel> <Topology> ", TEXT_HEAD]))
def test_fuzz_model_reader(tmp_path: Path, data: bytes, prefix: bytes) -> None:
    path = tmp_path / "fuzz.mdl"
    path.write_bytes(prefix + data)
    try:
        read_transition_model(path)
    except AsrBnError as e:
        assert str(path) in str(e)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 800), st.integers(0, 255)), min_size=1, max_size=4))
def test_fuzz_corrupted_final_mdl(yesno_root: Path, tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    data = bytearray((_mono(yesno_root) / "final.mdl").read_bytes()[:801])
    for pos, value in flips:
        data[pos] = value
    path = tmp_path / "flipped.mdl"
    path.write_bytes(bytes(data))
    try:
        model = read_transition_model(path)
    except AsrBnError:
        return
    model.to_pdfs(np.arange(1, model.num_transition_ids + 1))  # whatever parsed is usable


@FUZZ
@given(data=st.binary(max_size=300), gz=st.booleans(), prefix=st.sampled_from([b"", b"utt \0B\x04", b"utt 4 1 "]))
def test_fuzz_alignment_and_counts_readers(tmp_path: Path, data: bytes, gz: bool, prefix: bytes) -> None:
    raw = prefix + data
    path = tmp_path / "ali.1.gz"
    path.write_bytes(gzip.compress(raw)[: len(data) + 10] if gz else raw)
    for read in (lambda: list(read_alignments(path)), lambda: read_counts(path)):
        try:
            read()
        except AsrBnError as e:
            assert str(path) in str(e)


def test_truncated_gzip_and_archive(yesno_root: Path, tmp_path: Path) -> None:
    """A gzip cut anywhere is an error naming the file. An archive (binary, or text as Kaldi's `ark,t` writes it:
    `utt 1 2 3 \\n`) cut anywhere but between two entries is an error naming the file and the utterance it cuts
    (a text line without its newline included: once read as a shorter utterance); a cut between entries, which no
    reader can tell from a shorter archive, reads exactly the entries before it."""
    path = tmp_path / "ali.1.gz"
    gz = (_mono(yesno_root) / "ali.1.gz").read_bytes()
    for cut in range(1, len(gz), 97):
        path.write_bytes(gz[:cut])
        with pytest.raises(AsrBnError, match=re.escape(str(path))):
            list(read_alignments(path))
    entries = [(e.utt, e.values[:20]) for e in read_alignments(_mono(yesno_root) / "ali.1.gz")][:3]  # every cut
    text_lines = [f"{u} {' '.join(map(str, v))} \n".encode() for u, v in entries]
    for form, blobs in (("binary", [_binary_ark([e]) for e in entries]), ("text", text_lines)):
        blob, ends = b"".join(blobs), list(itertools.accumulate(map(len, blobs)))
        for cut in range(1, len(blob) + 1):
            path.write_bytes(blob[:cut])
            whole = bisect.bisect_right(ends, cut)  # entries complete before the cut
            if cut in ends:
                assert [(e.utt, e.values.tolist()) for e in read_alignments(path)] == [
                    (u, v.tolist()) for u, v in entries[:whole]
                ], (form, cut)
                continue
            with pytest.raises(AsrBnError) as error:
                list(read_alignments(path))
            message = str(error.value)
            assert message.startswith(f"{path}: byte ") and ("cut off" in message or "truncated" in message), message
            named = re.search(r"utterance (\S+?)[ ),]", message)
            assert named and entries[whole][0].startswith(named.group(1)), (form, cut, message)
            if whole and "cut off" in message:
                assert f"the last complete one is {entries[whole - 1][0]}" in message


# ---------------------------------------------------------------------------------------------------------------
# targets joined to a prepared data dir


def _prepared(tmp_path: Path, frames: dict[str, int]) -> Path:
    out = tmp_path / "prep"
    out.mkdir()
    (out / "utt2num_frames").write_text("".join(f"{u} {n}\n" for u, n in frames.items()))
    return out


def test_join_yesno_alignments(yesno_root: Path, tmp_path: Path) -> None:
    mono = _mono(yesno_root)
    model = read_transition_model(mono / "final.mdl")
    entries = list(read_alignments(mono / "ali.1.gz"))
    frames = {e.utt: len(e.values) for e in entries[:-1]} | {"extra_utt": 50}
    data_dir = _prepared(tmp_path, frames)
    ali_dir = tmp_path / "exp_mono_ali"
    ali_dir.mkdir()
    for name in ("final.mdl", "ali.1.gz"):
        (ali_dir / name).write_bytes((mono / name).read_bytes())
    before = _digest(ali_dir / "final.mdl", ali_dir / "ali.1.gz")
    report = join_targets(data_dir, ali_dir)
    assert _digest(ali_dir / "final.mdl", ali_dir / "ali.1.gz") == before
    assert report.counts == {"features": 31, "alignments": 31, "written": 30, "trimmed_or_padded": 0, "num_pdfs": 11}
    assert dict(report.skipped) == {
        "alignment but no features": [entries[-1].utt], "features but no alignment": ["extra_utt"],
    }
    written = dict(kaldiio.load_scp_sequential(str(data_dir / "pdf.scp")))
    assert list(written) == sorted(written)
    for e in entries[:-1]:
        assert written[e.utt].dtype == np.int32 and np.array_equal(written[e.utt], model.to_pdfs(e.values))
    assert '"num_pdfs": 11' in (data_dir / "targets_report.json").read_text()


def test_join_exact_by_default_tolerance_on_request(tmp_path: Path) -> None:
    (tmp_path / "ali.txt").write_text("a 0 1 2 3 4\nb 0 1 2\nc 5 5 5 5 5 5 5 5\nd 7 7\n")
    data_dir = _prepared(tmp_path, {"a": 4, "b": 5, "c": 5, "d": 2})
    report = join_targets(data_dir, tmp_path / "ali.txt", pdf_ids=True)
    assert report.counts["written"] == 1
    assert sorted(report.skipped["alignment length differs from the feature frames by more than 0"]) == ["a", "b", "c"]
    assert any("a: 5 alignment frames vs 4 feature frames" in n for n in report.notes)
    report = join_targets(data_dir, tmp_path / "ali.txt", pdf_ids=True, length_tolerance=2)
    written = {k: v.tolist() for k, v in kaldiio.load_scp_sequential(str(data_dir / "pdf.scp"))}
    assert written == {"a": [0, 1, 2, 3], "b": [0, 1, 2, 2, 2], "d": [7, 7]}
    assert report.counts["trimmed_or_padded"] == 2
    assert report.skipped["alignment length differs from the feature frames by more than 2"] == ["c"]


def test_join_errors(yesno_root: Path, tmp_path: Path) -> None:
    mono = _mono(yesno_root)
    data_dir = _prepared(tmp_path, {"u1": 3})
    (tmp_path / "pdf.txt").write_text("u1 0 11 3\n")
    with pytest.raises(AsrBnError, match=r"pdf\.txt, utterance u1: pdf-id 11 is outside 0\.\.10 of model"):
        join_targets(data_dir, tmp_path / "pdf.txt", model=mono / "final.mdl", pdf_ids=True)
    (tmp_path / "ali.txt").write_text("u1 4 1 31\n")
    with pytest.raises(AsrBnError, match=r"ali\.txt, utterance u1: transition-id 31 at frame 2 is outside 1\.\.30"):
        join_targets(data_dir, tmp_path / "ali.txt", model=mono / "final.mdl")
    (tmp_path / "ali.txt").write_text("u1 4 0 1\n")  # transition-ids count from 1: 0 would map to pdf -1
    with pytest.raises(AsrBnError, match=r"ali\.txt, utterance u1: transition-id 0 at frame 1 is outside 1\.\.30"):
        join_targets(data_dir, tmp_path / "ali.txt", model=mono / "final.mdl")
    with pytest.raises(UsageError, match="need the final.mdl"):
        join_targets(data_dir, tmp_path / "ali.txt")
    (tmp_path / "other.txt").write_text("v1 0 0 0\n")
    with pytest.raises(AsrBnError, match="no utterance of .* got targets"):
        join_targets(data_dir, tmp_path / "other.txt", pdf_ids=True)
    assert not (data_dir / "pdf.ark").exists() and not (data_dir / "pdf.scp").exists()


def test_num_pdfs_bound_needs_pdf_ids_and_at_least_one() -> None:
    check_num_pdfs(True, 1)  # the smallest bound there is
    check_num_pdfs(False, None)
    for pdf_ids, num_pdfs in ((True, 0), (True, -3), (False, 11)):
        with pytest.raises(UsageError, match=rf"--num-pdfs {num_pdfs} bounds pdf-id targets: give a count >= 1"):
            check_num_pdfs(pdf_ids, num_pdfs)


# ---------------------------------------------------------------------------------------------------------------
# priors


def test_count_pdfs_like_analyze_counts(tmp_path: Path) -> None:
    counts = count_pdfs([np.array([0, 2, 2]), np.array([], np.int32), np.array([5])], num_pdfs=4)
    assert counts.tolist() == [1, 0, 2, 0, 0, 1]  # grows past --counts-dim like analyze-counts
    write_counts(tmp_path / "priors.vec", counts)
    assert (tmp_path / "priors.vec").read_text() == "[ 1 0 2 0 0 1 ]\n"
    assert read_counts(tmp_path / "priors.vec").tolist() == counts.tolist()
    (tmp_path / "kaldi.vec").write_bytes(b"\0BDV \x04\x03\x00\x00\x00" + np.array([3.0, 0.0, 1.0]).tobytes())
    assert read_counts(tmp_path / "kaldi.vec").tolist() == [3, 0, 1]
    (tmp_path / "kaldi.txt").write_text(" [ 1.5 2 3e2 ]\n")
    assert read_counts(tmp_path / "kaldi.txt").tolist() == [1.5, 2, 300]
    with pytest.raises(AsrBnError, match="negative pdf-id"):
        count_pdfs([np.array([1, -1])])



def test_missing_model_and_counts_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(AsrBnError, match=r"cannot open the Kaldi transition model .*final\.mdl: .*\(give the final"):
        read_transition_model(tmp_path / "final.mdl")
    with pytest.raises(AsrBnError, match=r"cannot open pdf counts .*priors\.vec: .*\(train again"):
        read_counts(tmp_path / "priors.vec")

def test_log_priors_floor_unseen_pdfs() -> None:
    logp, floored = log_priors(np.array([30.0, 0.0, 10.0, 0.0]))
    assert floored.tolist() == [1, 3]
    assert np.allclose(logp[[0, 2]], np.log([0.75, 0.25]), atol=1e-6)
    assert (logp[floored] > 1e30).all()  # as Kaldi nnet1: log-likelihood of an unseen pdf is effectively -inf
    with pytest.raises(AsrBnError, match="all zero"):
        log_priors(np.zeros(3))


# ---------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_ali_info_and_show(yesno_root: Path) -> None:
    mono = _mono(yesno_root)
    result = runner.invoke(app, ["ali", "info", str(mono / "final.mdl")])
    assert result.exit_code == 0, result.output
    assert "number of pdfs 11" in result.output and "number of transition-ids 30" in result.output
    result = runner.invoke(app, ["ali", "show", str(mono / "final.mdl"), str(mono / "ali.1.gz"), "0_0_0_0_1_1_1_1",
                                 "--phones", str(yesno_root / "data/lang/phones.txt")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "0_0_0_0_1_1_1_1 0.000 0.840 SIL"
    assert [line.split()[3] for line in lines if line.split()[3] != "SIL"] == ["N"] * 4 + ["Y"] * 4
    result = runner.invoke(app, ["ali", "show", str(mono / "final.mdl"), str(mono / "ali.1.gz"), "nope"])
    assert result.exit_code == 1 and "utterance nope is not in" in result.output


def test_cli_truncated_model_error_names_byte_offset(yesno_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "final.mdl"
    path.write_bytes((_mono(yesno_root) / "final.mdl").read_bytes()[:500])
    before = _digest(path)
    result = runner.invoke(app, ["ali", "info", str(path)])
    assert result.exit_code == 1
    message = r"error: .*final\.mdl: cannot read the Kaldi transition model at byte \d+: .*truncated"
    assert re.search(message, result.output)
    assert "Traceback" not in result.output and _digest(path) == before
    path.write_text("<Nnet3> something else\n")
    result = runner.invoke(app, ["ali", "info", str(path)])
    assert result.exit_code == 1 and "at byte 0: expected <TransitionModel>, found '<Nnet3>'" in result.output


# ---------------------------------------------------------------------------------------------------------------
# `asr-bn prep kaldi --ali-dir` (issue 8 rows 10-12 through the CLI)


def _ali_dir(yesno_root: Path, tmp_path: Path, edit: dict[str, list[int]] | None = None) -> Path:
    """A copy of exp/mono (final.mdl, ali.1.gz) with some utterances' alignments replaced by `edit`."""
    mono, ali = _mono(yesno_root), tmp_path / "mono_ali"
    ali.mkdir()
    (ali / "final.mdl").write_bytes((mono / "final.mdl").read_bytes())
    labels = {e.utt: e.values.tolist() for e in read_alignments(mono)} | (edit or {})
    lines = [f"{utt} {' '.join(map(str, values))}\n" for utt, values in labels.items()]
    (ali / "ali.1.gz").write_bytes(gzip.compress("".join(lines).encode()))
    return ali


def _prep_yesno(yesno_root: Path, tmp_path: Path, *options: str) -> tuple[object, Path]:
    conf = tmp_path / "fbank.conf"
    conf.write_text("--sample-frequency=8000\n--num-mel-bins=23\n")
    out = tmp_path / "prep"
    args = ["prep", "kaldi", str(yesno_root / "data/train_yesno"), str(out), "--config", str(conf), "--dither", "0"]
    return runner.invoke(app, [*args, *options]), out


def test_cli_prep_ali_dir_writes_targets(yesno_root: Path, tmp_path: Path) -> None:
    ali = _ali_dir(yesno_root, tmp_path)
    before = _digest(ali / "final.mdl", ali / "ali.1.gz")
    result, out = _prep_yesno(yesno_root, tmp_path, "--ali-dir", str(ali))
    assert result.exit_code == 0, result.output
    assert "targets: features 31, alignments 31, written 31, trimmed_or_padded 0, num_pdfs 11" in result.output
    model = read_transition_model(ali / "final.mdl")
    targets = dict(kaldiio.load_scp_sequential(str(out / "pdf.scp")))
    frames = dict(line.split() for line in (out / "utt2num_frames").read_text().splitlines())
    for e in read_alignments(ali):
        assert np.array_equal(targets[e.utt], model.to_pdfs(e.values)) and len(e.values) == int(frames[e.utt])
    assert _digest(ali / "final.mdl", ali / "ali.1.gz") == before


def test_cli_prep_alignment_length_mismatch_dropped_or_trimmed(yesno_root: Path, tmp_path: Path) -> None:
    entries = {e.utt: e.values.tolist() for e in read_alignments(_mono(yesno_root))}
    longer, shorter = sorted(entries)[:2]
    ali = _ali_dir(yesno_root, tmp_path, {longer: entries[longer] + [17, 17], shorter: entries[shorter][:-1]})
    result, out = _prep_yesno(yesno_root, tmp_path, "--ali-dir", str(ali))
    assert result.exit_code == 0, result.output
    assert "written 29" in result.output
    reason = "alignment length differs from the feature frames by more than 0"
    assert f"skipped 2 ({reason}): {longer} {shorter}" in result.output
    assert set(kaldiio.load_scp(str(out / "pdf.scp"))) == set(entries) - {longer, shorter}
    result, out = _prep_yesno(yesno_root, tmp_path, "--ali-dir", str(ali), "--length-tolerance", "2")
    assert result.exit_code == 0, result.output
    assert "already done" in result.output and "written 31, trimmed_or_padded 2" in result.output
    targets = kaldiio.load_scp(str(out / "pdf.scp"))
    frames = dict(line.split() for line in (out / "utt2num_frames").read_text().splitlines())
    assert all(len(targets[u]) == int(frames[u]) for u in entries)
    assert targets[shorter][-1] == targets[shorter][-2]  # padded by repeating the last label


def test_cli_prep_foreign_alignments_and_model_are_errors(yesno_root: Path, tmp_path: Path) -> None:
    utt = sorted(e.utt for e in read_alignments(_mono(yesno_root)))[3]
    ali = _ali_dir(yesno_root, tmp_path, {utt: [4, 1, 31]})
    before = _digest(ali / "final.mdl", ali / "ali.1.gz")
    result, out = _prep_yesno(yesno_root, tmp_path, "--ali-dir", str(ali))
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"ali.1.gz, utterance {utt}: transition-id 31 at frame 2 is outside 1..30" in errors[0]
    assert not (out / "pdf.ark").exists() and not (out / "pdf.scp").exists()
    assert (out / "report.json").is_file() and _digest(ali / "final.mdl", ali / "ali.1.gz") == before
    (ali / "final.mdl").write_bytes((ali / "final.mdl").read_bytes()[:300])
    result, out = _prep_yesno(yesno_root, tmp_path, "--ali-dir", str(ali))
    assert result.exit_code == 1
    assert re.search(r"final\.mdl: cannot read the Kaldi transition model at byte \d+", result.output)
    assert not (out / "pdf.ark").exists()
    result, _ = _prep_yesno(yesno_root, tmp_path, "--ali-dir", str(tmp_path / "missing"))
    assert result.exit_code == 1 and "alignments" in result.output and "not found" in result.output


def test_cli_prep_wsj_joins_default_alignment_dirs(yesno_root: Path, tmp_path: Path) -> None:
    s5 = tmp_path / "s5"
    wavs = [line.split() for line in (yesno_root / "data/train_yesno/wav.scp").read_text().splitlines()]
    dev_utts = [utt for utt, _ in wavs[:5]]
    for name, utts in (("train_si284", [u for u, _ in wavs]), ("test_dev93", dev_utts)):
        data = s5 / "data" / name
        data.mkdir(parents=True)
        for f in ("text", "utt2spk"):
            lines = (yesno_root / "data/train_yesno" / f).read_text().splitlines()
            (data / f).write_text("".join(f"{line}\n" for line in lines if set(line.split()) & set(utts)))
        (data / "wav.scp").write_text("".join(f"{utt} {yesno_root / path}\n" for utt, path in wavs if utt in utts))
    (s5 / "exp").mkdir()
    _ali_dir(yesno_root, tmp_path).rename(s5 / "exp" / "tri4b_ali_si284")
    # The dev alignments differ from the train ones (all frames in state 1 of SIL = pdf 0), so the targets of
    # test_dev93 show which dir they came from.
    entries = {e.utt: e.values for e in read_alignments(_mono(yesno_root))}
    dev_ali = {u: [1] * len(entries[u]) for u in dev_utts}
    (s5 / "exp" / "tri4b_ali_dev93").mkdir()
    (s5 / "exp" / "tri4b_ali_dev93" / "final.mdl").write_bytes((_mono(yesno_root) / "final.mdl").read_bytes())
    text = "".join(f"{u} {' '.join(map(str, v))}\n" for u, v in dev_ali.items())
    (s5 / "exp" / "tri4b_ali_dev93" / "ali.1.gz").write_bytes(gzip.compress(text.encode()))
    out = tmp_path / "prep"
    both = ["prep", "wsj", str(s5), str(out), "--sets", "train_si284,test_dev93", "--sample-frequency", "8000",
            "--dither", "0"]  # fmt: skip
    result = runner.invoke(app, both)
    assert result.exit_code == 0, result.output
    assert "targets: features 31, alignments 31, written 31" in result.output
    assert "targets: features 5, alignments 5, written 5" in result.output
    model = read_transition_model(_mono(yesno_root) / "final.mdl")
    train_targets = kaldiio.load_scp(str(out / "train_si284" / "pdf.scp"))
    assert len(train_targets) == 31
    assert all(np.array_equal(train_targets[u], model.to_pdfs(v)) for u, v in entries.items())
    dev_targets = dict(kaldiio.load_scp_sequential(str(out / "test_dev93" / "pdf.scp")))
    assert sorted(dev_targets) == sorted(dev_utts)
    assert all(v.tolist() == [0] * len(entries[u]) for u, v in dev_targets.items())  # from exp/tri4b_ali_dev93
    # --pdf-ids reaches each set's join, bounded by its final.mdl: these transition-ids (up to 30) are refused.
    result = runner.invoke(app, [*both, "--pdf-ids"])
    assert result.exit_code == 1
    assert re.search(r"error: .*tri4b_ali_si284/ali\.1\.gz, utterance \S+: pdf-id \d+ is outside 0\.\.10 of model",
                     result.output), result.output  # fmt: skip
    args = ["prep", "wsj", str(s5), str(out), "--sets", "train_si284", "--sample-frequency", "8000", "--dither", "0"]
    result = runner.invoke(app, [*args, "--ali-dir", "exp/tri4b_ali_si284"])
    assert result.exit_code == 2 and "--ali-dir takes SET=DIR" in result.output
    result = runner.invoke(app, [*args, "--ali-dir", f"test_dev93={s5 / 'exp' / 'tri4b_ali_si284'}"])
    assert result.exit_code == 2 and "not among --sets train_si284" in result.output


def test_cli_prep_pdf_id_archives(yesno_root: Path, tmp_path: Path) -> None:
    """Already-converted targets (ali-to-pdf output, binary; another aligner's `utt pdf pdf …` text) joined with
    --pdf-ids, bounded by --num-pdfs or --model; an id outside is one line naming the file and the utterance."""
    mono = _mono(yesno_root)
    model = read_transition_model(mono / "final.mdl")
    pdfs = {e.utt: model.to_pdfs(e.values) for e in read_alignments(mono)}
    binary = tmp_path / "pdf.ark"
    binary.write_bytes(_binary_ark(list(pdfs.items())))
    assert binary.read_bytes().startswith(f"{next(iter(pdfs))} \0B\x04".encode())  # Kaldi's binary int vectors
    result, out = _prep_yesno(yesno_root, tmp_path, "--ali-dir", str(binary), "--pdf-ids", "--num-pdfs", "11")
    assert result.exit_code == 0, result.output
    assert "targets: features 31, alignments 31, written 31, trimmed_or_padded 0, num_pdfs 11" in result.output
    written = dict(kaldiio.load_scp_sequential(str(out / "pdf.scp")))
    assert written.keys() == pdfs.keys() and all(np.array_equal(written[u], v) for u, v in pdfs.items())
    features = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name.startswith(("feats", "report"))}

    utt = sorted(pdfs)[5]
    text = tmp_path / "other_aligner.txt"
    bad = pdfs | {utt: np.concatenate([pdfs[utt][:-1], [11]])}
    text.write_text("".join(f"{u} {' '.join(map(str, v))}\n" for u, v in bad.items()))
    for bound, source in (("--num-pdfs", "11"), ("--model", str(mono / "final.mdl"))):
        result, _ = _prep_yesno(yesno_root, tmp_path, "--ali-dir", str(text), "--pdf-ids", bound, source)
        assert result.exit_code == 1
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        where = "--num-pdfs 11" if bound == "--num-pdfs" else f"model {mono / 'final.mdl'}"
        assert len(errors) == 1 and f"other_aligner.txt, utterance {utt}: pdf-id 11 is outside 0..10 of {where}" in (
            errors[0]
        ), result.output
        assert "drop --pdf-ids" in errors[0]
    assert np.array_equal(kaldiio.load_scp(str(out / "pdf.scp"))[utt], pdfs[utt])  # the earlier targets stay

    text.write_text("".join(f"{u} {' '.join(map(str, v))}\n" for u, v in pdfs.items()))
    model_option = ["--model", str(mono / "final.mdl")]
    result, _ = _prep_yesno(yesno_root, tmp_path, "--ali-dir", str(text), "--pdf-ids", *model_option)
    assert result.exit_code == 0, result.output
    assert "already done" in result.output and "written 31, trimmed_or_padded 0, num_pdfs 11" in result.output
    assert {n: (out / n).stat().st_mtime_ns for n in features} == features  # features kept, targets joined again
    whole, last = text.read_bytes(), list(pdfs)[-1]
    text.write_bytes(whole[: whole.rindex(b" ")])  # cut inside the last line, as a partial copy or a full disk does
    result, _ = _prep_yesno(yesno_root, tmp_path, "--ali-dir", str(text), "--pdf-ids", *model_option)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    at = whole.rindex(last.encode())
    assert f"other_aligner.txt: byte {at}: the file ends inside the line of utterance {last}" in errors[0]
    assert "cut off" in errors[0]
    assert np.array_equal(kaldiio.load_scp(str(out / "pdf.scp"))[last], pdfs[last])  # the earlier targets stay
    for options, message in ((["--pdf-ids"], "give --ali-dir too"),
                             (["--ali-dir", str(text), "--num-pdfs", "11"], "with --pdf-ids")):  # fmt: skip
        result, _ = _prep_yesno(yesno_root, tmp_path, *options)
        assert result.exit_code == 2 and message in result.output, result.output
    result, _ = _prep_yesno(yesno_root, tmp_path, "--ali-dir", str(text), "--pdf-ids", "--num-pdfs", "12",
                            *model_option)  # fmt: skip
    assert result.exit_code == 2 and "--num-pdfs 12 disagrees with the 11 pdfs of" in result.output
