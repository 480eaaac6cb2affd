"""A context-dependent system against Kaldi's own tools (../shared/kaldi): the synthesized corpus's triphone model
(train_deltas from a monophone, on Kaldi's word-position-dependent lang from utils/prepare_lang.sh) and a bigram G.

- hmm-info, gmm-info and tree-info read the triphone model and tree, with asr-bn's numbers.
- `asr-bn mkgraph` against Kaldi's utils/mkgraph.sh on the same lang, tree, model and G: fstinfo reads asr-bn's
  graph, and the same GMM log-likelihoods decode to the same words and best-path costs through both graphs with
  Kaldi's latgen-faster-mapped and with asr-bn's decoders (fstequivalent cannot compare CD graphs: word labels sit
  on different arcs).
- `asr-bn decode --ctm` on multi-phone words with _B _I _E _S phones: Kaldi's lattice-1best | lattice-align-words
  (phones/word_boundary.int) | nbest-to-ctm, and lattice-align-words-lexicon (phones/align_lexicon.int), on
  asr-bn's own lattices give the same words and times to the frame.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ctm_frames, kaldi_s5_scripts, run_kaldi
from test_graphs import _arpa_g, _kaldi_one_best, _one_best
from test_prepare_lang import _kaldi_sh
from typer.testing import CliRunner

from asr_bn.alignments import read_transition_model
from asr_bn.config import DecodeConfig
from asr_bn.decode import decode
from asr_bn.gmm.event_map import EventMap, Split, Table, read_tree_map
from asr_bn.score import read_text
from asr_bn_cli.main import build_app

app = build_app()

# Beam of the graph comparison: Kaldi's default 13 leaves this weak system (40 training utterances) with search
# errors that depend on the graph's shape (decode-faster-mapped and asr-bn's one-best decoder make the same ones on
# each graph); at 30 every decoder finds the best path of both graphs.
WIDE_BEAM = 30.0


@dataclass(frozen=True)
class CdSystem:
    """The triphone system and both graphs: `s5` is the Kaldi working dir (lang from prepare_lang.sh, lang_test with
    G.fst, graph from mkgraph.sh), `tri1` the exp dir (final.mdl, tree), `ours` asr-bn mkgraph's graph dir,
    `loglikes` the GMM log-likelihoods (asr-bn gmm likes) of the dev set."""

    s5: Path
    tri1: Path
    ours: Path
    loglikes: Path

    @property
    def lang(self) -> Path:
        """Kaldi's lang folder (prepare_lang.sh): phones/word_boundary.int, phones/align_lexicon.int."""
        return self.s5 / "lang"

    @property
    def kaldi(self) -> Path:
        """utils/mkgraph.sh's graph dir (a const HCLG.fst, phones/align_lexicon.int)."""
        return self.s5 / "graph"


def _invoke(*args: str | Path) -> None:
    """Run one `asr-bn` command line in-process; anything but exit 0 fails the test with its output."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.output)


@pytest.fixture(scope="module")
def cd(kaldi_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> CdSystem:
    """The synthesized corpus (seed 5, small); its lexicon (plus <UNK> SPN) through Kaldi's prepare_lang.sh
    (position-dependent phones); a monophone (FAST) and a 100-leaf train_deltas system on it; a bigram of the
    training transcripts; HCLG by asr-bn mkgraph and by utils/mkgraph.sh; dev log-likelihoods of the triphone GMM."""
    from asr_bn.features import FeaturePipeline
    from asr_bn.gmm.align import align
    from asr_bn.gmm.features import prepared_gmm_features
    from asr_bn.gmm.mono import FAST_MONO, train_mono
    from asr_bn.gmm.train_deltas import DeltasConfig, train_deltas
    from asr_bn.lang import read_lang
    from asr_bn.prep import prepare_kaldi
    from asr_bn.synth import synthesize_corpus

    work = tmp_path_factory.mktemp("cd")
    corpus = synthesize_corpus(work / "corpus", seed=5, size="small")
    lexicon = (corpus.lang / "lexicon.txt").read_text()
    phones = sorted({p for line in lexicon.splitlines() for p in line.split()[1:]} - {"SIL"})
    dict_dir = work / "dict"
    dict_dir.mkdir()
    (dict_dir / "lexicon.txt").write_text("<UNK> SPN\n" + lexicon)
    (dict_dir / "silence_phones.txt").write_text("SIL\nSPN\n")
    (dict_dir / "optional_silence.txt").write_text("SIL\n")
    (dict_dir / "nonsilence_phones.txt").write_text("".join(f"{p}\n" for p in phones))
    s5 = work / "s5"
    s5.mkdir()
    kaldi_s5_scripts(s5, kaldi_bundle)
    _kaldi_sh(kaldi_bundle, f"utils/prepare_lang.sh {dict_dir} '<UNK>' tmp lang", s5)
    for part in ("train", "dev"):
        prepare_kaldi(corpus.data[part], work / "prep" / part, FeaturePipeline())
    feats, text, _ = prepared_gmm_features(work / "prep" / "train")
    lang = read_lang(s5 / "lang")
    mono, _ = train_mono(feats, text, lang, work / "mono", FAST_MONO)
    align(mono, feats, text, lang, work / "mono_ali")
    config = DeltasConfig(num_leaves=100, tot_gauss=400, num_iters=8, max_iter_inc=5, realign_iters=(3, 6))
    train_deltas(feats, text, lang, work / "mono_ali", work / "tri1", config)
    arpa = work / "bigram.arpa"
    _invoke("lm", work / "prep" / "train" / "text", s5 / "lang", arpa, "--order", "2")
    _invoke("mkgraph", s5 / "lang", work / "tri1", work / "ours", "--lm", arpa)
    shutil.copytree(s5 / "lang", s5 / "lang_test")
    (work / "G.txt").write_text(_arpa_g(s5 / "lang" / "words.txt", arpa))
    run_kaldi(kaldi_bundle, "fstcompile", work / "G.txt", work / "G.unsorted")
    run_kaldi(kaldi_bundle, "fstarcsort", "--sort_type=ilabel", work / "G.unsorted", s5 / "lang_test" / "G.fst")
    _kaldi_sh(kaldi_bundle, f"utils/mkgraph.sh lang_test {work / 'tri1'} graph", s5)
    _invoke("gmm", "likes", work / "prep" / "dev", work / "tri1", work / "likes")
    return CdSystem(s5, work / "tri1", work / "ours", work / "likes" / "loglikes.ark")


def _info(text: str) -> dict[str, str]:
    """`name value` lines of hmm-info / gmm-info / tree-info (the name may have spaces): name → value."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^(\D+?) (\S+)$", text, re.M)}


