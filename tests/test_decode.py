"""Decoding against real Kaldi files: the yesno HCLG.fst + final.mdl written by Kaldi, oracle log-likelihoods from
Kaldi's own alignments (exp/mono/ali.1.gz) must give WER 0 on all 31 training utterances; graphs built by
`build_graph` (word loop, ARPA) must do the same; lattices must be the OpenFst/Kaldi binary format."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from asr_bn.alignments import TransitionModel, read_alignments, read_transition_model
from asr_bn.config import FASTER_DECODER_MIN_ACTIVE
from asr_bn.decode import DecodeConfig, decode, load_graph, read_loglikes
from asr_bn.mkgraph import build_graph, read_tree
from asr_bn.errors import AsrBnError, UsageError, shown
from asr_bn.io import write_ark_scp
from asr_bn.kaldi_ext import kaldifst
from asr_bn.score import read_text, score_hyps
from asr_bn_cli.main import build_app

app = build_app()

runner = CliRunner()


@pytest.fixture(scope="module")
def oracle(yesno_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Log-likelihoods that put 0 on the pdf of Kaldi's alignment and -20 elsewhere, as an ark/scp pair."""
    tm = read_transition_model(yesno_root / "exp/mono/final.mdl")
    mats = {}
    for utt, tids, _ in read_alignments(yesno_root / "exp/mono"):
        mat = np.full((len(tids), tm.num_pdfs), -20.0, dtype=np.float32)
        mat[np.arange(len(tids)), tm.to_pdfs(tids)] = 0.0
        mats[utt] = mat
    out = tmp_path_factory.mktemp("oracle")
    write_ark_scp(out / "ll.ark", out / "ll.scp", sorted(mats.items()))
    return out


def _wer(yesno_root: Path, decode_dir: Path) -> tuple[int, int, int]:
    results, best = score_hyps(yesno_root / "data/train_yesno", [decode_dir], mode="strict")
    return best.counts.errors, best.counts.words, best.counts.sentences


def test_kaldi_graph_decodes_oracle_scores(yesno_root: Path, oracle: Path, tmp_path: Path) -> None:
    report = decode(yesno_root / "exp/mono/graph", yesno_root / "exp/mono/final.mdl", oracle / "ll.scp", tmp_path)
    assert report.counts["decoded"] == 31 and report.num_skipped == 0 and report.counts["partial"] == 0
    assert _wer(yesno_root, tmp_path) == (0, 248, 31)
    keys = [line.split()[0] for line in (oracle / "ll.scp").read_text().splitlines()]
    assert [line.split()[0] for line in (tmp_path / "text").read_text().splitlines()] == keys  # input order
    assert (tmp_path / "report.json").is_file()


def test_built_word_loop_graph(yesno_root: Path, oracle: Path, tmp_path: Path) -> None:
    graph = build_graph(yesno_root / "data/lang", yesno_root / "exp/mono", tmp_path / "graph")
    for name in ("HCLG.fst", "words.txt", "phones.txt", "num_pdfs", "disambig_tid.int"):
        assert (graph / name).is_file(), name
    assert (graph / "num_pdfs").read_text().strip() == "11"
    # phones/silence.csl as Kaldi's mkgraph.sh copies it from the lang (decode-fmllr's silence phones)
    assert (graph / "phones" / "silence.csl").read_text() == (yesno_root / "data/lang/phones/silence.csl").read_text()
    fst = kaldifst.StdVectorFst.read(str(graph / "HCLG.fst"))
    labels = {arc.olabel for s in kaldifst.StateIterator(fst) for arc in kaldifst.ArcIterator(fst, s)}
    words = dict(line.split()[::-1] for line in (graph / "words.txt").read_text().splitlines())
    assert {words[str(w)] for w in labels - {0}} == {"YES", "NO"}  # the silence word is not in the loop
    decode(graph, yesno_root / "exp/mono", f"scp:{oracle / 'll.scp'}", tmp_path / "dec")
    assert _wer(yesno_root, tmp_path / "dec") == (0, 248, 31)


