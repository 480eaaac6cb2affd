"""Bad input to the GMM ladder (issue 12): alignments made with another model or tree are refused in one line, and
tree leaves or Gaussians with too little data are counted and named, as Kaldi's gmm-init-model and gmm-est warn
about them; checked against Kaldi's binaries on the same inputs where the comparison is exact."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from asr_bn.alignments import HmmState, Topology, TransitionModel, read_alignments, read_topology, read_transition_model
from asr_bn.errors import AsrBnError
from asr_bn.gmm.build_tree import Questions, build_tree, read_phone_sets, read_roots
from asr_bn.gmm.event_map import write_tree
from asr_bn.gmm.tree_stats import TreeStats, read_features, read_tree_stats, write_tree_stats
from asr_bn_cli.main import build_app
import test_gmm_tree
from conftest import run_kaldi, yesno_gmm_inputs
from test_gmm_tree import Setup

app = build_app()
synth, synth_tri1, yesno = test_gmm_tree.synth, test_gmm_tree.synth_tri1, test_gmm_tree.yesno  # shared fixtures
synth_tri2, synth_tri3 = test_gmm_tree.synth_tri2, test_gmm_tree.synth_tri3


def _kaldi_warnings(bundle: Path, *args: str | Path) -> str:
    """Run one Kaldi binary of the bundle and return its stderr (its warnings); a failure fails the test."""
    env = {**os.environ, "PATH": f"{bundle / 'bin'}:{os.environ['PATH']}", "LC_ALL": "C", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stderr


# ---------------------------------------------------------------------------------------------------------------------
# Alignments of another model or tree


def _toy_model() -> TransitionModel:
    """Two phones whose HMM has a non-emitting state in the middle (Kaldi allows one, though not into the final
    state): 0 (loop) → 1 (non-emitting) → 2 (loop) → final. Transition-ids: phone 1 state 0: 1 loop, 2 forward;
    state 2: 3 loop, 4 final; phone 2 likewise 5 … 8."""
    entry = (HmmState(0, 0, ((0, 0.5), (1, 0.5))), HmmState(-1, -1, ((2, 1.0),)), HmmState(1, 1, ((2, 0.5), (3, 0.5))),
             HmmState(-1, -1, ()))
    topology = Topology((1, 2), (-1, 0, 0), (entry,))
    tuples = [(1, 0, 0, 0), (1, 2, 1, 1), (2, 0, 2, 2), (2, 2, 3, 3)]
    return TransitionModel(topology, tuples, np.zeros(9))


@pytest.mark.parametrize("tids, problem", [
    ([2, 1, 1, 4, 3, 6, 5, 8], None),  # reordered (self-loops after the forward transition), as Kaldi aligns
    ([1, 1, 2, 3, 4, 5, 6, 8], None),  # not reordered
    ([2, 4, 2, 4], None),  # the same phone twice
    ([4, 3], "starts a phone (1) in HMM state 2"),
    ([2, 1, 6, 8], "goes from transition-id 1 (HMM state 0 of phone 1) to 6 (HMM state 0 of phone 2)"),
    ([2, 1, 3, 4], "goes from transition-id 1 (HMM state 0 of phone 1) to 3"),  # reordered: a state's forward first
    ([1, 3, 4], "starts a phone (1) in HMM state 0 with a self-loop"),  # read as reordered: its loop comes last
    ([1, 2, 3, 3, 4], None),
    ([1, 2, 3, 5, 6, 8], "goes from transition-id 3 (HMM state 2 of phone 1) to 5"),  # a self-loop, then
    ([2, 4, 7, 8], "goes from transition-id 4 (HMM state 2 of phone 1) to 7 (HMM state 2 of phone 2)"),  # not 0
    ([2, 1, 1], "ends the alignment inside phone 1"),
    ([2, 4, 3, 3], None),  # the self-loops of the final transition's state follow it
])
def test_paths_through_the_hmms(tids: list[int], problem: str | None) -> None:
    """Every rule of a path through the topology (`TransitionModel.check_paths`), on a topology with a
    non-emitting state, one alignment alone and laid end to end with a valid one."""
    tm = _toy_model()
    good = [2, 1, 4, 6, 8]
    names = ["a.ark, utterance ok", "a.ark, utterance x"]
    for where, values, starts in (("a.ark, utterance x", tids, None), (names, good + tids, np.array([0, len(good)]))):
        if problem is None:
            tm.check_paths(np.array(values), where, starts, "toy.mdl")
            continue
        with pytest.raises(AsrBnError) as e:
            tm.check_paths(np.array(values), where, starts, "toy.mdl")
        message = str(e.value)
        assert message.startswith("a.ark, utterance x: frame ") and problem in message, message
        assert "made with another model or tree: realign with this model, or give the ali dir" in message
        assert "\n" not in message


def test_genuine_alignments_are_paths(synth: Setup, yesno: Setup) -> None:
    """Kaldi's own alignments (yesno's, the synthesized corpus's) and Kaldi's convert-ali output to a triphone
    model, reordered or not, are paths through their models' HMMs with the pdfs of their trees. The monophone ones
    read with the triphone model are not, but for one utterance (of 40): its transition-ids, shifted by whole phones
    that the tree left unsplit, read as a valid path of other phones, which no check of model and tree can tell."""
    from asr_bn.gmm.convert import read_model_alignments

    for setup in (yesno, synth):
        _, labels = read_model_alignments(setup.ali, setup.model)
        assert len(labels) > 10
    work = synth.work / "genuine"
    work.mkdir(exist_ok=True)
    shutil.copy(synth.kaldi_tree(synth.kaldi_questions, "--max-leaves=60"), work / "tree")
    run_kaldi(synth.bundle, "gmm-init-model", work / "tree", synth.kaldi_acc, synth.topo, work / "final.mdl")
    for reorder in ("true", "false"):
        run_kaldi(synth.bundle, "convert-ali", f"--reorder={reorder}", synth.model, work / "final.mdl", work / "tree",
                  f"ark:gunzip -c {synth.ali}|", f"ark:{work / f'{reorder}.ark'}")
        assert len(read_model_alignments(work / f"{reorder}.ark", work / "final.mdl")[1]) == 40
    refused = 0
    for x in read_alignments(synth.ali):
        (work / "one.ark").write_text(f"{x.utt} {' '.join(map(str, x.values))}\n")
        try:
            read_model_alignments(work / "one.ark", work / "final.mdl")
        except AsrBnError as e:
            assert "made with another model or tree" in str(e)
            refused += 1
    assert refused >= 35  # 39 of the 40 measured


def _swapped_tree(tri: Path, out: Path) -> None:
    """`tri`'s tree with two of its pdfs swapped where that leaves the model's transition-states as they are (two
    pdfs of the same phones and HMM states): another tree of the same HMM structure, written to `out`."""
    from asr_bn.gmm.event_map import read_tree_map, relabel

    tm = read_transition_model(tri / "final.mdl")
    states: dict[int, set[tuple[int, int]]] = {}
    for phone, state, pdf, _ in tm.tuples:
        states.setdefault(pdf, set()).add((phone, state))
    a, b = next((a, b) for a in states for b in states if a < b and states[a] == states[b])
    tree, width, central = read_tree_map(tri / "tree")
    write_tree(out, relabel(tree, {a: b, b: a}), width, central)


def test_rungs_refuse_alignments_of_another_model(synth: Setup, synth_tri1, tmp_path: Path) -> None:  # noqa: ANN001
    """The probe of issue 12: monophone ali.1.gz beside a triphone system's final.mdl and tree (no path through its
    HMMs), and the triphone system's own alignments beside another tree of the same HMM structure (pdfs the tree
    does not give). Every rung that trains from an ali dir, and tree statistics, exit 1 with one line naming the
    archive, the utterance and the fix (after a rung's line on its features); nothing is written under the output's
    final names."""
    *_, tri1, _, prep = synth_tri1
    corpus = synth.work / "corpus"
    runner = CliRunner()
    lang = corpus / "lang"
    for case, ali, problem in (("mixed", corpus / "exp" / "ali_train", "which no path through the HMMs of"),
                               ("swapped", tri1, "but the tree beside")):
        bad = tmp_path / case
        bad.mkdir()
        for name in ("final.mdl", "tree", "phones.txt", "topo"):
            shutil.copy(tri1 / name, bad / name)
        shutil.copy(ali / "ali.1.gz", bad / "ali.1.gz")
        (bad / "num_jobs").write_text("1\n")
        if case == "swapped":
            _swapped_tree(tri1, bad / "tree")
        out = tmp_path / f"{case}_out"
        for args in (
            ["gmm", "deltas", "100", "400", prep, lang, bad, out / "tri1", "--fast"],
            ["gmm", "lda-mllt", "100", "400", prep, lang, bad, out / "tri2", "--fast"],
            ["gmm", "sat", "100", "400", prep, lang, bad, out / "tri3", "--fast"],
            ["tree", "stats", bad / "final.mdl", synth.scp, bad, out / "treeacc"],
        ):
            result = runner.invoke(app, list(map(str, args)))
            assert result.exit_code == 1, (args, result.output)
            *before, line = result.output.strip().splitlines()  # before: the features' report line of a rung
            assert all(x.startswith("gmm features: ") for x in before) and "Traceback" not in result.output, before
            assert re.fullmatch(rf"error: {re.escape(str(bad / 'ali.1.gz'))}, utterance \S+: frame \d+ .*", line), line
            assert problem in line and str(bad / "final.mdl") in line, line
            assert line.endswith("made with another model or tree: realign with this model, or give the ali dir of "
                                 "the model that made them")
        assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), list(out.rglob("*"))


# ---------------------------------------------------------------------------------------------------------------------
# Leaves and Gaussians with too little data


def _rarest_phone(stats: TreeStats, ci: int) -> int:
    """The phone (not the context-independent one) with the fewest frames in the centre of its events."""
    frames: dict[int, float] = {}
    for event, count in zip(stats.events, stats.counts):
        phone = dict(event)[1]
        if phone != ci:
            frames[phone] = frames.get(phone, 0.0) + count
    return min(frames, key=frames.__getitem__)


@pytest.fixture(scope="module")
def empty_leaf(synth: Setup, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (work, phone, tree, …)
    """Kaldi's tree statistics without one phone (as if it never occurred), Kaldi's build-tree on them (its root
    gets a leaf without statistics), and Kaldi's gmm-init-model of that tree with its warnings."""
    work = tmp_path_factory.mktemp("empty_leaf")
    stats = read_tree_stats(synth.kaldi_acc)
    phone = _rarest_phone(stats, int(synth.ci))
    keep = [i for i, e in enumerate(stats.events) if dict(e)[1] != phone]
    without = TreeStats([stats.events[i] for i in keep], stats.counts[keep], stats.stats[keep], stats.var_floor)
    acc = work / "treeacc"
    write_tree_stats(acc, without)
    qst, tree = work / "q.qst", work / "tree"
    run_kaldi(synth.bundle, "compile-questions", synth.topo, synth.kaldi_questions, qst)
    run_kaldi(synth.bundle, "build-tree", "--max-leaves=100", acc, synth.roots, qst, synth.topo, tree)
    model = work / "final.mdl"
    warnings = _kaldi_warnings(synth.bundle, "gmm-init-model", tree, acc, synth.topo, model)
    return work, phone, tree, model, warnings


def test_empty_and_thin_leaves_are_gmm_init_models(synth: Setup, empty_leaf) -> None:  # noqa: ANN001
    """A phone without data: asr-bn's tree is Kaldi's, its model is gmm-init-model's to the byte (the empty leaf
    gets the statistics of all leaves, summed as Kaldi sums them), and the report counts and names the leaves
    gmm-init-model warns about (no statistics; fewer than 100 frames), with their phones."""
    from asr_bn.gmm.init_model import init_model
    from asr_bn.report import Report

    work, phone, tree, model, warnings = empty_leaf
    stats, topology = read_tree_stats(work / "treeacc"), read_topology(synth.topo)
    ours_tree, _ = build_tree(stats, read_roots(synth.roots), Questions.compile(
        read_phone_sets(synth.kaldi_questions, ""), topology), topology, max_leaves=100)
    write_tree(work / "ours.tree", ours_tree)
    assert (work / "ours.tree").read_bytes() == tree.read_bytes()
    report = Report("init")
    system = init_model(tree, stats, topology, report=report)
    assert system.model_bytes() == model.read_bytes()
    empty = re.findall(r"Tree has pdf-id (\d+) with no stats; corresponding phone list: ([\d ]+)", warnings)
    small = re.findall(r"Very small count for state (\d+): (\S+); corresponding phone list: ([\d ]+)", warnings)
    assert [str(phone)] in [p.split() for _, p in empty] and small  # (and phones the corpus never uses)
    assert report.counts["leaves without statistics"] == len(empty)
    assert report.counts["leaves under 100 frames"] == len(small)
    notes = "\n".join(report.notes)
    for pdf, phones in empty:
        assert f" {pdf} (phone {phones.strip()})" in notes
    for pdf, count, phones in small[:20]:  # the note names the first 20 and says how many in all
        label = "phone" if len(phones.split()) == 1 else "phones"
        assert f"{pdf} ({label} {phones.strip()}, {float(count):g} frames)" in notes


def test_gaussians_with_too_little_data_are_gmm_ests(synth: Setup, empty_leaf) -> None:  # noqa: ANN001
    """The model of the empty leaf, mixed up to many Gaussians (gmm-mixup --min-count=2, so thin pdfs get
    Gaussians of a few frames), one pass on Kaldi's converted alignments: the Gaussians asr-bn counts as not
    updated and removed are those gmm-est warns about ("not removing it because it is the last Gaussian", "removing
    Gaussian"), and the updated model has as many Gaussians as gmm-est's."""
    from asr_bn.gmm.estimate import PassStats, TooLittleData
    from asr_bn.gmm.system import GmmSystem
    from asr_bn.report import Report

    work, _, tree, model, init_warnings = empty_leaf
    occs, mixed = work / "init.occs", work / "mixed" / "final.mdl"
    mixed.parent.mkdir(exist_ok=True)
    shutil.copy(tree, mixed.parent / "tree")
    run_kaldi(synth.bundle, "gmm-init-model", f"--write-occs={occs}", tree, work / "treeacc", synth.topo,
              work / "x.mdl")
    run_kaldi(synth.bundle, "gmm-mixup", "--mix-up=1500", "--min-count=2", model, occs, mixed)
    ali = work / "ali.ark"
    run_kaldi(synth.bundle, "convert-ali", synth.model, mixed, tree, f"ark:gunzip -c {synth.ali}|", f"ark:{ali}")
    run_kaldi(synth.bundle, "gmm-acc-stats-ali", mixed, f"scp:{synth.scp}", f"ark:{ali}", work / "1.acc")
    warnings = _kaldi_warnings(synth.bundle, "gmm-est", mixed, work / "1.acc", work / "1.mdl")
    kaldi_kept = warnings.count("too little data but not removing")
    kaldi_removed = warnings.count("Too little data - removing")
    assert kaldi_kept >= 1 and kaldi_removed >= 1, warnings[-2000:]

    system = GmmSystem.load(mixed)
    alis = {x.utt: x.values for x in read_alignments(ali)}
    feats = dict(read_features(synth.scp))
    stats = PassStats(system, feats, {u: a for u, a in alis.items() if u in feats})
    low = stats.update(system, 10.0, 0, 0.25)
    assert sum(k for k, _ in low.values()) == kaldi_kept and sum(r for _, r in low.values()) == kaldi_removed
    info = run_kaldi(synth.bundle, "gmm-info", work / "1.mdl")
    assert f"number of gaussians {system.am.num_gauss}" in info
    report = Report("pass")
    summary = TooLittleData()
    summary.add(low)
    summary.to_report(report, system.transition_model(), 1)
    assert report.counts["Gaussians not updated (too little data)"] == kaldi_kept + kaldi_removed
    assert report.counts["Gaussians removed (too little data)"] == kaldi_removed
    for pdf in re.findall(r"Tree has pdf-id (\d+) with no stats", init_warnings):
        assert low[int(pdf)] == (1, 0)  # a leaf without frames: its one Gaussian kept as it was
    first = min(low)
    assert f"pdf-ids {first} (" in report.notes[0] and f"({len(low)} in all)" in report.notes[0], report.notes


def test_rung_reports_what_kaldi_warns_about(synth: Setup, synth_tri1, tmp_path: Path) -> None:  # noqa: ANN001
    """`asr-bn gmm deltas` on the synthesized corpus (one phone of its lexicon never spoken): report.json counts and
    names the leaves without statistics and under 100 frames that Kaldi's gmm-init-model warns about on the rung's
    own tree and treeacc, and the Gaussians gmm-est left alone, pass by pass; the CLI prints them with the counts."""
    import json

    *_, prep = synth_tri1
    corpus = synth.work / "corpus"
    out = tmp_path / "tri1"
    result = CliRunner().invoke(app, ["gmm", "deltas", "100", "400", str(prep), str(corpus / "lang"),
                                      str(corpus / "exp" / "ali_train"), str(out), "--fast"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    warnings = _kaldi_warnings(synth.bundle, "gmm-init-model", out / "tree", out / "treeacc", out / "topo",
                               tmp_path / "kaldi.mdl")
    empty = re.findall(r"Tree has pdf-id (\d+) with no stats; corresponding phone list: ([\d ]+)", warnings)
    small = re.findall(r"Very small count for state (\d+): ", warnings)
    counts = report["counts"]
    assert counts["leaves without statistics"] == len(empty) >= 1
    assert counts["leaves under 100 frames"] == len(small)
    note = next(n for n in report["notes"] if n.startswith("tree leaves without statistics"))
    assert all(f"{pdf} (phone {phones.strip()})" in note for pdf, phones in empty), note
    history = [json.loads(line) for line in (out / "iterations.jsonl").read_text().splitlines()]
    assert counts["Gaussians not updated (too little data)"] == sum(h["not_updated"] for h in history) >= len(history)
    low = next(n for n in report["notes"] if n.startswith("Gaussians with too little data"))
    assert all(f"{pdf} (phone {phones.strip()}, {len(history)} passes)" in low for pdf, phones in empty), low
    assert "leaves without statistics" in result.output and f"  note: {note}" in result.output


def test_first_alignments_of_another_model_are_refused(yesno_root: Path, tmp_path: Path) -> None:
    """train_mono's given first-pass alignments must be paths through the monophone model it builds: Kaldi's yesno
    alignments pass, the same transition-ids reversed (in range, of the right length) are one line naming the
    utterance and the fix."""
    from asr_bn.gmm.mono import MonoConfig, train_mono
    from asr_bn.lang import read_lang

    feats, text = yesno_gmm_inputs(yesno_root, 4)
    lang = read_lang(yesno_root / "data" / "lang")
    labels = read_alignments(yesno_root / "exp" / "mono" / "ali.1.gz")
    kaldi = {x.utt: x.values.tolist() for x in labels if x.utt in feats}
    cfg = MonoConfig(num_iters=2, max_iter_inc=1, total_gauss=10, realign_iters=())
    train_mono(feats, text, lang, tmp_path / "ok", cfg, first_alignments=kaldi)
    utt = sorted(kaldi)[1]
    with pytest.raises(AsrBnError) as e:
        train_mono(feats, text, lang, tmp_path / "bad", cfg, first_alignments={**kaldi, utt: kaldi[utt][::-1]})
    assert str(e.value).startswith(f"first alignments, utterance {utt}: frame ") and "\n" not in str(e.value)
    assert "made with another model or tree" in str(e.value) and not (tmp_path / "bad" / "final.mdl").exists()


def test_a_rung_failing_midway_leaves_no_earlier_model(synth_tri1, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:  # noqa: ANN001
    """Rerun into a finished exp dir and fail after the new tree is written: the earlier run's final.mdl and
    report.json are gone (a model of the old tree must not sit beside the new tree), every file left is whole."""
    import asr_bn.gmm.train_deltas as train_deltas
    from asr_bn.gmm.train_deltas import DeltasConfig

    _, feats, text, lang, tri1, _, _ = synth_tri1
    out = tmp_path / "tri1"
    out.mkdir()
    for name in ("final.mdl", "report.json", "tree"):  # a finished run's results
        shutil.copy(tri1 / name, out / name)

    def fail(*_: object, **__: object) -> None:
        raise AsrBnError("init failed")

    monkeypatch.setattr(train_deltas, "init_model", fail)
    with pytest.raises(AsrBnError, match="init failed"):
        train_deltas.train_deltas(feats, text, lang, tri1, out, DeltasConfig(num_leaves=100, tot_gauss=400, num_iters=4,
                                                                             realign_iters=(2,)))
    left = sorted(p.name for p in out.iterdir())
    assert "final.mdl" not in left and "report.json" not in left and "tree" in left, left
    assert not [name for name in left if name.startswith(".")], left  # no temporary file


def test_align_fmllr_adapts_a_speaker_the_first_pass_missed(synth_tri1, synth_tri3, tmp_path: Path,  # noqa: ANN001
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A speaker none of whose utterances the speaker-independent pass aligned (a weak model on speed-perturbed
    copies) gets the identity transform, counted, as gmm-est-fmllr writes one for every speaker of spk2utt, and the
    adapted pass aligns its utterances again, as align_fmllr.sh's last gmm-align-compiled aligns every utterance."""
    import kaldiio

    import asr_bn.gmm.sat as sat

    _, feats, text, lang, _, _, prep = synth_tri1
    _, tri3, _ = synth_tri3
    utt2spk = test_gmm_tree._speakers(prep)
    missed = sorted(set(utt2spk.values()))[0]
    real, calls = sat.align_all, []

    def first_pass_misses(*args: object, **kwargs: object):  # noqa: ANN202 - align_all's result
        alis, failed, like, frames = real(*args, **kwargs)
        calls.append(len(alis))
        if len(calls) == 1:  # the speaker-independent pass: the speaker's utterances fail
            gone = [u for u in alis if utt2spk[u] == missed]
            return {u: a for u, a in alis.items() if u not in gone}, failed + gone, like, frames
        return alis, failed, like, frames

    monkeypatch.setattr(sat, "align_all", first_pass_misses)
    report = sat.align_fmllr(tri3, feats, text, utt2spk, lang, tmp_path / "ali")
    assert report.counts["speakers with too little data for fMLLR (identity kept)"] >= 1
    assert any(missed in note for note in report.notes)
    transforms = dict(kaldiio.load_ark(str(tmp_path / "ali" / "trans.1")))
    dim = transforms[missed].shape[0]
    np.testing.assert_array_equal(transforms[missed], np.hstack([np.eye(dim), np.zeros((dim, 1))]))
    aligned = {x.utt for x in read_alignments(tmp_path / "ali")}
    assert {u for u, s in utt2spk.items() if s == missed} <= aligned and report.counts["aligned"] == len(aligned)