def test_kaldi_reads_the_triphone_model_and_tree(kaldi_bundle: Path, cd: CdSystem) -> None:
    """hmm-info, gmm-info and tree-info on the train_deltas model: Kaldi's counts are asr-bn's, the tree is a
    triphone tree (context width 3, central position 1) whose leaves are the model's pdfs."""
    from asr_bn.gmm.system import GmmSystem

    model = cd.tri1 / "final.mdl"
    tm, system = read_transition_model(model), GmmSystem.load(model)
    hmm = _info(run_kaldi(kaldi_bundle, "hmm-info", model))
    assert hmm == {"number of phones": str(len(tm.phones)), "number of pdfs": str(tm.num_pdfs),
                   "number of transition-ids": str(tm.num_transition_ids),
                   "number of transition-states": str(tm.num_transition_states)}  # fmt: skip
    assert len(tm.phones) == sum(1 for line in (cd.lang / "phones.txt").read_text().splitlines()
                                 if not line.startswith(("<eps>", "#")))  # every _B _E _I _S phone has an HMM
    gmm = _info(run_kaldi(kaldi_bundle, "gmm-info", model))
    assert gmm["number of pdfs"] == str(system.am.num_pdfs) == str(tm.num_pdfs)
    assert gmm["number of gaussians"] == str(system.am.num_gauss) and gmm["feature dimension"] == "39"
    tree = _info(run_kaldi(kaldi_bundle, "tree-info", cd.tri1 / "tree"))
    assert tree == {"num-pdfs": str(tm.num_pdfs), "context-width": "3", "central-position": "1"}
    tree_map, _, _ = read_tree_map(cd.tri1 / "tree")
    assert {0, 2} & _keys_asked(tree_map)  # its leaves split on the left or right phone: a context-dependent model


def _keys_asked(m: EventMap | None) -> set[int]:
    """The event keys a tree's questions ask (0, 1, 2: left, central, right phone; -1: the pdf-class)."""
    if isinstance(m, Split):
        return {m.key} | _keys_asked(m.yes) | _keys_asked(m.no)
    if isinstance(m, Table):
        return {m.key}.union(*(_keys_asked(c) for c in m.children))
    return set()