def test_built_arpa_graph(yesno_root: Path, oracle: Path, tmp_path: Path) -> None:
    arpa = tmp_path / "lm.arpa"  # a bigram LM over YES / NO
    arpa.write_text(
        "\\data\\\nngram 1=4\nngram 2=4\n\n\\1-grams:\n-0.5 </s>\n-99 <s> -0.3\n-0.3 YES -0.2\n-0.3 NO -0.2\n\n"
        "\\2-grams:\n-0.3 <s> YES\n-0.3 <s> NO\n-0.3 YES NO\n-0.3 NO YES\n\n\\end\\\n"
    )
    graph = build_graph(yesno_root / "data/lang", yesno_root / "exp/mono/final.mdl", tmp_path / "g", grammar=arpa)
    decode(graph, yesno_root / "exp/mono/final.mdl", oracle / "ll.ark", tmp_path / "dec")
    assert _wer(yesno_root, tmp_path / "dec") == (0, 248, 31)
    with pytest.raises(AsrBnError, match="no such ARPA"):
        build_graph(yesno_root / "data/lang", yesno_root / "exp/mono", tmp_path / "g2", grammar=tmp_path / "x.arpa")


def test_lattices_are_kaldi_binary_and_rescored(yesno_root: Path, oracle: Path, tmp_path: Path) -> None:
    config = DecodeConfig(lattices=True, lmwt=(8, 9, 10, 11, 12))
    decode(yesno_root / "exp/mono/graph", yesno_root / "exp/mono", oracle / "ll.ark", tmp_path, config)
    assert sorted(p.name for p in tmp_path.glob("hyp_*")) == [f"hyp_{w}" for w in (10, 11, 12, 8, 9)]
    assert _wer(yesno_root, tmp_path) == (0, 248, 31)
    text = read_text(tmp_path / "text")
    ark = (tmp_path / "lat.ark").read_bytes()
    scp = [line.split() for line in (tmp_path / "lat.scp").read_text().splitlines()]
    assert len(scp) == 31
    offsets = [int(loc.rsplit(":", 1)[1]) for _, loc in scp]
    ends = [nxt - len(key) - 1 for (key, _), nxt in zip(scp[1:], offsets[1:])] + [len(ark)]
    words = {int(i): w for w, i in (line.split() for line in (yesno_root / "exp/mono/graph/words.txt").open())}
    for (utt, loc), start, end in zip(scp, offsets, ends):
        assert loc.rsplit(":", 1)[0] == str((tmp_path / "lat.ark").resolve())
        assert ark[start - len(utt) - 1 : start] == utt.encode() + b" "
        # the OpenFst header (vector, lattice4) right after the key: Kaldi's lattice holders write no "\0B"
        assert ark[start : start + 4] == bytes.fromhex("d6fdb27e")
        assert b"lattice4" in ark[start : start + 40]
        one = tmp_path / "one.fst"
        one.write_bytes(ark[start:end])
        lat = kaldifst.Lattice.read(str(one))
        best = kaldifst.lattice_to_nbest(lat, acoustic_scale=0.1, n=1)[0]
        assert [words[w] for w in kaldifst.get_linear_symbol_sequence(best)[2]] == text[utt]
    # a rerun without lattices into the same dir leaves no stale hyp_* or lattices to be scored
    decode(yesno_root / "exp/mono/graph", yesno_root / "exp/mono", oracle / "ll.ark", tmp_path)
    assert not list(tmp_path.glob("hyp_*")) and not (tmp_path / "lat.ark").exists()


def test_parallel_matches_serial(yesno_root: Path, oracle: Path, tmp_path: Path) -> None:
    graph, model = yesno_root / "exp/mono/graph", yesno_root / "exp/mono"
    decode(graph, model, oracle / "ll.scp", tmp_path / "a", nj=1)
    decode(graph, model, oracle / "ll.scp", tmp_path / "b", nj=2)
    assert (tmp_path / "a" / "text").read_text() == (tmp_path / "b" / "text").read_text()


def test_bad_utterances_are_skipped_and_named(yesno_root: Path, tmp_path: Path) -> None:
    good = np.full((40, 11), -20.0, dtype=np.float32)
    good[:, 0] = 0.0  # all silence
    nan = good.copy()
    nan[3, 2] = np.nan
    write_ark_scp(tmp_path / "ll.ark", None, [("a", good), ("b", nan), ("c", good[:0])])
    report = decode(yesno_root / "exp/mono/graph", yesno_root / "exp/mono", tmp_path / "ll.ark", tmp_path / "d")
    assert report.counts["decoded"] == 1
    reasons = dict(report.skipped)
    assert reasons == {
        "log-likelihoods contain NaN or infinity (check the network's output)": ["b"],
        "no frames to decode": ["c"],
    }
    assert (tmp_path / "d" / "text").read_text() == "a\n"  # silence only: an empty hypothesis


