"""asr-bn decode against Kaldi's own binaries (../shared/kaldi) on real GMM log-likelihoods of the yesno test set:
Kaldi's lattice tools read asr-bn's lattices, the log-likelihood per frame is the one Kaldi's decoders report, and
the ctm has Kaldi's words and times (lattice-align-words + nbest-to-ctm) to the frame."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from conftest import ctm_frames, run_kaldi

from asr_bn.decode import DecodeConfig, decode
from asr_bn.score import read_text


@pytest.fixture(scope="module")
def gmm_loglikes(yesno_root: Path, kaldi_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Kaldi's GMM log-likelihoods (gmm-compute-likes with exp/mono/final.mdl) of the 29 yesno test utterances:
    MFCCs as the yesno run made them (8 kHz, no energy), per-speaker CMVN, deltas. Returns ll.ark."""
    out = tmp_path_factory.mktemp("gmm_ll")
    data = yesno_root / "data/test_yesno"
    wav = "".join(f"{u} {yesno_root / p}\n" for u, p in (line.split() for line in (data / "wav.scp").open()))
    (out / "wav.scp").write_text(wav)
    run_kaldi(kaldi_bundle, "compute-mfcc-feats", "--use-energy=false", "--sample-frequency=8000", "--dither=0",
              f"scp:{out / 'wav.scp'}", f"ark:{out / 'mfcc.ark'}")  # fmt: skip
    run_kaldi(kaldi_bundle, "compute-cmvn-stats", f"ark:{out / 'mfcc.ark'}", f"ark:{out / 'cmvn.ark'}")  # one speaker
    feats = f"ark:apply-cmvn ark:{out / 'cmvn.ark'} ark:{out / 'mfcc.ark'} ark:- | add-deltas ark:- ark:- |"
    run_kaldi(kaldi_bundle, "gmm-compute-likes", yesno_root / "exp/mono/final.mdl", feats, f"ark:{out / 'll.ark'}")
    return out / "ll.ark"