def test_cd_mkgraph_matches_kaldi_mkgraph_sh(kaldi_bundle: Path, cd: CdSystem, tmp_path: Path) -> None:
    """The triphone HCLG of `asr-bn mkgraph` and of utils/mkgraph.sh (same lang, tree, model, bigram G): fstinfo
    reads asr-bn's; on every dev utterance Kaldi's latgen-faster-mapped on either graph and asr-bn's one-best and
    lattice decoders on either graph find the same words and best-path cost.

    Costs (-(graph + 0.1 × acoustic), about 300 to 900 here) agree to 1e-2: each path sums a few thousand float32
    weights, mkgraph.sh's fstpushspecial moves graph weight around in float32 where asr-bn does not push, and Kaldi's
    text lattices print 6 significant digits per arc: measured, at most 4e-3 between the graphs and 3e-4 between
    decoders on one graph. A wrongly built graph moves costs by whole units (swapping mkgraph's transition and
    self-loop scales changes the words of this test)."""
    model = cd.tri1 / "final.mdl"
    info = run_kaldi(kaldi_bundle, "fstinfo", cd.ours / "HCLG.fst")
    assert re.search(r"fst type +vector", info) and int(re.search(r"# of states +(\d+)", info).group(1)) > 100
    assert re.search(r"fst type +const", run_kaldi(kaldi_bundle, "fstinfo", cd.kaldi / "HCLG.fst"))
    wide = DecodeConfig(beam=WIDE_BEAM)
    reference = _kaldi_one_best(kaldi_bundle, cd.kaldi, model, cd.loglikes, tmp_path, WIDE_BEAM)
    assert len(reference) == 12 and sum(len(words) for words, _ in reference.values()) > 40
    assert sum(len(w) > 1 for words, _ in reference.values() for w in words) > 10  # multi-letter words: ONE, EIGHT …
    results: dict[str, dict[str, tuple[list[str], float]]] = {}
    for name, graph in (("ours", cd.ours), ("kaldi", cd.kaldi)):
        results[f"latgen-faster-mapped on {name}"] = _kaldi_one_best(kaldi_bundle, graph, model, cd.loglikes,
                                                                     tmp_path, WIDE_BEAM)  # fmt: skip
        results[f"asr-bn one-best on {name}"] = _one_best(graph, model, cd.loglikes, config=wide)
        lattice = DecodeConfig(beam=WIDE_BEAM, lattices=True)
        results[f"asr-bn lattices on {name}"] = _one_best(graph, model, cd.loglikes, config=lattice)
    for what, result in results.items():
        assert result.keys() == reference.keys(), what
        for utt, (words, cost) in reference.items():
            assert result[utt][0] == words, (what, utt)
            assert result[utt][1] == pytest.approx(cost, abs=1e-2), (what, utt)


def test_ctm_of_multi_phone_words_matches_kaldi_word_alignment(
    kaldi_bundle: Path, cd: CdSystem, tmp_path: Path
) -> None:
    """`asr-bn decode --lattices --ctm` on the triphone graphs (asr-bn's with --lang, Kaldi's const graph with its
    phones/align_lexicon.int), against Kaldi on the same lattices: lattice-1best | lattice-align-words with
    word_boundary.int | nbest-to-ctm, and the same through lattice-align-words-lexicon with align_lexicon.int. Same
    words and times to the frame, on words of several position-dependent phones (_B _I … _E) and one (_S); the
    one-best decoder's ctm (no lattices) is the same at a beam where both decoders find the best path."""
    model, beam = cd.tri1 / "final.mdl", ["--beam", str(WIDE_BEAM)]
    ours_dir, kaldi_dir = tmp_path / "ours", tmp_path / "kaldi"
    _invoke("decode", cd.ours, model, cd.loglikes, ours_dir, "--lattices", "--ctm", "--lang", cd.lang, *beam)
    decode(cd.kaldi, model, cd.loglikes, kaldi_dir, DecodeConfig(beam=WIDE_BEAM, lattices=True, ctm=True))
    words = {i: w for w, i in (line.split() for line in (cd.lang / "words.txt").read_text().splitlines())}
    ctms: dict[str, list[tuple[str, int, int, str]]] = {}
    for out_dir in (ours_dir, kaldi_dir):
        best = f"ark:lattice-1best --acoustic-scale=0.1 ark:{out_dir / 'lat.ark'} ark:- |"
        by_boundary = f"ark:lattice-align-words {cd.lang / 'phones/word_boundary.int'} {model} '{best}' ark:- |"
        by_lexicon = f"ark:lattice-align-words-lexicon {cd.lang / 'phones/align_lexicon.int'} {model} '{best}' ark:- |"
        ours = ctms[out_dir.name] = ctm_frames((out_dir / "ctm").read_text())
        text = read_text(out_dir / "text")
        assert [w for _, _, _, w in ours] == [w for u in text for w in text[u]]  # every word of the one-best path
        for aligned in (by_boundary, by_lexicon):
            kaldi_ctm = run_kaldi(kaldi_bundle, "nbest-to-ctm", aligned, "-")
            kaldi = [(u, s, d, words[w]) for u, s, d, w in ctm_frames(kaldi_ctm)]
            assert ours == kaldi, (out_dir.name, aligned.split()[0])
    assert ctms["ours"] == ctms["kaldi"]  # the same words and times through both graphs
    _invoke("decode", cd.ours, model, cd.loglikes, tmp_path / "onebest", "--ctm", "--lang", cd.lang, *beam)
    assert ctm_frames((tmp_path / "onebest" / "ctm").read_text()) == ctms["ours"]
    # most words span several phones: a start or an end taken from the wrong phone of a word would show
    fewest: dict[str, int] = {}  # word → phones of its shortest pronunciation
    for line in (cd.lang / "phones/align_lexicon.txt").open():
        word, _, *phones = line.split()
        fewest[word] = min(len(phones), fewest.get(word, len(phones)))
    spans = [fewest[w] for _, _, _, w in ctms["ours"]]
    assert sum(n >= 2 for n in spans) > 30 and sum(n >= 3 for n in spans) >= 5  # 41 and 8 of 54 today
