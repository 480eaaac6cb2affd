"""Context-dependency trees (asr_bn.gmm): tree statistics, questions and trees against Kaldi's own binaries
(acc-tree-stats, cluster-phones, compile-questions + build-tree, tree-info, copy-tree) on the same inputs.

Two real inputs: the Kaldi yesno run (3 phones, Kaldi's own model and alignments) and the synthesized corpus's
training set (40 phones with exact alignments), whose trees exercise splitting, clustering and rounding."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from asr_bn.alignments import read_alignments, read_topology, read_transition_model
from asr_bn.errors import AsrBnError
from asr_bn.gmm.build_tree import Questions, build_tree, objf_given_map, read_phone_sets, read_roots
from asr_bn.gmm.event_map import MISSING, Constant, Split, Table, in_set, leaves, read_tree_map, write_tree
from asr_bn.gmm.crand import CRand, rand_prune
from asr_bn.gmm.questions import cluster_phones
from asr_bn.gmm import tree_stats
from asr_bn.gmm.tree_stats import TreeStats, accumulate_tree_stats, read_features, read_tree_stats, write_tree_stats
from asr_bn_cli.main import build_app
from conftest import run_kaldi

app = build_app()


class Setup:
    """A model, ready features (.scp), alignments and lang files, with Kaldi's tree statistics and questions."""

    def __init__(self, bundle: Path, work: Path, model: Path, feats_rspec: str, ali: Path, sets: Path, roots: Path,
                 topo: Path, ci: str) -> None:
        self.bundle, self.work, self.model, self.ali, self.roots, self.topo, self.ci = bundle, work, model, ali, roots, topo, ci
        self.sets = sets
        self.scp = work / "feats.scp"
        run_kaldi(bundle, "add-deltas", feats_rspec, f"ark,scp:{work / 'feats.ark'},{self.scp}")
        self.kaldi_acc = work / "kaldi.acc"
        run_kaldi(bundle, "acc-tree-stats", f"--ci-phones={ci}", model, f"scp:{self.scp}", f"ark:gunzip -c {ali}|",
                  self.kaldi_acc)
        self.kaldi_questions = work / "questions.int"
        run_kaldi(bundle, "cluster-phones", self.kaldi_acc, sets, self.kaldi_questions)

    def kaldi_tree(self, questions: Path, *options: str) -> Path:
        """Kaldi's compile-questions + build-tree with `options` on Kaldi's statistics."""
        qst, out = self.work / "q.qst", self.work / f"kaldi{'_'.join(options)}.tree"
        run_kaldi(self.bundle, "compile-questions", self.topo, questions, qst)
        run_kaldi(self.bundle, "build-tree", *options, self.kaldi_acc, self.roots, qst, self.topo, out)
        return out