@pytest.fixture(scope="module")
def decoded(yesno_root: Path, gmm_loglikes: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """asr-bn decode of the GMM log-likelihoods, one-best and with lattices, both with a ctm."""
    out = tmp_path_factory.mktemp("decoded")
    graph, model = yesno_root / "exp/mono/graph", yesno_root / "exp/mono/final.mdl"
    dirs = {"onebest": out / "onebest", "lattices": out / "lattices"}
    decode(graph, model, gmm_loglikes, dirs["onebest"], DecodeConfig(ctm=True))
    decode(graph, model, gmm_loglikes, dirs["lattices"], DecodeConfig(lattices=True, ctm=True))
    return dirs


def _ints_to_words(text: str, words_txt: Path) -> dict[str, list[str]]:
    words = {i: w for w, i in (line.split() for line in words_txt.read_text().splitlines())}
    return {utt: [words[i] for i in ids] for utt, *ids in (line.split() for line in text.splitlines())}


def _kaldi_log(bundle: Path, *args: str | Path) -> str:
    """What a Kaldi binary logs (its stderr; its stdout thrown away)."""
    return run_kaldi(bundle, "sh", "-c", shlex.join(map(str, args)) + " 2>&1 >/dev/null")


def _avg_log_like(decode_dir: Path) -> float:
    notes = json.loads((decode_dir / "report.json").read_text())["notes"]
    return float(next(re.search(r"per frame (\S+)", n).group(1) for n in notes if "per frame" in n))


def _kaldi_log_like(log: str) -> float:
    return float(re.search(r"Overall log-likelihood per frame is (\S+) over (\d+) frames", log).group(1))


def test_kaldi_lattice_tools_read_asr_bn_lattices(
    yesno_root: Path, kaldi_bundle: Path, decoded: dict[str, Path], tmp_path: Path
) -> None:
    lat_dir, words_txt = decoded["lattices"], yesno_root / "exp/mono/graph/words.txt"
    model = yesno_root / "exp/mono/final.mdl"
    text = read_text(lat_dir / "text")
    assert len(text) == 29
    for rspec in (f"ark:{lat_dir / 'lat.ark'}", f"scp:{lat_dir / 'lat.scp'}"):
        copied = run_kaldi(kaldi_bundle, "lattice-copy", rspec, "ark,t:-")
        assert sum(1 for line in copied.splitlines() if line.strip() in text) == 29  # a text lattice per key
        best = run_kaldi(kaldi_bundle, "lattice-best-path", "--acoustic-scale=0.1", rspec, "ark,t:-")
        assert _ints_to_words(best, words_txt) == text
    lat = f"ark:{lat_dir / 'lat.ark'}"
    done = re.compile(r"Done 29 lattices")
    assert done.search(_kaldi_log(kaldi_bundle, "lattice-scale", "--acoustic-scale=0.1", lat, "ark:/dev/null"))
    pruned = tmp_path / "det.ark"
    assert done.search(_kaldi_log(kaldi_bundle, "lattice-determinize-pruned", "--acoustic-scale=0.1", lat,
                                  f"ark:{pruned}"))  # fmt: skip
    best = run_kaldi(kaldi_bundle, "lattice-best-path", "--acoustic-scale=0.1", f"ark:{pruned}", "ark,t:-")
    assert _ints_to_words(best, words_txt) == text  # determinized by Kaldi, same words
    assert done.search(_kaldi_log(kaldi_bundle, "lattice-to-post", "--acoustic-scale=0.1", lat, "ark:/dev/null"))
    # yesno's phones are word-position independent and each word is one phone: SIL no word, Y and N whole words
    boundary = tmp_path / "word_boundary.int"
    boundary.write_text("1 nonword\n2 singleton\n3 singleton\n")
    # state-level lattices, as latgen-faster-mapped --determinize-lattice=false writes: Kaldi determinizes first
    aligned = _kaldi_log(kaldi_bundle, "lattice-align-words", boundary, model, f"ark:{pruned}", "ark:/dev/null")
    assert re.search(r"Successfully aligned 29 lattices", aligned), aligned[-500:]


def test_log_likelihood_per_frame_is_kaldis(
    yesno_root: Path, kaldi_bundle: Path, gmm_loglikes: Path, decoded: dict[str, Path], tmp_path: Path
) -> None:
    graph, model = yesno_root / "exp/mono/graph", yesno_root / "exp/mono/final.mdl"
    common = ["--acoustic-scale=0.1", "--beam=13", f"--word-symbol-table={graph / 'words.txt'}", model,
              graph / "HCLG.fst", f"ark:{gmm_loglikes}"]  # fmt: skip
    text = tmp_path / "kaldi.txt"
    faster = _kaldi_log(kaldi_bundle, "decode-faster-mapped", "--max-active=7000", *common, f"ark,t:{text}")
    latgen = _kaldi_log(kaldi_bundle, "latgen-faster-mapped", "--lattice-beam=8", *common, "ark:/dev/null")
    kaldi_words = _ints_to_words(text.read_text(), graph / "words.txt")
    ours = {mode: _avg_log_like(d) for mode, d in decoded.items()}
    assert ours["onebest"] == pytest.approx(ours["lattices"], abs=1e-4)  # the same quantity with and without
    assert ours["onebest"] == pytest.approx(_kaldi_log_like(faster), abs=1e-3)
    assert ours["lattices"] == pytest.approx(_kaldi_log_like(latgen), abs=1e-3)
    assert ours["onebest"] < -1  # real GMM scores: far from the 0 of oracle scores
    for d in decoded.values():
        assert read_text(d / "text") == kaldi_words


def test_ctm_matches_kaldi_word_alignment(
    yesno_root: Path, kaldi_bundle: Path, gmm_loglikes: Path, decoded: dict[str, Path], tmp_path: Path
) -> None:
    graph, model = yesno_root / "exp/mono/graph", yesno_root / "exp/mono/final.mdl"
    words = {i: w for w, i in (line.split() for line in (graph / "words.txt").read_text().splitlines())}
    best = f"ark:lattice-1best --acoustic-scale=0.1 ark:{decoded['lattices'] / 'lat.ark'} ark:- |"
    aligned = f"ark:lattice-align-words-lexicon {graph / 'phones/align_lexicon.int'} {model} '{best}' ark:- |"
    kaldi = run_kaldi(kaldi_bundle, "nbest-to-ctm", aligned, "-")
    expected = [(u, s, d, words[w]) for u, s, d, w in ctm_frames(kaldi)]
    assert len(expected) == 29 * 8  # eight words per utterance
    for d in decoded.values():
        assert ctm_frames((d / "ctm").read_text()) == expected
    # the lang folder's lexicon.txt gives the same word times as the graph dir's align_lexicon.int; 30 ms frames
    config = DecodeConfig(ctm=True, frame_shift=0.03)
    decode(graph, model, gmm_loglikes, tmp_path, config, lang=yesno_root / "data/lang")
    assert [(u, round(s / 3), round(d / 3), w) for u, s, d, w in ctm_frames((tmp_path / "ctm").read_text())] == expected


def test_ctm_needs_a_lexicon_that_spells_the_words(yesno_root: Path, gmm_loglikes: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from asr_bn.errors import AsrBnError
    from asr_bn_cli.main import build_app

    graph, model = tmp_path / "graph", yesno_root / "exp/mono/final.mdl"
    graph.mkdir()
    for name in ("HCLG.fst", "words.txt", "num_pdfs"):
        (graph / name).write_bytes((yesno_root / "exp/mono/graph" / name).read_bytes())
    with pytest.raises(AsrBnError, match="align_lexicon.int: no such file.*--lang"):
        decode(graph, model, gmm_loglikes, tmp_path / "dec", DecodeConfig(ctm=True))
    lexicon = graph / "phones/align_lexicon.int"
    lexicon.parent.mkdir()
    lexicon.write_text("0 0 1\n1 1 1\n2 2 3\n3 3 3\n")  # YES (3) spelled N: no YES has word times
    report = decode(graph, model, gmm_loglikes, tmp_path / "dec", DecodeConfig(ctm=True))
    ctm = (tmp_path / "dec/ctm").read_text()
    texts = read_text(tmp_path / "dec/text")
    assert {line.split()[0] for line in ctm.splitlines()} == {u for u, ws in texts.items() if "YES" not in ws}
    assert any("no ctm lines" in n for n in report.notes)
    lexicon.write_text("2 2 x\n")
    with pytest.raises(AsrBnError, match=r"align_lexicon.int:1: expected"):
        decode(graph, model, gmm_loglikes, tmp_path / "dec", DecodeConfig(ctm=True))
    result = CliRunner().invoke(build_app(), ["decode", str(graph), str(model), str(gmm_loglikes), str(tmp_path / "d2"),
                                      "--lang", str(yesno_root / "data/lang")])  # fmt: skip
    assert result.exit_code == 2 and "add --ctm" in result.output


def test_ensemble_decode_is_kaldis_matrix_sum_then_decoder(
    yesno_root: Path, kaldi_bundle: Path, gmm_loglikes: Path, tmp_path: Path
) -> None:
    """`decode --average-with`: two sources' frame-by-frame mean decoded as Kaldi's `matrix-sum --average=true |
    latgen-faster-mapped` decodes it: the same words and log-likelihood per frame; a source lacking utterances is one
    line naming it, and nothing is written."""
    import kaldiio
    import numpy as np

    from asr_bn.errors import AsrBnError
    from asr_bn.io import write_ark_scp

    rng = np.random.default_rng(0)  # a second "network": the GMM's scores, lower and noisy: the mean is a third matrix
    other = {u: (m - 3 + rng.normal(0, 4, m.shape)).astype(np.float32) for u, m in kaldiio.load_ark(str(gmm_loglikes))}
    write_ark_scp(tmp_path / "other.ark", tmp_path / "other.scp", other.items())
    graph, model = yesno_root / "exp/mono/graph", yesno_root / "exp/mono/final.mdl"
    ours = tmp_path / "ens"
    decode(graph, model, gmm_loglikes, ours, DecodeConfig(lattices=True), average_with=[tmp_path / "other.scp"])
    text = tmp_path / "kaldi.txt"
    mean = f"ark:matrix-sum --average=true ark:{gmm_loglikes} scp:{tmp_path / 'other.scp'} ark:- |"
    latgen = _kaldi_log(kaldi_bundle, "latgen-faster-mapped", "--lattice-beam=8", "--acoustic-scale=0.1", "--beam=13",
                        f"--word-symbol-table={graph / 'words.txt'}", model, graph / "HCLG.fst", mean, "ark:/dev/null",
                        f"ark,t:{text}")
    assert read_text(ours / "text") == _ints_to_words(text.read_text(), graph / "words.txt")
    assert _avg_log_like(ours) == pytest.approx(_kaldi_log_like(latgen), abs=1e-3)
    # the mean was decoded: 1.5 lower per frame, 0.15 at the acoustic scale of 0.1 (Kaldi reports scaled figures)
    assert _avg_log_like(ours) < _avg_log_like_of(graph, model, gmm_loglikes, tmp_path) - 0.1
    short = tmp_path / "short.scp"
    short.write_text("".join((tmp_path / "other.scp").read_text().splitlines(keepends=True)[1:]))
    with pytest.raises(AsrBnError, match="short.scp lacks 1 of the 29 utterances"):
        decode(graph, model, gmm_loglikes, tmp_path / "bad", average_with=[short])
    assert not (tmp_path / "bad" / "text").exists()


def _avg_log_like_of(graph: Path, model: Path, loglikes: Path, tmp_path: Path) -> float:
    """The log-likelihood per frame of one source decoded alone (the ensemble's must differ from it)."""
    decode(graph, model, loglikes, tmp_path / "alone")
    return _avg_log_like(tmp_path / "alone")


def test_lattice_posteriors_are_kaldis_rescore_mapped_then_lattice_to_post(
    yesno_root: Path, kaldi_bundle: Path, gmm_loglikes: Path, decoded: dict[str, Path], tmp_path: Path
) -> None:
    """asr-bn's lattices rescored with other log-likelihoods and their forward-backward posteriors (the
    denominator of sequence training) are Kaldi's `lattice-rescore-mapped | lattice-to-post --acoustic-scale`:
    every (frame, transition-id) posterior to 1e-4 and the total log-likelihood per frame to 1e-4."""
    import kaldiio
    import numpy as np

    from asr_bn.alignments import read_posteriors, read_transition_model
    from asr_bn.io import write_ark_scp
    from asr_bn.lattice import LatticeTable, forward_backward, rescore_lattice

    rng = np.random.default_rng(0)  # another "network": the GMM's scores with noise, so rescoring changes the lattice
    other = {u: (m + rng.normal(0, 2, m.shape)).astype(np.float32) for u, m in kaldiio.load_ark(str(gmm_loglikes))}
    write_ark_scp(tmp_path / "other.ark", tmp_path / "other.scp", other.items())
    model = yesno_root / "exp/mono/final.mdl"
    rescored = f"ark:lattice-rescore-mapped {model} scp:{decoded['lattices'] / 'lat.scp'} scp:{tmp_path / 'other.scp'} ark:- |"
    log = _kaldi_log(kaldi_bundle, "lattice-to-post", "--acoustic-scale=0.1", rescored, f"ark:{tmp_path / 'post.ark'}")
    kaldi_per_frame, frames = re.search(r"Overall average log-like/frame is (\S+) over (\d+) frames", log).groups()
    kaldi = dict(read_posteriors(tmp_path / "post.ark"))
    tid2pdf = read_transition_model(model).tid_pdf
    lattices = LatticeTable(decoded["lattices"] / "lat.scp")
    assert sorted(lattices) == sorted(kaldi) and len(lattices) == 29
    total = 0.0
    for utt, lat in lattices.items():
        at, tids, posts, log_like = forward_backward(rescore_lattice(lat, other[utt], tid2pdf, utt), 0.1, utt)
        total += log_like
        ids, weights = kaldi[utt]  # per frame, padded with weight-0 entries
        theirs, ours = {}, {}
        for t, (row, w) in enumerate(zip(ids, weights)):
            for i, p in zip(row.tolist(), w.tolist()):
                if p:
                    theirs[t, i] = theirs.get((t, i), 0.0) + p
        for t, i, p in zip(at.tolist(), tids.tolist(), posts.tolist()):
            ours[t, i] = p
        assert ours.keys() >= {k for k, p in theirs.items() if p > 1e-6}, utt
        assert max(abs(ours[k] - theirs.get(k, 0.0)) for k in ours) < 1e-4, utt
    assert total / int(frames) == pytest.approx(float(kaldi_per_frame), abs=1e-4)