def test_mismatches_are_one_line_errors(yesno_root: Path, oracle: Path, tmp_path: Path) -> None:
    graph, model = yesno_root / "exp/mono/graph", yesno_root / "exp/mono"
    write_ark_scp(tmp_path / "wide.ark", None, [("u", np.zeros((5, 12), np.float32))])
    result = runner.invoke(app, ["decode", str(graph), str(model), str(tmp_path / "wide.ark"), str(tmp_path / "d")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    assert "utterance u has log-likelihoods of shape (5, 12) but" in result.output and "has 11 pdfs" in result.output
    assert not (tmp_path / "d" / "text").exists()  # nothing under a final name
    with pytest.raises(AsrBnError, match="no such alignment model"):
        decode(graph, tmp_path, oracle / "ll.ark", tmp_path / "d")
    with pytest.raises(AsrBnError, match="HCLG.fst: no such file"):
        decode(tmp_path, model, oracle / "ll.ark", tmp_path / "d")
    other = tmp_path / "graph"
    shutil.copytree(graph, other)
    (other / "num_pdfs").write_text("12\n")
    result = runner.invoke(app, ["decode", str(other), str(model), str(oracle / "ll.ark"), str(tmp_path / "d")])
    assert result.exit_code == 1 and "built for a model with 12 pdfs" in result.output
    (other / "num_pdfs").unlink()  # without num_pdfs the graph's transition-ids are checked instead
    assert load_graph(other, model).num_pdfs == 11
    (other / "HCLG.fst").write_bytes(b"not an fst")
    with pytest.raises(AsrBnError, match="not an OpenFst vector or const FST"):
        load_graph(other, model)
    with pytest.raises(UsageError, match="missing.ark does not exist; give the output of `asr-bn forward`"):
        decode(graph, model, tmp_path / "missing.ark", tmp_path / "d")
    with pytest.raises(UsageError, match="needs lattices"):
        decode(graph, model, oracle / "ll.ark", tmp_path / "d", DecodeConfig(lmwt=(10,)))


def _read_all(source: str, stdin: bytes = b"") -> list[tuple[str, np.ndarray]]:
    """read_loglikes of `source`, with `stdin` as the process's standard input (for `ark:-`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        return list(read_loglikes(source))


def test_unprintable_key_in_error_is_escaped(tmp_path: Path) -> None:
    """A key read from corrupt bytes may hold a newline (the fuzz test below found one): the error stays one line."""
    assert shown("u1") == "u1" and shown("\n1") == "'\\n1'"
    ark = tmp_path / "ll.ark"
    ark.write_bytes(b"\n1 \0BFM \4\1\0\0\0\4\1\0\0\0\0\0\x80?u2 \0BFM garbage")
    with pytest.raises(AsrBnError, match=r"after utterance '\\n1' \(") as e:
        _read_all(f"ark:{ark}")
    assert "\n" not in str(e.value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_loglikes_reading(tmp_path: Path, data: st.DataObject) -> None:
    """Truncated and byte-flipped `asr-bn forward` output, read as ark:FILE, scp:FILE or ark:- (a forward killed
    mid-pipe), gives the matrices or one AsrBnError line naming the source, never kaldiio's own exception."""
    rng = np.random.default_rng(0)
    mats = [("u1", rng.standard_normal((5, 3)).astype(np.float32)), ("u2", np.ones((2, 3), np.float32))]
    ark, scp = tmp_path / "ll.ark", tmp_path / "ll.scp"
    write_ark_scp(ark, scp, mats)
    good = ark.read_bytes()
    bad = bytearray(good[: data.draw(st.integers(0, len(good)), label="cut")])
    for _ in range(data.draw(st.integers(0, 4), label="flips")):
        if bad:
            bad[data.draw(st.integers(0, len(bad) - 1))] = data.draw(st.integers(0, 255))
    ark.write_bytes(bytes(bad))
    source = data.draw(st.sampled_from([f"ark:{ark}", f"scp:{scp}", "ark:-"]), label="source")
    try:
        got = _read_all(source, bytes(bad))
    except AsrBnError as e:
        assert "\n" not in str(e) and source in str(e)
        return
    assert all(mat.ndim == 2 for _, mat in got)
    if bytes(bad) == good:
        assert [u for u, _ in got] == ["u1", "u2"]
        for (_, mat), (_, want) in zip(got, mats):
            np.testing.assert_array_equal(mat, want)


def test_cut_off_forward_output_is_one_line(yesno_root: Path, oracle: Path, tmp_path: Path) -> None:
    """`asr-bn forward … | asr-bn decode … ark:-` with forward killed mid-matrix: exit 1, one line naming the last
    utterance read and the fix (kaldiio raises struct.error / ValueError there, not OSError)."""
    whole = (oracle / "ll.ark").read_bytes()
    second = [line.split() for line in (oracle / "ll.scp").read_text().splitlines()][1]
    cut = whole[: int(second[1].rsplit(":", 1)[1]) + 20]  # inside the second utterance's matrix header / data
    with pytest.raises(AsrBnError, match=r"from ark:- after utterance \S+ \(.*truncated or corrupt: re-run"):
        _read_all("ark:-", cut)
    args = ["decode", str(yesno_root / "exp/mono/graph"), str(yesno_root / "exp/mono"), "ark:-", str(tmp_path / "d")]
    result = runner.invoke(app, args, input=cut)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "cannot read log-likelihoods from ark:-" in errors[0]
    assert "re-run `asr-bn forward`" in errors[0]
    assert not (tmp_path / "d" / "text").exists()


def test_read_tree(yesno_root: Path, tmp_path: Path) -> None:
    tree = read_tree(yesno_root / "exp/mono/tree")
    assert (tree.context_width, tree.central_position, tree.num_pdfs) == (1, 0, 11)
    (tmp_path / "tree").write_bytes(b"ContextDependency 1 0 ")
    with pytest.raises(AsrBnError, match="not a binary Kaldi tree"):
        read_tree(tmp_path / "tree")


def test_cli_mkgraph_decode_score(yesno_root: Path, oracle: Path, tmp_path: Path) -> None:
    made = runner.invoke(app, ["mkgraph", str(yesno_root / "data/lang"), str(yesno_root / "exp/mono"), str(tmp_path / "g")])
    assert made.exit_code == 0, made.output
    stdin = (oracle / "ll.ark").read_bytes()
    dec = runner.invoke(
        app, ["decode", str(tmp_path / "g"), str(yesno_root / "exp/mono"), "ark:-", str(tmp_path / "d")], input=stdin
    )
    assert dec.exit_code == 0, dec.output
    assert "decoded 31" in dec.output
    scored = runner.invoke(app, ["score", "wer", str(yesno_root / "data/train_yesno"), str(tmp_path / "d")])
    assert scored.exit_code == 0 and "%WER 0.00 [ 0 / 248, 0 ins, 0 del, 0 sub ]" in scored.output
    ensemble = runner.invoke(app, ["decode", str(tmp_path / "g"), str(yesno_root / "exp/mono"), "ark:-",
                                   str(tmp_path / "m"), "--average-with", str(oracle / "ll.ark")], input=stdin)
    assert ensemble.exit_code == 0 and "decoded 31" in ensemble.output, ensemble.output
    assert (tmp_path / "m" / "text").read_text() == (tmp_path / "d" / "text").read_text()  # the mean of one twice
    bad = runner.invoke(app, ["decode", str(tmp_path / "g"), str(yesno_root / "exp/mono"), "ark:-", str(tmp_path / "e"),
                              "--lattices", "--lmwt", "x"])
    assert bad.exit_code == 2 and "--lmwt" in bad.output
    missing = runner.invoke(app, ["mkgraph", str(tmp_path / "nolang"), str(yesno_root / "exp/mono"), str(tmp_path / "h")])
    assert missing.exit_code == 2 and f"lang dir {tmp_path / 'nolang'} does not exist" in missing.output


def test_max_active_must_exceed_the_decoders_min_active() -> None:
    """Kaldi's FasterDecoder asserts min_active < max_active and aborts the process (decode-faster-mapped
    --max-active=20 does the same): 20 and below are refused up front, 21 makes a decoder."""
    with pytest.raises(UsageError, match=r"^--max-active must be > 20, got 20$"):
        DecodeConfig(max_active=FASTER_DECODER_MIN_ACTIVE).check()
    DecodeConfig(max_active=FASTER_DECODER_MIN_ACTIVE + 1).check()
    code = (
        "import sys\nfrom asr_bn.kaldi_ext import kaldi_decoder, kaldifst\n"
        "opts = kaldi_decoder.FasterDecoderOptions(beam=13.0, max_active=int(sys.argv[1]))\n"
        "assert opts.min_active == int(sys.argv[2])\n"
        "fst = kaldifst.StdVectorFst()\nfst.add_state()\nfst.start = 0\n"
        "kaldi_decoder.FasterDecoder(fst, opts)\nprint('made')"
    )
    runs = {
        n: subprocess.run([sys.executable, "-c", code, str(n), str(FASTER_DECODER_MIN_ACTIVE)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
        for n in (FASTER_DECODER_MIN_ACTIVE, FASTER_DECODER_MIN_ACTIVE + 1)
    }
    assert runs[FASTER_DECODER_MIN_ACTIVE + 1].stdout == "made\n", runs[FASTER_DECODER_MIN_ACTIVE + 1].stderr
    assert runs[FASTER_DECODER_MIN_ACTIVE].returncode != 0 and "min_active < config_.max_active" in (
        runs[FASTER_DECODER_MIN_ACTIVE].stdout + runs[FASTER_DECODER_MIN_ACTIVE].stderr
    )


def test_a_model_disagreeing_with_the_tree_only_in_its_last_state_is_refused(yesno_root: Path, tmp_path: Path) -> None:
    """Every transition-id is compared with the tree's pdfs, the last transition-state's too."""
    from asr_bn.mkgraph import _hmm_objects

    mono = yesno_root / "exp/mono"
    tm = read_transition_model(mono / "final.mdl")
    *rest, (phone, state, forward_pdf, _) = tm.tuples
    assert forward_pdf != 0
    other = TransitionModel(tm.topology, [*rest, (phone, state, 0, 0)], tm.log_probs)
    (tmp_path / "final.mdl").write_bytes(other.to_kaldi(binary=True))
    _hmm_objects(mono / "final.mdl", mono / "tree")  # the real pair agrees
    with pytest.raises(AsrBnError, match=r"final\.mdl: its transition-ids do not match the tree's pdfs"):
        _hmm_objects(tmp_path / "final.mdl", mono / "tree")


def test_lattice_hypothesis_of_a_decoders_lattice_is_its_hypothesis(yesno_root: Path, oracle: Path) -> None:
    """lattice_hypothesis (decode-fmllr's one-best of rescored lattices) on a lattice decode_matrix wrote gives back
    decode_matrix's hypothesis: words, alignment, log-likelihood (its scaled acoustic cost counted once), LM sweep;
    and the lattice survives parse_lattice + vector_bytes."""
    import kaldiio

    from asr_bn.decode import decode_matrix, lattice_hypothesis
    from asr_bn.fst import parse_lattice, vector_bytes

    graph = load_graph(yesno_root / "exp/mono/graph", yesno_root / "exp/mono")
    config = DecodeConfig(lattices=True, lmwt=(8, 12))
    for utt, ll in list(kaldiio.load_ark(str(oracle / "ll.ark")))[:3]:
        hyp = decode_matrix(graph, utt, ll, config)
        again = lattice_hypothesis(graph, utt, hyp.lattice, hyp.frames, config, hyp.reached_final)
        assert (again.words, again.alignment, again.by_lmwt) == (hyp.words, hyp.alignment, hyp.by_lmwt)
        assert again.log_like == pytest.approx(hyp.log_like, rel=1e-6)
        again_bytes = vector_bytes(parse_lattice(hyp.lattice, utt), changed=True)
        # the same bytes but the header's arc count (bytes 58-65), which OpenFst's writer leaves 0 here
        assert len(again_bytes) == len(hyp.lattice) and again_bytes[:58] == hyp.lattice[:58]
        assert again_bytes[66:] == hyp.lattice[66:]