@pytest.fixture(scope="module")
def yesno(kaldi_bundle: Path, yesno_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    mfcc = yesno_root / "data" / "train_yesno" / "data" / "raw_mfcc_train_yesno.1.scp"
    lines = [f"{u} {yesno_root / 'data' / 'train_yesno' / 'data' / Path(loc).name}" for u, loc in
             (line.split() for line in mfcc.read_text().splitlines())]
    work = tmp_path_factory.mktemp("yesno_tree")
    (work / "mfcc.scp").write_text("\n".join(lines) + "\n")
    lang = yesno_root / "data" / "lang"
    return Setup(kaldi_bundle, work, yesno_root / "exp" / "mono" / "final.mdl", f"scp:{work / 'mfcc.scp'}",
                 yesno_root / "exp" / "mono" / "ali.1.gz", lang / "phones" / "sets.int", lang / "phones" / "roots.int",
                 lang / "topo", "1")


@pytest.fixture(scope="module")
def synth(kaldi_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    from asr_bn.synth import synthesize_corpus

    work = tmp_path_factory.mktemp("synth_tree")
    corpus = synthesize_corpus(work / "corpus", seed=5, size="small")
    ali = corpus.ali["train"]
    num_phones = max(read_transition_model(ali / "final.mdl").phones)
    (work / "sets.int").write_text("".join(f"{p}\n" for p in range(1, num_phones + 1)))
    (work / "roots.int").write_text("".join(f"shared split {p}\n" for p in range(1, num_phones + 1)))
    run_kaldi(kaldi_bundle, "compute-mfcc-feats", "--sample-frequency=16000", f"scp:{corpus.data['train'] / 'wav.scp'}",
              f"ark:{work / 'mfcc.ark'}")
    return Setup(kaldi_bundle, work, ali / "final.mdl", f"ark:{work / 'mfcc.ark'}", ali / "ali.1.gz",
                 work / "sets.int", work / "roots.int", ali / "topo", "1")


def _ours(setup: Setup):  # noqa: ANN202 - TreeStats
    alis = {labels.utt: labels.values for labels in read_alignments(setup.ali)}
    return accumulate_tree_stats(read_transition_model(setup.model), read_features(setup.scp), alis, [int(setup.ci)])


@pytest.mark.parametrize("name", ["yesno", "synth"])
def test_tree_statistics_are_kaldis(name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """acc-tree-stats's file to the byte (frames added one by one in corpus order, float squares, as Kaldi adds
    them), also when the frames are summed in many chunks (the running sums carried from one to the next)."""
    setup: Setup = request.getfixturevalue(name)
    ours, kaldi = _ours(setup), read_tree_stats(setup.kaldi_acc)
    assert ours.events == kaldi.events and len(ours.events) > 10
    write_tree_stats(setup.work / "ours.acc", ours)
    assert (setup.work / "ours.acc").read_bytes() == setup.kaldi_acc.read_bytes()
    monkeypatch.setattr(tree_stats, "_CHUNK_FRAMES", 997)
    chunked = _ours(setup)
    assert chunked.events == kaldi.events and np.array_equal(chunked.stats, kaldi.stats)
    assert np.array_equal(chunked.counts, kaldi.counts)
    for binary in (True, False):  # Kaldi reads what we write: sum-tree-stats of ours twice is twice ours
        path = setup.work / f"ours_{binary}.acc"
        write_tree_stats(path, ours, binary)
        run_kaldi(setup.bundle, "sum-tree-stats", setup.work / "sum.acc", path, path)
        summed = read_tree_stats(setup.work / "sum.acc")
        assert summed.events == ours.events and np.allclose(summed.stats, 2 * ours.stats, rtol=1e-12)
    # Kaldi's jobs: acc-tree-stats per part of the data, then sum-tree-stats: the same file to the byte
    import kaldiio

    from asr_bn.gmm.align import kaldi_split

    feats = dict(read_features(setup.scp))
    parts = kaldi_split(sorted(feats), 3)
    for j, part in enumerate(parts, 1):
        kaldiio.save_ark(str(setup.work / f"part{j}.ark"), {u: feats[u] for u in part})
        run_kaldi(setup.bundle, "acc-tree-stats", f"--ci-phones={setup.ci}", setup.model,
                  f"ark:{setup.work / f'part{j}.ark'}", f"ark:gunzip -c {setup.ali}|", setup.work / f"{j}.treeacc")
    run_kaldi(setup.bundle, "sum-tree-stats", setup.work / "jobs.acc", *(setup.work / f"{j}.treeacc" for j in (1, 2, 3)))
    alis = {labels.utt: labels.values for labels in read_alignments(setup.ali)}
    by_job = accumulate_tree_stats(read_transition_model(setup.model), read_features(setup.scp), alis, [int(setup.ci)],
                                   jobs=parts)
    write_tree_stats(setup.work / "ours_jobs.acc", by_job)
    assert (setup.work / "ours_jobs.acc").read_bytes() == (setup.work / "jobs.acc").read_bytes()


@pytest.mark.parametrize("name", ["yesno", "synth"])
def test_questions_are_cluster_phones(name: str, request: pytest.FixtureRequest) -> None:
    setup: Setup = request.getfixturevalue(name)
    ours = cluster_phones(read_tree_stats(setup.kaldi_acc), read_phone_sets(setup.sets, ""))
    assert ours == read_phone_sets(setup.kaldi_questions, "") and len(ours) >= 4


def test_c_rand_is_glibc_rand() -> None:
    """asr-bn's stream (computed in blocks) is the C library's rand() after srand(seed), across block boundaries,
    one value or many at a time; RandPrune keeps each posterior with probability p / thresh."""
    import ctypes
    import sys

    rand = CRand(1)
    assert [rand() for _ in range(3)] == [1804289383, 846930886, 1681692777]  # glibc's srand(1) sequence
    if not sys.platform.startswith("linux"):
        pytest.skip("the C library's rand() is glibc's only on Linux")
    libc = ctypes.CDLL(None)
    libc.rand.restype = ctypes.c_int
    for seed in (0, 1, 2, 12345, 2**31 - 5):
        libc.srand(ctypes.c_uint(seed))
        expected = [libc.rand() for _ in range(5000)]
        rand = CRand(seed)
        got = [*rand.ints(7), *(rand() for _ in range(2100)), *rand.ints(2893)]
        assert got == expected, seed
    post = np.full(200_000, 0.25, np.float32)
    post[::2] = 0
    pruned = rand_prune(post, 4.0, CRand(1).uniform(100_000))  # one draw per non-zero posterior
    assert set(np.unique(pruned)) == {0.0, 4.0} and not pruned[::2].any()
    assert abs(pruned.sum() / post.sum() - 1) < 0.03


@pytest.mark.parametrize(
    "options",
    [
        ("--max-leaves=40",),
        ("--max-leaves=100", "--cluster-thresh=0"),
        ("--max-leaves=100", "--round-num-leaves=false"),
        ("--thresh=2000", "--cluster-thresh=800"),
    ],
)
def test_build_tree_is_kaldis_byte_for_byte(synth: Setup, options: tuple[str, ...]) -> None:
    """Same statistics and questions: the same tree file as Kaldi's build-tree (splits, clustering, rounding)."""
    kaldi = synth.kaldi_tree(synth.kaldi_questions, *options)
    opts = {o.split("=")[0].lstrip("-").replace("-", "_"): o.split("=")[1] for o in options}
    kw = dict(max_leaves=int(opts.get("max_leaves", 0)), thresh=float(opts.get("thresh", 300)),
              cluster_thresh=float(opts.get("cluster_thresh", -1)), round_num_leaves=opts.get("round_num_leaves") != "false")
    topology = read_topology(synth.topo)
    stats = read_tree_stats(synth.kaldi_acc)
    tree, info = build_tree(stats, read_roots(synth.roots), Questions.compile(read_phone_sets(synth.kaldi_questions, ""),
                            topology), topology, **kw)
    ours = synth.work / "ours.tree"
    write_tree(ours, tree)
    assert ours.read_bytes() == kaldi.read_bytes()
    assert info.num_leaves == len(set(leaves(tree))) == max(leaves(tree)) + 1 > 8
    assert info.objf == pytest.approx(objf_given_map(read_tree_map(kaldi)[0], stats), rel=1e-6)
    assert info.split_leaves - info.clustered_away - info.rounded_away == info.num_leaves


@pytest.mark.parametrize("layout", ["pairs", "not-shared", "not-split", "mixed"])
def test_roots_layouts_are_kaldis(synth: Setup, tmp_path: Path, layout: str) -> None:
    """Roots as Kaldi's prepare_lang.sh writes them for position-dependent phones (several phones per line),
    not-shared roots (one tree per pdf-class), not-split roots (e.g. silence kept whole), and all of them mixed: the
    same tree file as build-tree's on the same statistics and questions."""
    phones = [int(line) for line in synth.sets.read_text().split()]
    lines = {
        "pairs": [f"shared split {' '.join(map(str, phones[i:i + 2]))}" for i in range(0, len(phones), 2)],
        "not-shared": [f"not-shared split {p}" for p in phones],
        "not-split": [f"shared not-split {phones[0]}"] + [f"shared split {p}" for p in phones[1:]],
        "mixed": [f"shared not-split {phones[0]}", f"not-shared split {' '.join(map(str, phones[1:4]))}"]
        + [f"shared split {' '.join(map(str, phones[i:i + 3]))}" for i in range(4, len(phones), 3)],
    }[layout]
    roots = tmp_path / "roots.int"
    roots.write_text("".join(f"{line}\n" for line in lines))
    qst, kaldi = tmp_path / "q.qst", tmp_path / "kaldi.tree"
    run_kaldi(synth.bundle, "compile-questions", synth.topo, synth.kaldi_questions, qst)
    run_kaldi(synth.bundle, "build-tree", "--max-leaves=60", synth.kaldi_acc, roots, qst, synth.topo, kaldi)
    topology = read_topology(synth.topo)
    tree, _ = build_tree(read_tree_stats(synth.kaldi_acc), read_roots(roots),
                         Questions.compile(read_phone_sets(synth.kaldi_questions, ""), topology), topology, max_leaves=60)
    write_tree(tmp_path / "ours.tree", tree)
    assert (tmp_path / "ours.tree").read_bytes() == kaldi.read_bytes()


def test_cli_tree_pipeline_is_kaldis(yesno: Setup, tmp_path: Path) -> None:
    """asr-bn tree stats | questions | build | info from features and alignments, as Kaldi's four binaries."""
    runner = CliRunner()
    acc, qs, tree = tmp_path / "treeacc", tmp_path / "questions.int", tmp_path / "tree"
    for args in (
        ["tree", "stats", str(yesno.model), str(yesno.scp), str(yesno.ali), str(acc), "--ci-phones", yesno.ci],
        ["tree", "questions", str(acc), str(yesno.sets), str(qs)],
        ["tree", "build", str(acc), str(yesno.roots), str(qs), str(yesno.topo), str(tree), "--max-leaves", "100"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    assert acc.read_bytes() == yesno.kaldi_acc.read_bytes()  # the default --var-floor too: Kaldi's float 0.01
    assert qs.read_text() == yesno.kaldi_questions.read_text()
    assert tree.read_bytes() == yesno.kaldi_tree(yesno.kaldi_questions, "--max-leaves=100").read_bytes()
    info = runner.invoke(app, ["tree", "info", str(tree)])
    assert info.output == run_kaldi(yesno.bundle, "tree-info", tree)


def test_tree_files_read_by_kaldi_and_kaldi_hmm_gmm(yesno: Setup, tmp_path: Path) -> None:
    from asr_bn.mkgraph import read_tree

    kaldi = yesno.kaldi_tree(yesno.kaldi_questions, "--max-leaves=100")
    tree, width, central = read_tree_map(kaldi)
    text = tmp_path / "tree.txt"
    write_tree(text, tree, width, central, binary=False)
    assert run_kaldi(yesno.bundle, "copy-tree", "--binary=false", kaldi, "-") == text.read_text()
    assert read_tree_map(text) == (tree, width, central)
    assert read_tree(kaldi).context_width == 3  # kaldi-hmm-gmm's ContextDependency (graphs, training)


def test_treeacc_records_in_other_layouts_are_read(tmp_path: Path) -> None:
    """Binary records laid out as Kaldi writes them are read in one piece; one with a float count and a float
    matrix (FM) is read token by token, in the same file; a matrix without two rows is refused."""
    stats = TreeStats([((-1, 0), (1, 5)), ((-1, 1), (1, 5))], np.array([3.0, 2.0]),
                      np.arange(12, dtype=np.float64).reshape(2, 2, 3), float(np.float32(0.01)))
    write_tree_stats(tmp_path / "kaldi.acc", stats)
    data = (tmp_path / "kaldi.acc").read_bytes()
    second = data.index(b"EV ", data.index(b"EV ") + 1)
    floats = (b"EV \xfc" + struct.pack("<I", 2) + b"\x04" + struct.pack("<i", -1) + b"\x04" + struct.pack("<i", 1)
              + b"\x04" + struct.pack("<i", 1) + b"\x04" + struct.pack("<i", 5) + b"TGCL \x04" + struct.pack("<f", 2.0)
              + b"\x08" + struct.pack("<d", stats.var_floor) + b"FM \x04" + struct.pack("<i", 2) + b"\x04"
              + struct.pack("<i", 3) + np.arange(6, 12, dtype="<f4").tobytes())
    (tmp_path / "mixed.acc").write_bytes(data[:second] + floats)
    mixed = read_tree_stats(tmp_path / "mixed.acc")
    assert mixed.events == stats.events and np.array_equal(mixed.stats, stats.stats)
    assert np.array_equal(mixed.counts, stats.counts)
    three_rows = floats.replace(b"FM \x04" + struct.pack("<i", 2), b"FM \x04" + struct.pack("<i", 3))
    (tmp_path / "rows.acc").write_bytes(data[:second] + three_rows + np.zeros(3, "<f4").tobytes())
    with pytest.raises(AsrBnError, match="must have two rows, this one has 3"):
        read_tree_stats(tmp_path / "rows.acc")


def test_in_set_is_isin() -> None:
    """The lookup-table membership test of tree building answers as np.isin (missing keys, negative members too)."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        values = rng.integers(-3, 60, rng.integers(0, 50))
        values[rng.random(len(values)) < 0.1] = MISSING
        members = tuple(sorted(set(rng.integers(-2, 70, rng.integers(0, 8)).tolist())))
        assert np.array_equal(in_set(values, members), np.isin(values, members)), (values, members)


def test_event_map_file_layouts_round_trip(tmp_path: Path) -> None:
    tree = Table(1, (None, Split(-1, (0, 1), Constant(0), Split(0, (2,), Constant(1), Constant(2))), Constant(3)))
    for binary in (True, False):
        write_tree(tmp_path / "t", tree, binary=binary)
        assert read_tree_map(tmp_path / "t") == (tree, 3, 1)
    (tmp_path / "cut").write_bytes((tmp_path / "t").read_bytes()[:-30])
    with pytest.raises(AsrBnError, match=r"cut: cannot read the decision tree at byte \d+"):
        read_tree_map(tmp_path / "cut")


def test_bad_inputs_are_one_line_errors(synth: Setup, tmp_path: Path) -> None:
    runner = CliRunner()
    stats, questions = str(synth.kaldi_acc), str(synth.kaldi_questions)
    short_roots = tmp_path / "roots.int"
    short_roots.write_text("".join(line + "\n" for line in synth.roots.read_text().splitlines()[:-1]))
    names = tmp_path / "roots.txt"
    names.write_text("shared split SIL\n")
    cut = tmp_path / "cut.acc"
    cut.write_bytes(synth.kaldi_acc.read_bytes()[:1000])
    cases = [
        (["tree", "build", stats, str(short_roots), questions, str(synth.topo), str(tmp_path / "t")],
         "appear in the statistics but not in the roots file"),
        (["tree", "build", stats, str(names), questions, str(synth.topo), str(tmp_path / "t")], "use roots.int"),
        (["tree", "build", str(cut), str(synth.roots), questions, str(synth.topo), str(tmp_path / "t")],
         "cut.acc: cannot read tree statistics at byte"),
        (["tree", "questions", stats, questions, str(tmp_path / "q")], "a phone appears twice in the phone sets"),
        (["tree", "stats", str(synth.model), str(tmp_path), str(synth.ali), str(tmp_path / "a")], "feats.scp not found"),
        (["tree", "build", stats, str(tmp_path / "none"), questions, str(synth.topo), str(tmp_path / "t")],
         "none is missing; give the lang's phones/roots.int"),
        (["tree", "build", stats, str(synth.roots), str(tmp_path / "none"), str(synth.topo), str(tmp_path / "t")],
         "none is missing; give the questions of `asr-bn tree questions`"),
        (["tree", "questions", stats, str(tmp_path / "none"), str(tmp_path / "q")],
         "none is missing; give the lang's phones/sets.int"),
        (["tree", "build", stats, str(synth.roots), str(names), str(synth.topo), str(tmp_path / "t")],
         "use the .int file"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "t").exists() and not (tmp_path / "q").exists() and not (tmp_path / "a").exists()


def test_utterances_without_alignment_or_of_another_length_are_named(yesno: Setup) -> None:
    from asr_bn.report import Report

    alis = {labels.utt: labels.values for labels in read_alignments(yesno.ali)}
    utts = sorted(alis)
    del alis[utts[0]]
    alis[utts[1]] = alis[utts[1]][:-1]
    report = Report("tree stats")
    accumulate_tree_stats(read_transition_model(yesno.model), read_features(yesno.scp), alis, [1], report=report)
    assert report.skipped["no alignment"] == [utts[0]]
    assert report.skipped["alignment length differs from the frame count"] == [utts[1]]


def test_init_model_is_gmm_init_models_byte_for_byte(synth: Setup) -> None:
    """One Gaussian per leaf from the tree statistics and Kaldi's transition model for the tree: gmm-init-model."""
    from asr_bn.gmm.init_model import init_model

    tree = synth.kaldi_tree(synth.kaldi_questions, "--max-leaves=60")
    kaldi = synth.work / "kaldi_init.mdl"
    run_kaldi(synth.bundle, "gmm-init-model", tree, synth.kaldi_acc, synth.topo, kaldi)
    system = init_model(tree, read_tree_stats(synth.kaldi_acc), read_topology(synth.topo))
    assert system.model_bytes() == kaldi.read_bytes()
    assert system.am.num_pdfs == max(leaves(read_tree_map(tree)[0])) + 1


@pytest.mark.parametrize("reorder", [True, False])
def test_convert_ali_is_kaldis(synth: Setup, reorder: bool) -> None:
    """The monophone alignments carried to the triphone model: the same transition-ids as Kaldi's convert-ali."""
    from asr_bn.gmm.convert import AlignmentConverter

    tree = synth.kaldi_tree(synth.kaldi_questions, "--max-leaves=60")
    model = synth.work / "kaldi_init.mdl"
    run_kaldi(synth.bundle, "gmm-init-model", tree, synth.kaldi_acc, synth.topo, model)
    text = run_kaldi(synth.bundle, "convert-ali", f"--reorder={str(reorder).lower()}", synth.model, model, tree,
                     f"ark:gunzip -c {synth.ali}|", "ark,t:-")
    kaldi = {line.split()[0]: [int(t) for t in line.split()[1:]] for line in text.splitlines()}
    convert = AlignmentConverter(read_transition_model(synth.model), read_transition_model(model), read_tree_map(tree)[0],
                                 reorder=reorder)
    ours = {labels.utt: convert(labels.utt, labels.values).tolist() for labels in read_alignments(synth.ali)}
    assert ours == kaldi and len(ours) == 40


@pytest.fixture(scope="module")
def synth_tri1(synth: Setup, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (system, feats, text, lang, dir)
    """A short train_deltas run on the synth corpus's training set (from its exact monophone alignments)."""
    from asr_bn.features import FeaturePipeline
    from asr_bn.gmm.train_deltas import DeltasConfig, train_deltas
    from asr_bn.gmm.features import prepared_gmm_features
    from asr_bn.lang import read_lang
    from asr_bn.prep import prepare_kaldi

    corpus = synth.work / "corpus"
    prep = tmp_path_factory.mktemp("tri1_prep") / "train"
    prepare_kaldi(corpus / "data" / "train", prep, FeaturePipeline())
    feats, text, _ = prepared_gmm_features(prep)
    lang = read_lang(corpus / "lang")
    out = tmp_path_factory.mktemp("tri1") / "tri1"
    cfg = DeltasConfig(num_leaves=100, tot_gauss=400, num_iters=8, max_iter_inc=5, realign_iters=(3, 6))
    system, report = train_deltas(feats, text, lang, corpus / "exp" / "ali_train", out, cfg)
    return system, feats, text, lang, out, report, prep


def test_train_deltas_exp_dir_is_read_by_kaldi(synth: Setup, synth_tri1) -> None:  # noqa: ANN001
    import json

    system, feats, _, _, out, report, _ = synth_tri1
    assert report.num_skipped == 0 and report.counts["aligned"] == len(feats) == 40
    history = [json.loads(line) for line in (out / "iterations.jsonl").read_text().splitlines()]
    assert len(history) == 7 and history[-1]["avg_like"] > history[0]["avg_like"] + 2  # realignment and mixing up help
    assert history[-1]["num_gauss"] > system.am.num_pdfs  # Gaussians grew past one per leaf
    info = run_kaldi(synth.bundle, "gmm-info", out / "final.mdl")
    assert f"number of pdfs {system.am.num_pdfs}" in info and f"number of gaussians {system.am.num_gauss}" in info
    assert f"num-pdfs {system.am.num_pdfs}" in run_kaldi(synth.bundle, "tree-info", out / "tree")
    pdfs = run_kaldi(synth.bundle, "ali-to-pdf", out / "final.mdl", f"ark:gunzip -c {out / 'ali.1.gz'}|", "ark,t:-")
    assert len(pdfs.splitlines()) == 40 and max(int(p) for line in pdfs.splitlines() for p in line.split()[1:]) < system.am.num_pdfs


def test_triphone_alignment_is_gmm_align_compileds(synth: Setup, synth_tri1, tmp_path: Path) -> None:  # noqa: ANN001
    """asr-bn's aligner with its own triphone model and features against Kaldi's compile-train-graphs +
    gmm-align-compiled on the same model and lexicon, Kaldi's add-deltas on the same cepstra: at least 99 % of
    frames agree (tools/kaldi_align.py; on AN4's training set 100.00 % for tri1 and tri2b, docs/RESULTS.md)."""
    from kaldi_align import agreement, kaldi_alignments

    from asr_bn.gmm.align import align, AlignConfig

    system, feats, text, lang, out, _, _ = synth_tri1
    align(system, feats, text, lang, tmp_path / "ali", AlignConfig())
    ours = {labels.utt: labels.values for labels in read_alignments(tmp_path / "ali")}
    share, one_side, _ = agreement(ours, kaldi_alignments(synth.bundle, out, feats, text, lang, tmp_path / "k"))
    assert one_side == 0 and share >= 0.99


def test_lda_mllt_alignment_is_gmm_align_compileds(synth: Setup, synth_tri1, synth_tri2,  # noqa: ANN001
                                                   tmp_path: Path) -> None:
    """The same for an LDA+MLLT system: asr-bn's features (final.mat on the spliced cepstra) and alignment against
    Kaldi's splice-feats + transform-feats with that final.mat and gmm-align-compiled: at least 99 % of frames."""
    from kaldi_align import agreement, kaldi_alignments

    from asr_bn.gmm.align import align, AlignConfig
    from asr_bn.gmm.sat import speaker_independent_features

    _, feats, text, lang, _, _, _ = synth_tri1
    system, out, _ = synth_tri2
    align(system, speaker_independent_features(feats, out), text, lang, tmp_path / "ali", AlignConfig())
    ours = {labels.utt: labels.values for labels in read_alignments(tmp_path / "ali")}
    share, one_side, _ = agreement(ours, kaldi_alignments(synth.bundle, out, feats, text, lang, tmp_path / "k"))
    assert one_side == 0 and share >= 0.99


def test_lda_features_of_another_kind_are_refused(synth_tri1, synth_tri2, tmp_path: Path) -> None:  # noqa: ANN001
    """Features whose cepstra are not the system's (e.g. Kaldi MFCC with 20 cepstra against a final.mat made on
    13, spliced ±3 into 91 inputs) were cut to 13 without a word: now one error naming the utterance and final.mat;
    an LDA dimension above the spliced features' is refused naming both."""
    from asr_bn.errors import UsageError
    from asr_bn.gmm.lda_mllt import LdaMlltConfig, train_lda_mllt
    from asr_bn.gmm.sat import speaker_independent_features

    _, feats, text, lang, tri1, _, _ = synth_tri1
    _, out, _ = synth_tri2
    utt = sorted(feats)[0]
    wider = {utt: np.zeros((30, 60), np.float32)}  # 20 cepstra + Δ + ΔΔ
    with pytest.raises(AsrBnError, match=rf"utterance {utt}: its 20 static cepstra cannot be spliced to the 91 "
                                         r"inputs of \S+final.mat \(features of another kind"):
        speaker_independent_features(wider, out)[utt]
    with pytest.raises(UsageError, match=r"dim 92 is above the 91 dimensions of the spliced features \(13 cepstra x 7"):
        train_lda_mllt(feats, text, lang, tri1, tmp_path / "tri2", LdaMlltConfig(dim=92))
    assert not (tmp_path / "tri2").exists()


def test_train_deltas_refuses_nonsense_options() -> None:
    from asr_bn.errors import UsageError
    from asr_bn.gmm.train_deltas import DeltasConfig

    from asr_bn.gmm.lda_mllt import LdaMlltConfig

    for bad in (DeltasConfig(num_leaves=0), DeltasConfig(num_leaves=500, tot_gauss=100),
                DeltasConfig(num_iters=10, realign_iters=(12,)), LdaMlltConfig(dim=0), LdaMlltConfig(context=-1),
                LdaMlltConfig(num_iters=10, mllt_iters=(2, 10))):
        with pytest.raises(UsageError):
            bad.validate()


@pytest.fixture(scope="module")
def synth_tri2(synth_tri1, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201 - (system, projected feats, dir)
    """A short train_lda_mllt run from the train_deltas system's alignments; every frame counts (--randprune 0: the
    corpus is small, and the random pruning has tests of its own)."""
    from asr_bn.gmm.lda_mllt import LdaMlltConfig, train_lda_mllt

    _, feats, text, lang, tri1, _, _ = synth_tri1
    out = tmp_path_factory.mktemp("tri2") / "tri2"
    cfg = LdaMlltConfig(num_leaves=100, tot_gauss=400, num_iters=8, max_iter_inc=5, realign_iters=(3, 6),
                        mllt_iters=(2, 4), randprune=0.0)
    system, report = train_lda_mllt(feats, text, lang, tri1, out, cfg)
    return system, out, report


def _static_ark(feats, path: Path) -> dict[str, np.ndarray]:  # noqa: ANN001 - the 13 static cepstra, written for Kaldi
    import kaldiio

    static = {u: np.ascontiguousarray(f[:, :13]) for u, f in feats.items()}
    kaldiio.save_ark(str(path), static)
    return static


def _two_kaldi_jobs(bundle: Path, feats: dict[str, np.ndarray], prefix: Path, acc_cmd: list, sum_cmd: str
                    ) -> tuple[list[list[str]], Path]:
    """Two Kaldi jobs of an accumulator (train_lda_mllt.sh with ali.1.gz and ali.2.gz): the first and second half of
    `feats`' sorted utterances each in its own process (`acc_cmd`, FEATS and ACC filled in; each draws from
    srand(1)), then `sum_cmd` of their outputs. Returns the jobs (their utterances) and the summed file."""
    import kaldiio

    utts = sorted(feats)
    jobs = [utts[: len(utts) // 2], utts[len(utts) // 2 :]]
    for j in (0, 1):
        ark, acc = f"{prefix}{j}.ark", f"{prefix}{j}.acc"
        kaldiio.save_ark(ark, {u: feats[u] for u in jobs[j]})
        run_kaldi(bundle, *[{"FEATS": f"ark:{ark}", "ACC": acc}.get(str(a), a) for a in acc_cmd])
    run_kaldi(bundle, sum_cmd, f"{prefix}.acc", f"{prefix}0.acc", f"{prefix}1.acc")
    return jobs, Path(f"{prefix}.acc")


def test_lda_is_est_ldas(synth: Setup, synth_tri1, tmp_path: Path) -> None:  # noqa: ANN001
    """Splicing and LDA on the previous alignments' pdfs (silence left out) against splice-feats + ali-to-post +
    weight-silence-post + acc-lda + est-lda, without random pruning and with train_lda_mllt.sh's --rand-prune 4 (the
    same frames kept: asr-bn draws as acc-lda does): the same matrix, rows up to their sign."""
    import kaldiio

    from asr_bn.gmm.lda_mllt import _alignment_pdfs, estimate_lda, splice

    _, feats, _, lang, tri1, _, _ = synth_tri1
    sil = lang.phones[lang.silence_phone]
    static = _static_ark(feats, tmp_path / "static.ark")
    run_kaldi(synth.bundle, "splice-feats", "--left-context=3", "--right-context=3", f"ark:{tmp_path / 'static.ark'}",
              f"ark:{tmp_path / 'spliced.ark'}")
    spliced = {u: splice(x, 3) for u, x in static.items()}
    kaldi_spliced = dict(kaldiio.load_ark(str(tmp_path / "spliced.ark")))
    assert all(np.array_equal(kaldi_spliced[u], spliced[u]) for u in spliced)
    run_kaldi(synth.bundle, "ali-to-post", f"ark:gunzip -c {tri1 / 'ali.1.gz'}|", f"ark:{tmp_path / 'post.ark'}")
    run_kaldi(synth.bundle, "weight-silence-post", "0.0", str(sil), tri1 / "final.mdl", f"ark:{tmp_path / 'post.ark'}",
              f"ark:{tmp_path / 'wpost.ark'}")
    pdfs, num_pdfs, _ = _alignment_pdfs(tri1, [sil])
    mats = {}
    for prune in (0.0, 4.0):
        run_kaldi(synth.bundle, "acc-lda", f"--rand-prune={prune}", tri1 / "final.mdl", f"ark:{tmp_path / 'spliced.ark'}",
                  f"ark:{tmp_path / 'wpost.ark'}", tmp_path / "lda.acc")
        run_kaldi(synth.bundle, "est-lda", "--dim=40", tmp_path / "lda.mat", tmp_path / "lda.acc")
        kaldi = kaldiio.load_mat(str(tmp_path / "lda.mat"))
        ours = mats[prune] = estimate_lda(spliced, pdfs, num_pdfs, 40, randprune=prune)
        signs = np.sign((ours * kaldi).sum(1))
        np.testing.assert_allclose(ours * signs[:, None], kaldi, atol=2e-5, err_msg=f"--rand-prune={prune}")
    assert not np.allclose(np.abs(mats[0.0]), np.abs(mats[4.0]), atol=1e-3), "pruning kept every frame"
    # two jobs: two acc-lda processes, then sum-lda-accs
    jobs, acc = _two_kaldi_jobs(synth.bundle, spliced, tmp_path / "lda", ["acc-lda", "--rand-prune=4.0",
                                tri1 / "final.mdl", "FEATS", f"ark:{tmp_path / 'wpost.ark'}", "ACC"], "sum-lda-accs")
    run_kaldi(synth.bundle, "est-lda", "--dim=40", tmp_path / "lda.mat", acc)
    kaldi = kaldiio.load_mat(str(tmp_path / "lda.mat"))
    ours = estimate_lda(spliced, pdfs, num_pdfs, 40, randprune=4.0, jobs=jobs)
    signs = np.sign((ours * kaldi).sum(1))
    np.testing.assert_allclose(ours * signs[:, None], kaldi, atol=2e-5, err_msg="two jobs")


def test_lda_mllt_system_against_kaldi(synth: Setup, synth_tri1, synth_tri2, tmp_path: Path) -> None:  # noqa: ANN001
    """final.mat is what Kaldi's transform-feats applies; the MLLT update equals gmm-acc-mllt + est-mllt on the same
    model, features and alignments, without random pruning and with --rand-prune 4 (train_lda_mllt.sh's: the same
    Gaussian posteriors kept); Kaldi reads the model, tree and alignments."""
    import kaldiio

    from asr_bn.gmm.lda_mllt import mllt_stats, estimate_mllt, splice

    _, feats, _, lang, _, _, _ = synth_tri1
    system, tri2, report = synth_tri2
    assert report.num_skipped == 0 and (tri2 / "splice_opts").read_text().split() == ["--left-context=3", "--right-context=3"]
    sil = lang.phones[lang.silence_phone]
    static = _static_ark(feats, tmp_path / "static.ark")
    mat = kaldiio.load_mat(str(tri2 / "final.mat"))
    assert mat.shape == (40, 91)
    projected = {u: (splice(x, 3) @ mat.T).astype(np.float32) for u, x in static.items()}
    kaldiio.save_ark(str(tmp_path / "spliced.ark"), {u: splice(x, 3) for u, x in static.items()})
    run_kaldi(synth.bundle, "transform-feats", tri2 / "final.mat", f"ark:{tmp_path / 'spliced.ark'}",
              f"ark:{tmp_path / 'proj.ark'}")
    kaldi_projected = dict(kaldiio.load_ark(str(tmp_path / "proj.ark")))
    assert all(np.allclose(kaldi_projected[u], projected[u], atol=1e-5) for u in projected)
    tm = system.transition_model()
    pdfs = {}
    for labels in read_alignments(tri2):
        pdf = tm.to_pdfs(np.asarray(labels.values)).astype(np.int64)
        pdf[np.isin(tm.to_phones(np.asarray(labels.values)), [sil])] = -1
        pdfs[labels.utt] = pdf
    run_kaldi(synth.bundle, "ali-to-post", f"ark:gunzip -c {tri2 / 'ali.1.gz'}|", f"ark:{tmp_path / 'post.ark'}")
    run_kaldi(synth.bundle, "weight-silence-post", "0.0", str(sil), tri2 / "final.mdl", f"ark:{tmp_path / 'post.ark'}",
              f"ark:{tmp_path / 'wpost.ark'}")
    for prune in (0.0, 4.0):
        beta, g = mllt_stats(system, projected, pdfs, randprune=prune)
        run_kaldi(synth.bundle, "gmm-acc-mllt", f"--rand-prune={prune}", tri2 / "final.mdl",
                  f"ark:{tmp_path / 'proj.ark'}", f"ark:{tmp_path / 'wpost.ark'}", tmp_path / "mllt.acc")
        run_kaldi(synth.bundle, "est-mllt", tmp_path / "mllt.mat", tmp_path / "mllt.acc")
        np.testing.assert_allclose(estimate_mllt(beta, g), kaldiio.load_mat(str(tmp_path / "mllt.mat")), atol=1e-5,
                                   err_msg=f"--rand-prune={prune}")
    jobs, acc = _two_kaldi_jobs(synth.bundle, projected, tmp_path / "mllt", ["gmm-acc-mllt", "--rand-prune=4.0",
                                tri2 / "final.mdl", "FEATS", f"ark:{tmp_path / 'wpost.ark'}", "ACC"], "sum-mllt-accs")
    run_kaldi(synth.bundle, "est-mllt", tmp_path / "mllt.mat", acc)
    np.testing.assert_allclose(estimate_mllt(*mllt_stats(system, projected, pdfs, randprune=4.0, jobs=jobs)),
                               kaldiio.load_mat(str(tmp_path / "mllt.mat")), atol=1e-5, err_msg="two jobs")
    info = run_kaldi(synth.bundle, "gmm-info", tri2 / "final.mdl")
    assert f"number of pdfs {system.am.num_pdfs}" in info and "feature dimension 40" in info
    pdfs_text = run_kaldi(synth.bundle, "ali-to-pdf", tri2 / "final.mdl", f"ark:gunzip -c {tri2 / 'ali.1.gz'}|", "ark,t:-")
    assert len(pdfs_text.splitlines()) == 40


def _speakers(prep: Path) -> dict[str, str]:
    from asr_bn.data import load_data_dir
    from asr_bn.report import Report

    data = load_data_dir(prep, Report("test"))
    return {u: data.utterances[u].speaker for u in data.utterances}


def test_fmllr_is_gmm_est_fmllrs(synth: Setup, synth_tri1, synth_tri2, tmp_path: Path) -> None:  # noqa: ANN001
    """Per-speaker fMLLR from the LDA+MLLT system's model, features and alignments (silence weight 0) against
    ali-to-post | weight-silence-post | gmm-est-fmllr --spk2utt: the same matrices."""
    import kaldiio

    from asr_bn.gmm.sat import SatConfig, estimate_speaker_transforms, frame_weights, speaker_independent_features
    from asr_bn.gmm.system import GmmSystem
    from asr_bn.report import Report

    _, feats, _, lang, _, _, prep = synth_tri1
    _, tri2, _ = synth_tri2
    sil = lang.phones[lang.silence_phone]
    spk2utt: dict[str, list[str]] = {}
    for utt, spk in sorted(_speakers(prep).items()):
        spk2utt.setdefault(spk, []).append(utt)
    si = speaker_independent_features(feats, tri2)
    kaldiio.save_ark(str(tmp_path / "si.ark"), si)
    (tmp_path / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in spk2utt.items()))
    system = GmmSystem.load(tri2 / "final.mdl")
    alis = {labels.utt: labels.values for labels in read_alignments(tri2)}
    ours = estimate_speaker_transforms(system, si, frame_weights(system.transition_model(), alis, [sil], 0.0), spk2utt,
                                       SatConfig(), Report("fmllr"))
    run_kaldi(synth.bundle, "ali-to-post", f"ark:gunzip -c {tri2 / 'ali.1.gz'}|", f"ark:{tmp_path / 'post.ark'}")
    run_kaldi(synth.bundle, "weight-silence-post", "0.0", str(sil), tri2 / "final.mdl", f"ark:{tmp_path / 'post.ark'}",
              f"ark:{tmp_path / 'wpost.ark'}")
    run_kaldi(synth.bundle, "gmm-est-fmllr", "--fmllr-update-type=full", f"--spk2utt=ark:{tmp_path / 'spk2utt'}",
              tri2 / "final.mdl", f"ark:{tmp_path / 'si.ark'}", f"ark:{tmp_path / 'wpost.ark'}",
              f"ark:{tmp_path / 'trans.ark'}")
    kaldi = dict(kaldiio.load_ark(str(tmp_path / "trans.ark")))
    assert set(kaldi) == set(ours) and len(ours) == 4
    for spk in kaldi:
        np.testing.assert_allclose(ours[spk], kaldi[spk], atol=1e-5)


@pytest.fixture(scope="module")
def synth_tri3(synth_tri1, synth_tri2, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    """A short train_sat run from the LDA+MLLT system's alignments: (system, exp dir, report)."""
    from asr_bn.gmm.sat import SatConfig, train_sat

    _, feats, text, lang, _, _, prep = synth_tri1
    _, tri2, _ = synth_tri2
    cfg = SatConfig(num_leaves=100, tot_gauss=400, num_iters=6, max_iter_inc=4, realign_iters=(3,), fmllr_iters=(2,))
    out = tmp_path_factory.mktemp("tri3") / "tri3"
    system, report = train_sat(feats, text, _speakers(prep), lang, tri2, out, cfg)
    return system, out, report


def test_sat_exp_dir_against_kaldi(synth: Setup, synth_tri1, synth_tri2, synth_tri3, tmp_path: Path) -> None:  # noqa: ANN001
    """train_sat: trans.1 applied by Kaldi's transform-feats --utt2spk gives the features asr-bn trained on; Kaldi
    reads final.mdl, final.alimdl, tree and alignments; a speaker under --fmllr-min-count keeps the identity, counted."""
    import kaldiio

    from asr_bn.gmm.sat import SatConfig, apply_fmllr, speaker_independent_features

    _, feats, text, lang, _, _, prep = synth_tri1
    _, tri2, _ = synth_tri2
    system, tri3, report = synth_tri3
    utt2spk = _speakers(prep)
    assert report.num_skipped == 0 and (tri3 / "final.mat").read_bytes() == (tri2 / "final.mat").read_bytes()
    si = speaker_independent_features(feats, tri2)
    kaldiio.save_ark(str(tmp_path / "si.ark"), si)
    (tmp_path / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in sorted(utt2spk.items())))
    run_kaldi(synth.bundle, "transform-feats", f"--utt2spk=ark:{tmp_path / 'utt2spk'}", f"ark:{tri3 / 'trans.1'}",
              f"ark:{tmp_path / 'si.ark'}", f"ark:{tmp_path / 'adapted.ark'}")
    transforms = dict(kaldiio.load_ark(str(tri3 / "trans.1")))
    for utt, x in kaldiio.load_ark(str(tmp_path / "adapted.ark")):
        np.testing.assert_allclose(x, apply_fmllr(transforms[utt2spk[utt]], si[utt]), atol=1e-4)
    for model in ("final.mdl", "final.alimdl"):
        assert f"number of pdfs {system.am.num_pdfs}" in run_kaldi(synth.bundle, "gmm-info", tri3 / model)
    assert len(run_kaldi(synth.bundle, "ali-to-pdf", tri3 / "final.mdl", f"ark:gunzip -c {tri3 / 'ali.1.gz'}|",
                         "ark,t:-").splitlines()) == 40
    from asr_bn.gmm.sat import estimate_speaker_transforms, frame_weights
    from asr_bn.report import Report

    few = Report("fmllr")
    spk2utt: dict[str, list[str]] = {}
    for utt, spk in sorted(utt2spk.items()):
        spk2utt.setdefault(spk, []).append(utt)
    alis = {labels.utt: labels.values for labels in read_alignments(tri3)}
    weights = frame_weights(system.transition_model(), alis, [lang.phones[lang.silence_phone]], 0.0)
    kept = estimate_speaker_transforms(system, si, weights, spk2utt, SatConfig(fmllr_min_count=1e9), few)
    assert few.counts["speakers with too little data for fMLLR (identity kept)"] == 4 and len(few.notes) == 4
    identity = np.concatenate([np.eye(40), np.zeros((40, 1))], axis=1)
    assert all(np.array_equal(m, identity) for m in kept.values())


def test_alignment_model_is_gmm_est_on_two_feature_statistics(synth: Setup, synth_tri1, synth_tri2,  # noqa: ANN001
                                                               synth_tri3, tmp_path: Path) -> None:
    """final.alimdl is train_sat.sh's: ali-to-post | gmm-acc-stats-twofeats final.mdl ADAPTED SI, then gmm-est
    --remove-low-count-gaussians=false (every Gaussian kept, those with too little data as they were): Kaldi's model
    from the same features and alignments has the same transitions, weights, means and variances to float rounding."""
    import kaldiio

    from asr_bn.gmm.sat import fmllr_adapted, speaker_independent_features

    _, feats, _, _, _, _, prep = synth_tri1
    _, tri2, _ = synth_tri2
    _, tri3, _ = synth_tri3
    k = synth.bundle
    si = speaker_independent_features(feats, tri2)
    adapted = fmllr_adapted(si, dict(kaldiio.load_ark(str(tri3 / "trans.1"))), _speakers(prep))
    kaldiio.save_ark(str(tmp_path / "si.ark"), si)
    kaldiio.save_ark(str(tmp_path / "adapted.ark"), adapted)
    run_kaldi(k, "ali-to-post", f"ark:gunzip -c {tri3 / 'ali.1.gz'}|", f"ark:{tmp_path / 'post'}")
    run_kaldi(k, "gmm-acc-stats-twofeats", tri3 / "final.mdl", f"ark:{tmp_path / 'adapted.ark'}",
              f"ark:{tmp_path / 'si.ark'}", f"ark:{tmp_path / 'post'}", tmp_path / "acc")
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "tree").write_bytes((tri3 / "tree").read_bytes())  # (GmmSystem.load reads the tree beside)
    run_kaldi(k, "gmm-est", "--remove-low-count-gaussians=false", tri3 / "final.mdl", tmp_path / "acc",
              tmp_path / "k" / "final.alimdl")
    from asr_bn.gmm.system import GmmSystem

    ours, kaldi = (GmmSystem.load(path) for path in (tri3 / "final.alimdl", tmp_path / "k" / "final.alimdl"))
    assert ours.am.num_pdfs == kaldi.am.num_pdfs
    np.testing.assert_allclose(read_transition_model(tri3 / "final.alimdl").log_probs,
                               read_transition_model(tmp_path / "k" / "final.alimdl").log_probs, rtol=1e-6, atol=1e-6)
    for pdf in range(ours.am.num_pdfs):
        a, b = ours.am.get_pdf(pdf), kaldi.am.get_pdf(pdf)
        np.testing.assert_allclose(np.asarray(a.weights), np.asarray(b.weights), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(a.inv_vars), np.asarray(b.inv_vars), rtol=1e-4)
        np.testing.assert_allclose(np.asarray(a.means_invvars), np.asarray(b.means_invvars), rtol=1e-4, atol=1e-4)


def test_fmllr_feats_are_kaldis_pipeline_and_train_a_network(synth: Setup, synth_tri1, synth_tri3,  # noqa: ANN001
                                                             tmp_path: Path) -> None:
    """asr-bn gmm fmllr-feats (make_fmllr_feats.sh) gives what Kaldi's splice-feats | transform-feats final.mat |
    transform-feats --utt2spk trans.1 gives, in a prepared dir Kaldi's copy-feats reads, with ali-to-pdf's targets;
    a network trains on it and refuses the fbank it was not trained on; bad inputs are one line each."""
    import kaldiio

    _, feats, _, _, tri1, _, prep = synth_tri1
    _, tri3, _ = synth_tri3
    app, runner, out = build_app(), CliRunner(), tmp_path / "fmllr"
    result = runner.invoke(app, ["gmm", "fmllr-feats", str(prep), str(tri3), str(out), "--transform-dir", str(tri3),
                                 "--ali-dir", str(tri3)])
    assert result.exit_code == 0, result.output
    assert "targets: features 40, alignments 40, written 40" in result.output
    pipeline = json.loads((out / "pipeline.json").read_text())
    assert pipeline["input"].startswith("fmllr ") and pipeline["input_dim"] == 40 and pipeline["cmvn"] == "none"
    k = synth.bundle
    kaldiio.save_ark(str(tmp_path / "ceps.ark"), {u: np.ascontiguousarray(feats[u][:, :13]) for u in sorted(feats)})
    (tmp_path / "utt2spk").write_text((prep / "utt2spk").read_text())
    run_kaldi(k, "splice-feats", "--left-context=3", "--right-context=3", f"ark:{tmp_path / 'ceps.ark'}",
              f"ark:{tmp_path / 'spliced.ark'}")
    run_kaldi(k, "transform-feats", tri3 / "final.mat", f"ark:{tmp_path / 'spliced.ark'}", f"ark:{tmp_path / 'lda.ark'}")
    run_kaldi(k, "transform-feats", f"--utt2spk=ark:{tmp_path / 'utt2spk'}", f"ark:{tri3 / 'trans.1'}",
              f"ark:{tmp_path / 'lda.ark'}", f"ark:{tmp_path / 'kaldi.ark'}")
    run_kaldi(k, "copy-feats", f"scp:{out / 'feats.scp'}", f"ark:{tmp_path / 'ours.ark'}")
    kaldi, ours = dict(kaldiio.load_ark(str(tmp_path / "kaldi.ark"))), dict(kaldiio.load_ark(str(tmp_path / "ours.ark")))
    assert set(ours) == set(kaldi) == set(feats)
    for utt in kaldi:
        np.testing.assert_allclose(ours[utt], kaldi[utt], atol=1e-3, rtol=1e-4)
    pdfs = run_kaldi(k, "ali-to-pdf", tri3 / "final.mdl", f"ark:gunzip -c {tri3 / 'ali.1.gz'}|", "ark,t:-")
    targets = dict(kaldiio.load_scp(str(out / "pdf.scp")))
    for line in pdfs.splitlines():
        utt, *ids = line.split()
        assert targets[utt].tolist() == [int(i) for i in ids]
    tiny = ["--layers", "1", "--units", "8", "--batch-size", "4", "--num-workers", "0", "--device", "cpu",
            "--epochs", "1"]
    result = runner.invoke(app, ["train", str(out), str(out), str(tmp_path / "exp"), *tiny])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["forward", str(tmp_path / "exp"), str(out), f"ark:{tmp_path / 'll.ark'}"])
    assert result.exit_code == 0 and len(dict(kaldiio.load_ark(str(tmp_path / "ll.ark")))) == 40, result.output
    result = runner.invoke(app, ["forward", str(tmp_path / "exp"), str(prep), f"ark:{tmp_path / 'no.ark'}"])
    assert result.exit_code == 1 and "input fbank (not fmllr" in result.output, result.output
    for args, error in (([str(tri1), str(tmp_path / "o1"), "--transform-dir", str(tri3)], "has no final.mat"),
                        ([str(tri3), str(tmp_path / "o2"), "--transform-dir", str(tri1)], "no trans.N files"),
                        ([str(tri3), str(prep), "--transform-dir", str(tri3)], "is the prepared dir itself")):
        result = runner.invoke(app, ["gmm", "fmllr-feats", str(prep), *args])
        assert result.exit_code != 0 and error in result.output and "Traceback" not in result.output, result.output
        assert not (tmp_path / "o1" / "feats.scp").exists() and not (tmp_path / "o2" / "feats.scp").exists()
    (tmp_path / "mfcc").mkdir()  # a Kaldi data dir of MFCC (no pipeline.json): the fbank behind it is unknown
    result = runner.invoke(app, ["gmm", "fmllr-feats", str(tmp_path / "mfcc"), str(tri3), str(tmp_path / "o3"),
                                 "--transform-dir", str(tri3)])
    assert result.exit_code != 0 and "has no pipeline.json" in result.output and "make_fmllr_feats.sh" in result.output


def test_fmllr_feats_append_fbank_is_kaldis_paste_feats(synth: Setup, synth_tri1, synth_tri3,  # noqa: ANN001
                                                         tmp_path: Path) -> None:
    """--append-fbank gives what Kaldi's paste-feats gives of the adapted features and the prepared dir's fbank
    through apply-cmvn (its speakers' stats, no Δ); the pipeline says so, and its difference from the fMLLR features'
    pipeline (what a network trained on either says when given the other) names the input."""
    import kaldiio

    *_, prep = synth_tri1
    _, tri3, _ = synth_tri3
    app, runner, k = build_app(), CliRunner(), synth.bundle
    for name, extra in (("plain", []), ("pasted", ["--append-fbank"])):
        result = runner.invoke(app, ["gmm", "fmllr-feats", str(prep), str(tri3), str(tmp_path / name),
                                     "--transform-dir", str(tri3), *extra])
        assert result.exit_code == 0, result.output
    pipeline = json.loads((tmp_path / "pasted" / "pipeline.json").read_text())
    plain = json.loads((tmp_path / "plain" / "pipeline.json").read_text())
    assert pipeline["input"] == plain["input"].replace("fmllr ", "fmllr+fbank ") and pipeline["input_dim"] == 80
    run_kaldi(k, "paste-feats", f"scp:{tmp_path / 'plain' / 'feats.scp'}",
              f"ark:apply-cmvn --utt2spk=ark:{prep / 'utt2spk'} scp:{prep / 'cmvn.scp'} scp:{prep / 'feats.scp'} ark:- |",
              f"ark:{tmp_path / 'kaldi.ark'}")
    run_kaldi(k, "copy-feats", f"scp:{tmp_path / 'pasted' / 'feats.scp'}", f"ark:{tmp_path / 'ours.ark'}")
    kaldi, ours = dict(kaldiio.load_ark(str(tmp_path / "kaldi.ark"))), dict(kaldiio.load_ark(str(tmp_path / "ours.ark")))
    assert set(ours) == set(kaldi) and len(ours) == 40
    for utt in kaldi:
        assert ours[utt].shape == kaldi[utt].shape == (kaldi[utt].shape[0], 80)
        np.testing.assert_allclose(ours[utt], kaldi[utt], atol=1e-4, rtol=1e-5)
    from asr_bn.features import FeaturePipeline

    mismatch = FeaturePipeline.from_dict(plain).mismatch(FeaturePipeline.from_dict(pipeline))
    assert "input fmllr+fbank" in mismatch and "asr-bn gmm fmllr-feats" in mismatch


def test_align_fmllr_is_kaldis(synth: Setup, synth_tri1, synth_tri3, tmp_path: Path) -> None:  # noqa: ANN001
    """align_fmllr against Kaldi's align_fmllr.sh pipeline on the same SAT system, features and graphs:
    gmm-align-compiled with final.alimdl, ali-to-post | weight-silence-post | gmm-post-to-gpost | gmm-est-fmllr-gpost,
    then gmm-align-compiled with final.mdl on the adapted features: the same transforms, >= 99 % of frames agree."""
    import kaldiio

    from asr_bn.gmm.sat import align_fmllr, speaker_independent_features
    from asr_bn.lang import lexicon_fst

    _, feats, text, lang, _, _, prep = synth_tri1
    _, tri3, _ = synth_tri3
    utt2spk = _speakers(prep)
    report = align_fmllr(tri3, feats, text, utt2spk, lang, tmp_path / "ali")
    assert report.counts["aligned"] == 40 and report.num_skipped == 0
    ours = {labels.utt: labels.values for labels in read_alignments(tmp_path / "ali")}
    k = synth.bundle
    si = tmp_path / "si.ark"
    kaldiio.save_ark(str(si), speaker_independent_features(feats, tri3))
    lexicon_fst(lang, 0.5).write(str(tmp_path / "L.fst"))
    (tmp_path / "disambig.int").write_text("".join(f"{i}\n" for i in lang.disambig_phone_ids))
    (tmp_path / "text.int").write_text("".join(f"{u} {' '.join(str(lang.words[w]) for w in text[u].split())}\n"
                                               for u in sorted(text)))
    spk2utt: dict[str, list[str]] = {}
    for utt, spk in sorted(utt2spk.items()):
        spk2utt.setdefault(spk, []).append(utt)
    (tmp_path / "spk2utt").write_text("".join(f"{s} {' '.join(u)}\n" for s, u in spk2utt.items()))
    (tmp_path / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in sorted(utt2spk.items())))
    g, scales = f"ark:{tmp_path / 'g.fsts'}", ["--transition-scale=1.0", "--acoustic-scale=0.1", "--self-loop-scale=0.1",
                                               "--beam=10", "--retry-beam=40"]
    run_kaldi(k, "compile-train-graphs", f"--read-disambig-syms={tmp_path / 'disambig.int'}", tri3 / "tree",
              tri3 / "final.mdl", tmp_path / "L.fst", f"ark:{tmp_path / 'text.int'}", g)
    run_kaldi(k, "gmm-align-compiled", *scales, tri3 / "final.alimdl", g, f"ark:{si}", f"ark:{tmp_path / 'pre.ali'}")
    sil = str(lang.phones[lang.silence_phone])
    run_kaldi(k, "ali-to-post", f"ark:{tmp_path / 'pre.ali'}", f"ark:{tmp_path / 'post'}")
    run_kaldi(k, "weight-silence-post", "0.0", sil, tri3 / "final.alimdl", f"ark:{tmp_path / 'post'}",
              f"ark:{tmp_path / 'wpost'}")
    run_kaldi(k, "gmm-post-to-gpost", tri3 / "final.alimdl", f"ark:{si}", f"ark:{tmp_path / 'wpost'}",
              f"ark:{tmp_path / 'gpost'}")
    run_kaldi(k, "gmm-est-fmllr-gpost", "--fmllr-update-type=full", f"--spk2utt=ark:{tmp_path / 'spk2utt'}",
              tri3 / "final.mdl", f"ark:{si}", f"ark:{tmp_path / 'gpost'}", f"ark:{tmp_path / 'trans'}")
    kaldi_trans = dict(kaldiio.load_ark(str(tmp_path / "trans")))
    our_trans = dict(kaldiio.load_ark(str(tmp_path / "ali" / "trans.1")))
    for spk in kaldi_trans:
        np.testing.assert_allclose(our_trans[spk], kaldi_trans[spk], atol=1e-4)
    run_kaldi(k, "transform-feats", f"--utt2spk=ark:{tmp_path / 'utt2spk'}", f"ark:{tmp_path / 'trans'}", f"ark:{si}",
              f"ark:{tmp_path / 'adapted.ark'}")
    text_ali = run_kaldi(k, "gmm-align-compiled", *scales, tri3 / "final.mdl", g, f"ark:{tmp_path / 'adapted.ark'}",
                         "ark,t:-")
    kaldi = {line.split()[0]: np.array(line.split()[1:], int) for line in text_ali.splitlines()}
    same = sum(int((np.asarray(ours[u]) == kaldi[u]).sum()) for u in kaldi)
    assert set(kaldi) == set(ours) and same / sum(len(a) for a in kaldi.values()) >= 0.99


def test_cli_gmm_ladder(synth: Setup, synth_tri1, tmp_path: Path) -> None:  # noqa: ANN001
    """asr-bn gmm mono | deltas | lda-mllt | sat --fast, align-fmllr, align and likes of an LDA+MLLT system, each
    with Kaldi's argument order; likes and align refuse a speaker-adapted system with one line."""
    runner = CliRunner()
    *_, prep = synth_tri1
    corpus = synth.work / "corpus"
    lang, mono_ali = corpus / "lang", corpus / "exp" / "ali_train"
    for args in (
        ["mono", prep, lang, tmp_path / "mono", "--fast", "--seed", "2"],
        ["deltas", "100", "400", prep, lang, mono_ali, tmp_path / "tri1", "--fast"],
        ["lda-mllt", "100", "400", prep, lang, tmp_path / "tri1", tmp_path / "tri2", "--fast"],
        ["align", prep, lang, tmp_path / "tri2", tmp_path / "tri2_ali"],
        ["sat", "100", "400", prep, lang, tmp_path / "tri2_ali", tmp_path / "tri3", "--fast"],
        ["align-fmllr", prep, lang, tmp_path / "tri3", tmp_path / "tri3_ali", "--nj", "2"],
        ["likes", prep, tmp_path / "tri2", tmp_path / "likes"],
    ):
        result = runner.invoke(app, ["gmm", *map(str, args)])
        assert result.exit_code == 0, (args, result.output)
        bar = {"mono": "train mono", "deltas": "train_deltas", "lda-mllt": "train_lda_mllt", "align": "align",
               "sat": "train_sat", "align-fmllr": "align-fmllr "}.get(args[0])  # rich's bar, printed once off a terminal
        assert bar is None or any(line.startswith(bar) for line in result.output.splitlines()), (bar, result.output)
    assert (tmp_path / "tri3_ali" / "ali.2.gz").is_file() and (tmp_path / "tri3_ali" / "trans.1").is_file()
    assert json.loads((tmp_path / "tri2" / "config.json").read_text())["train_lda_mllt"]["num_iters"] == 8
    assert json.loads((tmp_path / "mono" / "config.json").read_text())["mono"]["seed"] == 2
    # --first-ali: the seed's own flat start, given as an ali dir, trains the same model
    from asr_bn.gmm.align import write_alignments
    from asr_bn.gmm.features import prepared_gmm_features
    from asr_bn.gmm.mono import MonoConfig, flat_start
    from asr_bn.lang import read_lang

    feats, text, _ = prepared_gmm_features(prep)
    (tmp_path / "ali0").mkdir()
    first = flat_start(feats, text, read_lang(lang), MonoConfig(seed=2))
    write_alignments(tmp_path / "ali0", first, [sorted(first)])
    result = runner.invoke(app, ["gmm", "mono", str(prep), str(lang), str(tmp_path / "mono_given"), "--fast", "--seed", "2",
                                 "--first-ali", str(tmp_path / "ali0")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mono_given" / "final.mdl").read_bytes() == (tmp_path / "mono" / "final.mdl").read_bytes()
    assert json.loads((tmp_path / "mono_given" / "config.json").read_text())["flat_start"] == "given first-pass alignments"
    import kaldiio

    likes = dict(kaldiio.load_scp(str(tmp_path / "likes" / "loglikes.scp")))
    assert len(likes) == 40 and next(iter(likes.values())).shape[1] == GmmSystemFor(tmp_path / "tri2").am.num_pdfs
    # align --loglikes given several times: their mean (the same matrix twice: itself); a source short of utterances
    scp = str(tmp_path / "likes" / "loglikes.scp")
    for out, sources, nj in (("net_ali", [scp], "1"), ("ens_ali", [scp, scp], "2")):  # read by utterance in 2 jobs
        loglikes = [a for s in sources for a in ("--loglikes", s)]
        result = runner.invoke(app, ["gmm", "align", str(prep), str(lang), str(tmp_path / "tri2"), str(tmp_path / out),
                                     *loglikes, "--nj", nj])
        assert result.exit_code == 0, result.output
    one, two = ({x.utt: x.values for x in read_alignments(tmp_path / d)} for d in ("net_ali", "ens_ali"))
    assert len(one) == 40 and one.keys() == two.keys() and all(np.array_equal(one[u], two[u]) for u in one)
    (tmp_path / "short.scp").write_text("".join(Path(scp).read_text().splitlines(keepends=True)[:-1]))
    result = runner.invoke(app, ["gmm", "align", str(prep), str(lang), str(tmp_path / "tri2"), str(tmp_path / "z"),
                                 "--loglikes", scp, "--loglikes", str(tmp_path / "short.scp")])
    assert result.exit_code == 1 and "short.scp lacks 1 of the 40 utterances" in result.output, result.output
    for cmd in (["likes", prep, tmp_path / "tri3", tmp_path / "likes3"], ["align", prep, lang, tmp_path / "tri3",
                                                                          tmp_path / "x"]):
        result = runner.invoke(app, ["gmm", *map(str, cmd)])
        assert result.exit_code == 2 and "align-fmllr" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["gmm", "deltas", "100", "400", str(prep), str(lang), str(mono_ali), str(tmp_path / "y"),
                                 "--realign-iters", "5 50"])
    assert result.exit_code == 2 and "realign_iters" in result.output


def GmmSystemFor(exp: Path):  # noqa: ANN201, N802 - the GmmSystem of an exp dir
    from asr_bn.gmm.system import GmmSystem

    return GmmSystem.load(exp / "final.mdl")


# ---------------------------------------------------------------------------------------------------------------------
# Two-pass fMLLR decoding (asr_bn.gmm.decode_fmllr) against Kaldi's tools and steps/decode_fmllr.sh


@pytest.fixture(scope="module")
def synth_sat_decoding(synth: Setup, synth_tri3,  # noqa: ANN001, ANN201 - (graph dir, prep dir)
                       tmp_path_factory: pytest.TempPathFactory):
    """The SAT system's graph (word loop) and the synth corpus's dev set prepared: (graph dir, prep dir)."""
    from asr_bn.features import FeaturePipeline
    from asr_bn.mkgraph import build_graph
    from asr_bn.prep import prepare_kaldi

    _, tri3, _ = synth_tri3
    work = tmp_path_factory.mktemp("sat_decode")
    prepare_kaldi(synth.work / "corpus" / "data" / "dev", work / "dev", FeaturePipeline())
    return build_graph(synth.work / "corpus" / "lang", tri3, work / "graph"), work / "dev"


def _kaldi_data(feats, utt2spk: dict[str, str], work: Path) -> Path:  # noqa: ANN001 - the GMM features
    """A Kaldi data dir of the GMM features' static cepstra (already mean-normalised per speaker), utt2spk and
    spk2utt."""
    import kaldiio

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    kaldiio.save_ark(str(data / "feats.ark"), {u: np.ascontiguousarray(feats[u][:, :13]) for u in sorted(feats)},
                     scp=str(data / "feats.scp"))
    (data / "utt2spk").write_text("".join(f"{u} {utt2spk[u]}\n" for u in sorted(feats)))
    spk2utt: dict[str, list[str]] = {}
    for utt in sorted(feats):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    (data / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n" for s, us in sorted(spk2utt.items())))
    return data


def test_decode_fmllr_is_kaldis_tools_on_its_lattices(synth: Setup, synth_tri3, synth_sat_decoding,  # noqa: ANN001
                                                      tmp_path: Path) -> None:
    """asr-bn gmm decode-fmllr, each step against Kaldi's binaries on asr-bn's own lattices (rich ones: this small
    system gets most dev words wrong): pass 1's lattice-determinize-pruned --beam=6 | lattice-to-post |
    weight-silence-post | gmm-post-to-gpost | gmm-est-fmllr-gpost, pass 2's gmm-rescore-lattice |
    lattice-determinize-pruned --beam=4 | lattice-to-post | weight-silence-post | gmm-est-fmllr | compose-transforms
    give trans.1; gmm-rescore-lattice with those transforms gives the words; likes --transform-dir gives
    gmm-compute-likes on transform-feats --utt2spk trans.1."""
    import kaldiio

    from asr_bn.alignments.posteriors import read_posteriors
    from asr_bn.fst import parse_lattice
    from asr_bn.gmm.decode_fmllr import best_alignment_posteriors
    from asr_bn.gmm.features import prepared_gmm_features
    from asr_bn.gmm.sat import speaker_independent_features

    _, tri3, _ = synth_tri3
    graph, prep = synth_sat_decoding
    out = tmp_path / "decode_dev"
    result = CliRunner().invoke(app, ["gmm", "decode-fmllr", str(graph), str(prep), str(tri3), str(out),
                                      "--lmwt", "9:10"])
    assert result.exit_code == 0, result.output
    written = {p.name for p in out.iterdir()}
    assert {"trans.1", "lat.ark", "lat.scp", "text", "hyp_9", "hyp_10", "report.json"} <= written
    assert (tmp_path / "decode_dev.si" / "lat.scp").is_file()
    feats, _, _ = prepared_gmm_features(prep)
    data = _kaldi_data(feats, _speakers(prep), tmp_path)
    k, si = synth.bundle, tmp_path / "si.ark"
    kaldiio.save_ark(str(si), dict(speaker_independent_features(feats, tri3)))
    sil, spk2utt, utt2spk = (graph / "phones" / "silence.csl").read_text().strip(), data / "spk2utt", data / "utt2spk"
    acwt, t = "--acoustic-scale=0.083333", tmp_path
    run_kaldi(k, "lattice-determinize-pruned", acwt, "--beam=6", f"scp:{tmp_path / 'decode_dev.si' / 'lat.scp'}",
              f"ark:{t / 'lat1'}")  # what gmm-latgen-faster writes (--lattice-beam 6)
    run_kaldi(k, "lattice-to-post", acwt, f"ark:{t / 'lat1'}", f"ark:{t / 'post1'}")
    run_kaldi(k, "weight-silence-post", "0.01", sil, tri3 / "final.alimdl", f"ark:{t / 'post1'}", f"ark:{t / 'wpost1'}")
    run_kaldi(k, "gmm-post-to-gpost", tri3 / "final.alimdl", f"ark:{si}", f"ark:{t / 'wpost1'}", f"ark:{t / 'gpost'}")
    run_kaldi(k, "gmm-est-fmllr-gpost", "--fmllr-update-type=full", f"--spk2utt=ark:{spk2utt}", tri3 / "final.mdl",
              f"ark:{si}", f"ark:{t / 'gpost'}", f"ark:{t / 'pre_trans'}")
    pass1 = f"ark:{t / 'pass1.ark'}"
    run_kaldi(k, "transform-feats", f"--utt2spk=ark:{utt2spk}", f"ark:{t / 'pre_trans'}", f"ark:{si}", pass1)
    run_kaldi(k, "gmm-rescore-lattice", tri3 / "final.mdl", f"scp:{out / 'lat.scp'}", pass1, f"ark:{t / 'lat2'}")
    run_kaldi(k, "lattice-determinize-pruned", acwt, "--beam=4", f"ark:{t / 'lat2'}", f"ark:{t / 'lat2p'}")
    run_kaldi(k, "lattice-to-post", acwt, f"ark:{t / 'lat2p'}", f"ark:{t / 'post2'}")
    run_kaldi(k, "weight-silence-post", "0.01", sil, tri3 / "final.mdl", f"ark:{t / 'post2'}", f"ark:{t / 'wpost2'}")
    run_kaldi(k, "gmm-est-fmllr", "--fmllr-update-type=full", f"--spk2utt=ark:{spk2utt}", tri3 / "final.mdl", pass1,
              f"ark:{t / 'wpost2'}", f"ark:{t / 'trans_tmp'}")
    run_kaldi(k, "compose-transforms", "--b-is-affine=true", f"ark:{t / 'trans_tmp'}", f"ark:{t / 'pre_trans'}",
              f"ark:{t / 'trans'}")
    # Pass 1's posteriors per frame and pdf: Kaldi's to 1e-2 (measured: equal on most utterances, within 0.7 % on
    # the others; Kaldi's pruned determinization keeps a few word sequences past the beam, as it prunes with the
    # forward cost of merged states). The estimation from given posteriors is Kaldi's to 1e-4 elsewhere
    # (test_fmllr_is_gmm_est_fmllrs, test_align_fmllr_is_kaldis).
    tm, lat_scp = read_transition_model(tri3 / "final.alimdl"), tmp_path / "decode_dev.si" / "lat.scp"
    entries = [(line.split()[0], *line.split()[1].rsplit(":", 1)) for line in lat_scp.read_text().splitlines()]
    kaldi_post = dict(read_posteriors(t / "post1"))
    for i, (utt, ark, offset) in enumerate(entries):
        raw = Path(ark).read_bytes()
        end = int(entries[i + 1][2]) - len(entries[i + 1][0]) - 1 if i + 1 < len(entries) else len(raw)
        frames, tids, weights = best_alignment_posteriors(parse_lattice(raw[int(offset):end], utt), 1 / 12, utt, 6.0)
        ids, kaldi_weights = kaldi_post[utt]  # transition-ids here, padded with weight-0 entries
        kept = kaldi_weights.ravel() != 0
        kaldi_frames = np.repeat(np.arange(len(ids)), ids.shape[1])[kept]
        size = (len(ids), tm.num_pdfs)
        ours_pdf, kaldi_pdf = np.zeros(size), np.zeros(size)
        np.add.at(ours_pdf, (frames, tm.to_pdfs(tids)), weights)
        np.add.at(kaldi_pdf, (kaldi_frames, tm.to_pdfs(ids.ravel()[kept])), kaldi_weights.ravel()[kept])
        assert np.allclose(ours_pdf.sum(axis=1), 1, atol=1e-4) and np.abs(ours_pdf - kaldi_pdf).max() <= 1e-2, utt
    kaldi, ours = dict(kaldiio.load_ark(str(t / "trans"))), dict(kaldiio.load_ark(str(out / "trans.1")))
    assert set(kaldi) == set(ours) == {"s05-f4", "s06-m8"}
    for spk in kaldi:
        # A full 40 x 41 fMLLR estimated from a 6-utterance speaker of this synthesized corpus amplifies those
        # differences, through pass 2's lattices too. Measured (relative Frobenius norm): 1.0e-3 and 1.8e-2 on one
        # host, 5.5e-2 and 1.7e-3 on another (an AMD EPYC: OpenBLAS's kernels, hence the synthesized system, differ).
        assert np.linalg.norm(ours[spk] - kaldi[spk]) <= 1e-1 * np.linalg.norm(kaldi[spk])
    final = f"ark:{t / 'final.ark'}"
    run_kaldi(k, "transform-feats", f"--utt2spk=ark:{utt2spk}", f"ark:{out / 'trans.1'}", f"ark:{si}", final)
    run_kaldi(k, "gmm-rescore-lattice", tri3 / "final.mdl", f"scp:{out / 'lat.scp'}", final, f"ark:{t / 'lat3'}")
    words = run_kaldi(k, "lattice-best-path", acwt, f"--word-symbol-table={graph / 'words.txt'}", f"ark:{t / 'lat3'}",
                      "ark,t:-")
    id2word = {i: w for w, i in (line.split() for line in (graph / "words.txt").read_text().splitlines())}
    kaldi_text = {f[0]: [id2word[w] for w in f[1:]] for f in (line.split() for line in words.splitlines())}
    our_text = {f[0]: f[1:] for f in (line.split() for line in (out / "text").read_text().splitlines())}
    assert kaldi_text == our_text and len(our_text) == 12
    result = CliRunner().invoke(app, ["gmm", "likes", str(prep), str(tri3), str(t / "likes"), "--transform-dir",
                                      str(out)])
    assert result.exit_code == 0, result.output
    run_kaldi(k, "gmm-compute-likes", tri3 / "final.mdl", final, f"ark:{t / 'kaldi_likes'}")
    likes = dict(kaldiio.load_scp(str(t / "likes" / "loglikes.scp")))
    for utt, kaldi_likes in kaldiio.load_ark(str(t / "kaldi_likes")):
        np.testing.assert_allclose(likes[utt], kaldi_likes, rtol=1e-4, atol=1e-2)


def test_decode_fmllr_against_decode_fmllr_sh(synth: Setup, synth_tri1, synth_tri3, synth_sat_decoding,  # noqa: ANN001
                                              tmp_path: Path) -> None:
    """Kaldi's steps/decode_fmllr.sh itself on the same graph, models and features (training set), its
    gmm-latgen-faster replaced by gmm-latgen-simple (the decoder asr-bn has, kaldi-decoder's LatticeSimpleDecoder):
    the same words in both passes, the same transforms (measured: to 1e-6 of their size)."""
    import shutil
    import subprocess

    import kaldiio

    from asr_bn.gmm.decode_fmllr import decode_fmllr
    from conftest import kaldi_s5_scripts

    _, feats, _, _, _, _, prep = synth_tri1
    _, tri3, _ = synth_tri3
    graph, _ = synth_sat_decoding
    utt2spk = _speakers(prep)
    s5 = tmp_path / "s5"
    kaldi_s5_scripts(s5, synth.bundle)
    data = _kaldi_data(feats, utt2spk, s5)
    run_kaldi(synth.bundle, "compute-cmvn-stats", f"--spk2utt=ark:{data / 'spk2utt'}", f"scp:{data / 'feats.scp'}",
              f"ark,scp:{data / 'cmvn.ark'},{data / 'cmvn.scp'}")
    src = s5 / "exp" / "tri3"
    src.mkdir(parents=True)
    for name in ("final.mdl", "final.alimdl", "final.mat", "splice_opts", "tree"):
        shutil.copy(tri3 / name, src / name)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "gmm-latgen-faster").write_text('#!/usr/bin/env bash\na=(); for x in "$@"; do [[ $x == --max-active=* ]] '
                                            '|| a+=("$x"); done; exec gmm-latgen-simple "${a[@]}"\n')
    (shim / "gmm-latgen-faster").chmod(0o755)
    with (s5 / "path.sh").open("a") as f:  # the scripts source path.sh themselves: the shim goes first there
        f.write(f"export PATH={shim}:$PATH\n")
    done = subprocess.run(["bash", "-c", f". ./path.sh && steps/decode_fmllr.sh --nj 1 --skip-scoring true {graph} "
                           "data exp/tri3/decode"], cwd=s5, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "(gmm-latgen-simple" in (src / "decode.si" / "log" / "decode.1.log").read_text()
    ours = tmp_path / "ours" / "decode"
    report = decode_fmllr(graph, feats, utt2spk, tri3, ours)
    assert report.counts["decoded"] == 40 and report.counts["partial"] == 0
    id2word = {i: w for w, i in (line.split() for line in (graph / "words.txt").read_text().splitlines())}
    for name in ("decode.si", "decode"):
        best = run_kaldi(synth.bundle, "lattice-best-path", "--acoustic-scale=0.083333",
                         f"ark:gunzip -c {s5 / 'exp' / 'tri3' / name / 'lat.1.gz'}|", "ark,t:-")
        kaldi = {f[0]: [id2word[w] for w in f[1:]] for f in (line.split() for line in best.splitlines())}
        mine = {f[0]: f[1:] for f in (line.split() for line in (ours.parent / name / "text").read_text().splitlines())}
        assert kaldi == mine and len(mine) == 40, name
    kaldi_trans = dict(kaldiio.load_ark(str(src / "decode" / "trans.1")))
    our_trans = dict(kaldiio.load_ark(str(ours / "trans.1")))
    assert set(kaldi_trans) == set(our_trans) and len(our_trans) == 4
    for spk in kaldi_trans:
        assert np.abs(our_trans[spk] - kaldi_trans[spk]).max() <= 1e-4 * np.abs(kaldi_trans[spk]).max()  # ~1e-6


def test_decode_fmllr_jobs_side_by_side_decode_as_one(synth: Setup, synth_tri3, synth_sat_decoding,  # noqa: ANN001
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--nj 2: each part of the data (whole speakers) decoded and adapted in a process of its own writes what one
    job writes, in processes or one after the other: every word and transform byte (fMLLR is per speaker), and
    lattices Kaldi's lattice-equivalent finds equivalent (a decoder's state numbering follows what it decoded
    before, as between Kaldi's jobs)."""
    from asr_bn import jobs
    from asr_bn.config import DecodeFmllrConfig
    from asr_bn.gmm.decode_fmllr import decode_fmllr
    from asr_bn.gmm.features import prepared_gmm_features

    _, tri3, _ = synth_tri3
    graph, dev = synth_sat_decoding
    feats, _, _ = prepared_gmm_features(dev, in_memory=True)
    utt2spk = _speakers(dev)
    assert len(set(utt2spk.values())) >= 2
    written = {}
    for name, num_jobs, in_process in (("one", 1, False), ("forked", 2, False), ("in_process", 2, True)):
        monkeypatch.setattr(jobs, "IN_PROCESS", in_process)
        out = tmp_path / name / "decode"
        decode_fmllr(graph, feats, utt2spk, tri3, out, DecodeFmllrConfig(num_jobs=num_jobs, lmwt=(8, 12)))
        written[name] = {p.relative_to(out.parent): p.read_bytes() for p in sorted(out.parent.rglob("*"))
                         if p.is_file() and p.suffix not in (".ark", ".scp")
                         and p.name not in ("report.json", "num_jobs")}
        assert (out / "num_jobs").read_text() == f"{num_jobs}\n"
        if name != "one":
            for pass_dir in ("decode.si", "decode"):
                run_kaldi(synth.bundle, "lattice-equivalent", f"ark:{tmp_path / 'one' / pass_dir / 'lat.ark'}",
                          f"ark:{out.parent / pass_dir / 'lat.ark'}")
    assert written["one"] == written["forked"] == written["in_process"]
    assert {"decode/trans.1", "decode/text", "decode/hyp_12", "decode.si/text"} <= {str(p) for p in written["one"]}


def test_decode_fmllr_bad_inputs(synth: Setup, synth_tri3, synth_sat_decoding, tmp_path: Path) -> None:  # noqa: ANN001
    """A system without final.alimdl, a graph of another model, a graph dir without phones/silence.csl, transforms
    of other speakers: one line each, nothing written; speakers under --fmllr-min-count keep the identity, counted."""
    import kaldiio

    from asr_bn.config import DecodeFmllrConfig
    from asr_bn.gmm.decode_fmllr import decode_fmllr
    from asr_bn.gmm.features import prepared_gmm_features
    from asr_bn.mkgraph import build_graph

    _, tri3, _ = synth_tri3
    graph, prep = synth_sat_decoding
    unadapted = tmp_path / "tri3_no_alimdl"
    unadapted.mkdir()
    for name in ("final.mdl", "final.mat", "splice_opts", "tree"):
        (unadapted / name).write_bytes((tri3 / name).read_bytes())
    corpus = synth.work / "corpus"
    mono_graph = build_graph(corpus / "lang", corpus / "exp" / "ali_train", tmp_path / "g")
    no_silence = tmp_path / "graph_no_silence"
    no_silence.mkdir()
    for name in ("HCLG.fst", "words.txt", "num_pdfs"):
        (no_silence / name).write_bytes((graph / name).read_bytes())
    for args, message in (
        (["decode-fmllr", graph, prep, unadapted, tmp_path / "d1"], "final.alimdl: no such file"),
        (["decode-fmllr", mono_graph, prep, tri3, tmp_path / "d2"], "was built for a model with"),
        (["decode-fmllr", no_silence, prep, tri3, tmp_path / "d3"], "silence.csl: missing"),
        (["likes", prep, tri3, tmp_path / "l", "--transform-dir", tri3], "no fMLLR transform for speaker(s) s05-f4"),
    ):
        result = CliRunner().invoke(app, ["gmm", *map(str, args)])
        assert result.exit_code == 1 and message in result.output.strip().splitlines()[-1], result.output
        assert "Traceback" not in result.output and not (tmp_path / "d1" / "report.json").exists()
    feats, _, _ = prepared_gmm_features(prep)
    report = decode_fmllr(graph, feats, _speakers(prep), tri3, tmp_path / "few", DecodeFmllrConfig(fmllr_min_count=1e9))
    key = "speakers with too little data for fMLLR (identity kept)"
    assert report.counts[key] == report.counts[f"{key} (second pass)"] == 2 and report.counts["decoded"] == 12
    identity = np.concatenate([np.eye(40), np.zeros((40, 1))], axis=1)
    assert all(np.array_equal(m, identity) for _, m in kaldiio.load_ark(str(tmp_path / "few" / "trans.1")))


@pytest.mark.parametrize("num_jobs", [1, 2, 3, 4, 7])
def test_alignment_jobs_are_split_data_shs(kaldi_bundle: Path, tmp_path: Path, num_jobs: int) -> None:
    """asr-bn's ali.N.gz parts are utils/split_data.sh's (split_scp.pl --utt2spk): whole speakers, balanced; Kaldi's
    accumulators run one process per part, so the parts decide their random draws. Without speakers: contiguous
    parts of nearly equal size, as split_scp.pl without --utt2spk; fewer speakers than jobs: refused, as Kaldi's
    split_scp.pl refuses (a speaker's fMLLR must come from all its data, in one job)."""
    import subprocess

    from asr_bn.errors import UsageError
    from asr_bn.gmm.align import kaldi_split

    rng = np.random.default_rng(num_jobs)
    utt2spk = {f"s{s:02d}-u{u:03d}": f"s{s:02d}" for s in range(9) for u in range(int(rng.integers(1, 40)))}
    utts = sorted(utt2spk)
    (tmp_path / "utt2spk").write_text("".join(f"{u} {utt2spk[u]}\n" for u in utts))
    outs = [tmp_path / f"part{j}" for j in range(num_jobs)]
    subprocess.run(["perl", kaldi_bundle / "egs" / "utils" / "split_scp.pl", f"--utt2spk={tmp_path / 'utt2spk'}",
                    tmp_path / "utt2spk", *outs], check=True)
    kaldi = [[line.split()[0] for line in out.read_text().splitlines()] for out in outs]
    assert kaldi_split(utts, num_jobs, utt2spk) == kaldi
    assert kaldi_split(utts[:10], 3) == [utts[:4], utts[4:7], utts[7:10]]
    few = {u: "one" for u in utts[:10]}
    (tmp_path / "one").write_text("".join(f"{u} one\n" for u in utts[:10]))
    with pytest.raises(UsageError, match="--nj 3 is more than the data's 1 speakers.*give --nj 1 or fewer"):
        kaldi_split(utts[:10], 3, few)
    refused = subprocess.run(["perl", kaldi_bundle / "egs" / "utils" / "split_scp.pl", f"--utt2spk={tmp_path / 'one'}",
                              tmp_path / "one", *outs[:1], tmp_path / "x", tmp_path / "y"], capture_output=True, text=True)
    assert refused.returncode != 0 and "Refusing to split data" in refused.stderr


def test_write_alignments_refuses_utterances_in_no_job(tmp_path: Path) -> None:
    """Jobs that leave out an aligned utterance would drop it from every ali.N.gz without a word: refused."""
    from asr_bn.gmm.align import write_alignments

    alis = {"a": [1, 2], "b": [3], "c": [4]}
    with pytest.raises(AsrBnError, match=r"1 aligned utterances \(e.g. c\) are in no job of"):
        write_alignments(tmp_path, alis, [["a"], ["b"]])
    assert not list(tmp_path.iterdir())
    write_alignments(tmp_path, alis, [["a", "c"], ["b"]])
    assert sorted(labels.utt for labels in read_alignments(tmp_path)) == ["a", "b", "c"]
    assert (tmp_path / "num_jobs").read_text() == "2\n"


def test_jobs_side_by_side_give_the_bytes_of_one_process(synth_tri1, synth_tri2, tmp_path: Path,  # noqa: ANN001
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """--nj 2 (Kaldi's two parts of the data, whole speakers) run as forked processes side by side or one after
    the other in one process writes the same bytes at every step: the monophone, an alignment, a SAT system and an
    LDA+MLLT system trained from it (each rung keeps the input's two jobs: fMLLR per job's speakers, LDA and MLLT
    statistics per job) and align-fmllr with the SAT system."""
    from dataclasses import replace

    from asr_bn import jobs
    from asr_bn.gmm.align import AlignConfig, align
    from asr_bn.gmm.lda_mllt import copy_feature_transform, LdaMlltConfig, train_lda_mllt
    from asr_bn.gmm.mono import FAST_MONO, train_mono
    from asr_bn.gmm.sat import SatConfig, align_fmllr, speaker_independent_features, train_sat

    _, feats, text, lang, _, _, prep = synth_tri1
    tri2_system, tri2, _ = synth_tri2
    utt2spk = _speakers(prep)
    sat = SatConfig(num_leaves=100, tot_gauss=400, num_iters=6, max_iter_inc=4, realign_iters=(3,), fmllr_iters=(2,))
    written = {}
    for in_process in (False, True):
        monkeypatch.setattr(jobs, "IN_PROCESS", in_process)
        out = tmp_path / ("one" if in_process else "forked")
        train_mono(feats, text, lang, out / "mono", replace(FAST_MONO, num_jobs=2))
        align(tri2_system, speaker_independent_features(feats, tri2), text, lang, out / "tri2_ali",
              AlignConfig(num_jobs=2))
        copy_feature_transform(tri2, out / "tri2_ali")  # as `asr-bn gmm align` does
        train_sat(feats, text, utt2spk, lang, out / "tri2_ali", out / "tri3", sat)
        train_lda_mllt(feats, text, lang, out / "tri2_ali", out / "tri2b", LdaMlltConfig(
            num_leaves=100, tot_gauss=400, num_iters=6, max_iter_inc=4, realign_iters=(3,), mllt_iters=(2, 4)))
        align_fmllr(out / "tri3", feats, text, utt2spk, lang, out / "tri3_ali", AlignConfig(num_jobs=2))
        written[in_process] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*"))
                               if p.is_file() and p.name not in ("report.json", "iterations.jsonl")}
    assert written[False] == written[True]
    names = {str(p) for p in written[True]}
    assert {"mono/final.mdl", "tri2_ali/ali.2.gz", "tri3/ali.2.gz", "tri3/trans.1", "tri3_ali/ali.2.gz",
            "tri2b/final.mat", "tri2b/ali.2.gz"} <= names
    assert written[True][Path("tri3/num_jobs")] == b"2\n"


def test_a_rung_killed_midway_continues_where_it_stopped(synth_tri1, synth_tri2, tmp_path: Path,  # noqa: ANN001
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Each rung keeps its state after every pass (resume.npz); the same command run again after a crash continues
    with the next pass and writes the bytes of a run never stopped (model, alignments, final.mat, trans.1), says
    so in its report, and leaves no state behind. Another option starts over."""
    from dataclasses import replace

    from asr_bn.gmm import resume
    from asr_bn.gmm.lda_mllt import LdaMlltConfig, train_lda_mllt
    from asr_bn.gmm.mono import FAST_MONO, train_mono
    from asr_bn.gmm.sat import SatConfig, train_sat
    from asr_bn.gmm.train_deltas import DeltasConfig, train_deltas

    _, feats, text, lang, tri1, _, prep = synth_tri1
    _, tri2, _ = synth_tri2
    utt2spk = _speakers(prep)
    short = dict(num_leaves=100, tot_gauss=400, num_iters=6, max_iter_inc=4, realign_iters=(3,))
    rungs = {
        "mono": lambda out: train_mono(feats, text, lang, out, replace(FAST_MONO, num_iters=6, realign_iters=(1, 3))),
        "deltas": lambda out: train_deltas(feats, text, lang, tri1, out, DeltasConfig(**short)),
        "lda-mllt": lambda out: train_lda_mllt(feats, text, lang, tri1, out, LdaMlltConfig(**short, mllt_iters=(2, 4),
                                                                                            randprune=0.0)),
        "sat": lambda out: train_sat(feats, text, utt2spk, lang, tri2, out, SatConfig(**short, fmllr_iters=(2, 4))),
    }
    real_save = resume.save

    def crash_after(stop: int):  # noqa: ANN202 - resume.save that stops the run once pass `stop` is kept
        def save(out_dir: Path, key: str, state: resume.PassState) -> None:
            real_save(out_dir, key, state)
            if state.it == stop:
                raise KeyboardInterrupt

        return save

    for name, run in rungs.items():
        whole, _ = tmp_path / name / "whole", run(tmp_path / name / "whole")
        stopped = tmp_path / name / "stopped"
        monkeypatch.setattr(resume, "save", crash_after(3))
        with pytest.raises(KeyboardInterrupt):
            run(stopped)
        monkeypatch.setattr(resume, "save", real_save)
        assert (stopped / resume.NAME).is_file() and not (stopped / "final.mdl").exists()
        _, report = run(stopped)
        assert any("continued after pass 3" in note for note in report.notes), name
        assert not (stopped / resume.NAME).exists()
        for result in ("final.mdl", "ali.1.gz", "final.mat", "trans.1", "final.alimdl"):
            if (whole / result).exists():
                assert (stopped / result).read_bytes() == (whole / result).read_bytes(), (name, result)
        history = [json.loads(line) for line in (stopped / "iterations.jsonl").read_text().splitlines()]
        assert [h["iter"] for h in history] == [h["iter"] for h in map(
            json.loads, (whole / "iterations.jsonl").read_text().splitlines())], name
    again = tmp_path / "deltas" / "other"
    monkeypatch.setattr(resume, "save", crash_after(3))
    with pytest.raises(KeyboardInterrupt):
        rungs["deltas"](again)
    monkeypatch.setattr(resume, "save", real_save)
    _, report = train_deltas(feats, text, lang, tri1, again, DeltasConfig(**{**short, "tot_gauss": 500}))
    assert not any("continued" in note for note in report.notes)
    # a state cut short, or one holding a pickled object (loading it would run code): the rung starts over
    for bad in ((stopped / "final.mdl").read_bytes()[:100], None):
        broken = tmp_path / "deltas" / f"broken{bad is None}"
        monkeypatch.setattr(resume, "save", crash_after(3))
        with pytest.raises(KeyboardInterrupt):
            rungs["deltas"](broken)
        monkeypatch.setattr(resume, "save", real_save)
        if bad is None:
            np.savez(broken / resume.NAME, meta=np.array([{"key": "x"}], dtype=object))
        else:
            (broken / resume.NAME).write_bytes(bad)
        _, report = rungs["deltas"](broken)
        assert not any("continued" in note for note in report.notes)
        assert (broken / "final.mdl").read_bytes() == (tmp_path / "deltas" / "whole" / "final.mdl").read_bytes()


def test_sigkill_midway_then_the_same_command_finishes_the_rung(synth: Setup, synth_tri1,  # noqa: ANN001
                                                                tmp_path: Path) -> None:
    """`asr-bn gmm deltas`, the process SIGKILLed once a pass is kept (no `finally` runs), then the same command: it continues after the kept pass (its report says so) and writes the final.mdl and
    alignments of a run never stopped."""
    import signal
    import subprocess
    import sys
    import time

    from asr_bn.gmm import resume

    *_, prep = synth_tri1
    corpus = synth.work / "corpus"
    command = [sys.executable, "-m", "asr_bn_cli", "gmm", "deltas", "100", "400", str(prep), str(corpus / "lang"),
               str(corpus / "exp" / "ali_train")]
    options = ["--num-iters", "12", "--max-iter-inc", "8", "--realign-iters", "4 8"]
    whole = subprocess.run([*command, str(tmp_path / "whole"), *options], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "killed"
    run = subprocess.Popen([*command, str(out), *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / resume.NAME).exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL and not (out / "final.mdl").exists()
    again = subprocess.run([*command, str(out), *options], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "continued after pass" in again.stdout
    for name in ("final.mdl", "ali.1.gz", "tree"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    assert not (out / resume.NAME).exists()
