"""Decoding graphs against real Kaldi and OpenFst (../shared/kaldi): const and vector HCLG.fst as OpenFst writes them,
bad graphs refused in one line, `asr-bn mkgraph`'s graphs accepted by fstinfo and latgen-faster-mapped (same words
and best-path costs as `asr-bn decode`), and compared with Kaldi's own utils/mkgraph.sh — all on real network
log-likelihoods (the `yesno_net_loglikes` fixture), whose margins make a wrongly weighted graph visible."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_kaldi
from typer.testing import CliRunner

from asr_bn.decode import DecodeConfig, decode_matrix, load_graph, read_loglikes
from asr_bn.fst import FstArrays, read_std_fst, vector_bytes
from asr_bn.io import write_ark_scp
from asr_bn_cli.main import build_app

app = build_app()

runner = CliRunner()
ARPA = (  # a bigram LM over YES / NO
    "\\data\\\nngram 1=4\nngram 2=4\n\n\\1-grams:\n-0.5 </s>\n-99 <s> -0.3\n-0.3 YES -0.2\n-0.3 NO -0.2\n\n"
    "\\2-grams:\n-0.3 <s> YES\n-0.6 <s> NO\n-0.4 YES NO\n-0.2 NO YES\n\n\\end\\\n"
)


def _graph_copy(yesno_root: Path, dest: Path) -> Path:
    shutil.copytree(yesno_root / "exp/mono/graph", dest)
    return dest


def _to_const(kaldi_bundle: Path, graph: Path, *flags: str) -> None:
    fst = graph / "HCLG.fst"
    run_kaldi(kaldi_bundle, "fstconvert", "--fst_type=const", *flags, fst, f"{fst}.const")
    Path(f"{fst}.const").replace(fst)


def _decode_cli(graph: Path, model: Path, loglikes: Path, out: Path, *options: str) -> str:
    result = runner.invoke(app, ["decode", str(graph), str(model), str(loglikes), str(out), *options])
    assert result.exit_code == 0, result.output
    return (out / "text").read_text()


@pytest.mark.parametrize("align", ["--fst_align=false", "--fst_align=true"])
def test_const_graph_loads_and_decodes_like_vector(
    yesno_root: Path, kaldi_bundle: Path, yesno_net_loglikes: dict[str, Path], tmp_path: Path, align: str
) -> None:
    vector = yesno_root / "exp/mono/graph"
    const = _graph_copy(yesno_root, tmp_path / "const")
    _to_const(kaldi_bundle, const, align)
    assert read_std_fst(const / "HCLG.fst").fst_type == "const"
    a, b = read_std_fst(vector / "HCLG.fst"), read_std_fst(const / "HCLG.fst")
    assert (a.start, a.num_states) == (b.start, b.num_states)
    for name in ("final", "first", "arcs"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert vector_bytes(b)[-60:] == (vector / "HCLG.fst").read_bytes()[-60:]  # the vector layout, byte for byte
    model, ll = yesno_root / "exp/mono/final.mdl", yesno_net_loglikes["test"]
    assert _decode_cli(const, model, ll, tmp_path / "c") == _decode_cli(vector, model, ll, tmp_path / "v")


@pytest.mark.parametrize("fst_type", ["vector", "const"])
def test_symbol_tables_in_the_file_are_skipped(
    yesno_root: Path, kaldi_bundle: Path, tmp_path: Path, fst_type: str
) -> None:
    """fstcompile --keep_isymbols/--keep_osymbols writes both tables into the header; the arcs read the same."""
    hclg, words = yesno_root / "exp/mono/graph/HCLG.fst", yesno_root / "exp/mono/graph/words.txt"
    tids = tmp_path / "tids.txt"
    tids.write_text("".join(f"t{i} {i}\n" for i in range(int(read_std_fst(hclg).arcs["ilabel"].max()) + 1)))
    (tmp_path / "num.txt").write_text(run_kaldi(kaldi_bundle, "fstprint", hclg))
    tables = [f"--isymbols={tids}", f"--osymbols={words}"]
    (tmp_path / "sym.txt").write_text(run_kaldi(kaldi_bundle, "fstprint", *tables, hclg))
    run_kaldi(kaldi_bundle, "fstcompile", f"--fst_type={fst_type}", tmp_path / "num.txt", tmp_path / "num.fst")
    run_kaldi(kaldi_bundle, "fstcompile", f"--fst_type={fst_type}", *tables, "--keep_isymbols",
               "--keep_osymbols", tmp_path / "sym.txt", tmp_path / "sym.fst")  # fmt: skip
    plain = read_std_fst(tmp_path / "num.fst")
    assert b"YES" in (tmp_path / "sym.fst").read_bytes()  # the tables are in the file
    got = read_std_fst(tmp_path / "sym.fst")
    assert got.fst_type == fst_type
    for name in ("final", "first", "arcs"):
        np.testing.assert_array_equal(getattr(got, name), getattr(plain, name))


@pytest.mark.parametrize("fst_type", ["vector", "const"])
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("ilabel=999", r"reads input label 999, but \S+final.mdl has transition-ids 1\.\.\d+ \(a graph of another"),
        ("ilabel=-3", r"reads input label -3, but"),
        ("olabel=77", r"writes word id 77, which is not in \S+words.txt \(put the words.txt"),
        ("olabel=-2", r"writes word id -2, which is not in"),
        ("nextstate=4000", r"goes to state 4000, but the graph has 24 states \(a corrupt graph: rebuild it\)"),
        ("truncate", r"not an OpenFst vector or const FST of standard arcs \(.*\); rebuild it"),
    ],
)
def test_bad_graph_is_one_line_exit_1(
    yesno_root: Path, kaldi_bundle: Path, tmp_path: Path, edit: str, message: str, fst_type: str
) -> None:
    """Such graphs crashed the decoder (exit 139 with num_pdfs present) or decoded to empty / <unk:N> words."""
    graph = _graph_copy(yesno_root, tmp_path / "g")
    fst = graph / "HCLG.fst"
    _to_const(kaldi_bundle, graph)  # as OpenFst wrote it; then one field of its first arc changed in place
    if edit != "truncate":
        raw = bytearray(fst.read_bytes())
        field, value = edit.split("=")
        at = len(raw) - read_std_fst(fst).arcs.nbytes + {"ilabel": 0, "olabel": 4, "nextstate": 12}[field]
        raw[at : at + 4] = np.int32(value).tobytes()
        fst.write_bytes(raw)
    if fst_type == "vector":
        fst.write_bytes(vector_bytes(read_std_fst(fst)))
    if edit == "truncate":
        fst.write_bytes(fst.read_bytes()[:-7])
    ll = tmp_path / "ll.ark"
    write_ark_scp(ll, None, [("u", np.zeros((20, 11), np.float32))])
    result = runner.invoke(app, ["decode", str(graph), str(yesno_root / "exp/mono"), str(ll), str(tmp_path / "d")])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and str(fst) in errors[0], result.output
    assert re.search(message, errors[0]), errors[0]
    assert not (tmp_path / "d" / "text").exists()




@pytest.mark.parametrize("fst_type", ["vector", "const"])
@pytest.mark.parametrize("where", ["arc", "final"])
@pytest.mark.parametrize("value", [math.nan, -math.inf])
def test_nan_or_minus_inf_weight_is_one_line_exit_1(
    yesno_root: Path, kaldi_bundle: Path, tmp_path: Path, fst_type: str, where: str, value: float
) -> None:
    """A NaN or -inf final weight made `decode --lattices` loop for ever, and on an arc a traceback; OpenFst's
    fstinfo calls such graphs not well-formed. Refused before decoding, with lattices or without."""
    graph = _graph_copy(yesno_root, tmp_path / "g")
    fst = read_std_fst(graph / "HCLG.fst")
    final, arcs = fst.final.copy(), fst.arcs.copy()
    if where == "arc":
        arcs["weight"][5] = value
    else:
        final[np.flatnonzero(np.isfinite(final))[0]] = value
    edited = FstArrays("vector", fst.start, final, fst.first, arcs, fst.properties, b"")
    (graph / "HCLG.fst").write_bytes(vector_bytes(edited, changed=True))
    if fst_type == "const":
        _to_const(kaldi_bundle, graph)
    write_ark_scp(tmp_path / "ll.ark", None, [("u", np.zeros((20, 11), np.float32))])
    for options in ([], ["--lattices"]):
        result = runner.invoke(app, ["decode", str(graph), str(yesno_root / "exp/mono"), str(tmp_path / "ll.ark"),
                                     str(tmp_path / "d"), *options])  # fmt: skip
        errors = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(errors) == 1, result.output
        assert re.search(r"HCLG.fst: (an arc from state \d+|state \d+) has (final )?weight (nan|-inf) \(a corrupt "
                         r"graph: rebuild it\)", errors[0]), errors[0]


_FUZZ = r"""
import sys
from pathlib import Path

import numpy as np

from asr_bn.config import DecodeConfig
from asr_bn.decode import decode_matrix, load_graph
from asr_bn.errors import AsrBnError

graph, model, seed, cases = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
good = (graph / "HCLG.fst").read_bytes()
rng = np.random.default_rng(seed)
loglikes = rng.normal(-5.0, 3.0, (30, 11)).astype(np.float32)
outcomes = {"refused": 0, "decoded": 0, "skipped": 0}
for case in range(cases):
    raw = bytearray(good)
    if case % 4 == 3:
        raw = raw[: int(rng.integers(0, len(raw)))]
    else:
        for at in rng.integers(0, len(raw), int(rng.integers(1, 5))):
            raw[at] = int(rng.integers(0, 256))
    (graph / "HCLG.fst").write_bytes(bytes(raw))
    print("case", case, flush=True)
    try:
        g = load_graph(graph, model)
    except AsrBnError as e:
        assert "\n" not in str(e) and str(graph / "HCLG.fst") in str(e), e
        outcomes["refused"] += 1
        continue
    for lattices in (False, True):
        try:
            decode_matrix(g, "u", loglikes, DecodeConfig(lattices=lattices))
            outcomes["decoded"] += 1
        except AsrBnError as e:
            assert str(e).startswith("utterance u: ") and "\n" not in str(e), e
            outcomes["skipped"] += 1
print(outcomes)
"""


@pytest.mark.parametrize("fst_type", ["vector", "const"])
def test_corrupted_graph_bytes_never_crash_or_hang_decode(
    yesno_root: Path, kaldi_bundle: Path, tmp_path: Path, fst_type: str
) -> None:
    """Issue 13: decode never crashes on a bad file. 200 random corruptions of a real graph (1-4 bytes overwritten, or
    the file cut short) each either load and decode, give a named per-utterance error, or are refused in one line
    naming the graph; never another exception, a crash or a hang (the cases run in a child process with a deadline)."""
    graph = _graph_copy(yesno_root, tmp_path / "g")
    if fst_type == "const":
        _to_const(kaldi_bundle, graph)
    script = tmp_path / "fuzz.py"
    script.write_text(_FUZZ)
    try:
        done = subprocess.run([sys.executable, script, graph, yesno_root / "exp/mono/final.mdl", "7", "200"],
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as e:
        last = [line for line in (e.stdout or b"").decode().splitlines() if line.startswith("case")][-1:]
        pytest.fail(f"decoding a corrupted graph hung ({last})")
    assert done.returncode == 0, done.stdout[-500:] + done.stderr[-3000:]
    outcomes = eval(done.stdout.splitlines()[-1])  # the child's last line: a dict of counts
    assert outcomes["refused"] > 50 and outcomes["decoded"] > 0, outcomes


def test_empty_graph_is_one_line_exit_1(yesno_root: Path, kaldi_bundle: Path, tmp_path: Path) -> None:
    graph = _graph_copy(yesno_root, tmp_path / "g")
    (tmp_path / "empty.txt").write_text("")
    run_kaldi(kaldi_bundle, "fstcompile", tmp_path / "empty.txt", graph / "HCLG.fst")
    write_ark_scp(tmp_path / "ll.ark", None, [("u", np.zeros((20, 11), np.float32))])
    result = runner.invoke(app, ["decode", str(graph), str(yesno_root / "exp/mono"), str(tmp_path / "ll.ark"),
                                 str(tmp_path / "d")])  # fmt: skip
    assert result.exit_code == 1
    assert "HCLG.fst: the graph has 0 states and start state -1 (an empty or corrupt graph: rebuild it)" in result.output

def _kaldi_mkgraph(kaldi_bundle: Path, yesno_root: Path, g_text: str, work: Path) -> Path:
    """Kaldi's own utils/mkgraph.sh on yesno's lang (G.fst replaced by `g_text`, OpenFst text) and model."""
    work.mkdir()
    (work / "utils").symlink_to(kaldi_bundle / "egs/utils")
    (work / "path.sh").write_text(f". {kaldi_bundle}/path.sh\n")
    shutil.copytree(yesno_root / "data/lang", work / "lang")
    (work / "G.txt").write_text(g_text)
    run_kaldi(kaldi_bundle, "fstcompile", work / "G.txt", work / "G.unsorted")
    run_kaldi(kaldi_bundle, "fstarcsort", "--sort_type=ilabel", work / "G.unsorted", work / "lang/G.fst")
    script = f". ./path.sh && utils/mkgraph.sh lang {yesno_root / 'exp/mono'} graph"
    result = subprocess.run(["bash", "-c", script], cwd=work, capture_output=True, env={**os.environ, "LC_ALL": "C"})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return work / "graph"


def _equivalent(kaldi_bundle: Path, a: Path, b: Path, work: Path) -> bool:
    """OpenFst's fstequivalent on two HCLGs made comparable: eps:eps arcs removed (mkgraph.sh's fstrmepslocal removes
    some), (transition-id, word) pairs encoded by one shared table into acceptors, determinized. Weights agree to
    0.01, not 0.0001, with an ARPA G: mkgraph.sh's fstpushspecial (which asr-bn skips) moves weight in float32."""
    work.mkdir()
    for name, fst in (("a", a), ("b", b)):
        run_kaldi(kaldi_bundle, "fstrmepsilon", fst, work / f"{name}.noeps")
        reuse = ["--encode_reuse"] if name == "b" else []
        codex, noeps = work / "codex", work / f"{name}.noeps"
        run_kaldi(kaldi_bundle, "fstencode", "--encode_labels", *reuse, noeps, codex, work / f"{name}.enc")
        run_kaldi(kaldi_bundle, "fstdeterminize", work / f"{name}.enc", work / f"{name}.det")
    result = subprocess.run([kaldi_bundle / "bin/fstequivalent", "--delta=0.01", work / "a.det", work / "b.det"],
                            capture_output=True)  # fmt: skip
    return result.returncode == 0  # 2: not equivalent


def _loop_g(words: dict[str, int]) -> str:
    cost = math.log(3)  # YES, NO and the end share the probability mass equally
    return "".join(f"0 0 {words[w]} {words[w]} {cost}\n" for w in ("YES", "NO")) + f"0 {cost}\n"


def _arpa_g(words_txt: Path, arpa: Path) -> str:
    from asr_bn.kaldi_ext import kaldilm

    return kaldilm.arpa2fst(input_arpa=str(arpa), disambig_symbol="#0", read_symbol_table=str(words_txt))


def _one_best(graph: Path, model: Path, loglikes: Path, pdf_labels: bool = False,
              config: DecodeConfig | None = None) -> dict[str, tuple[list[str], float]]:
    """asr-bn's one-best words and log-likelihood (-(graph + 0.1 × acoustic cost), Kaldi's decoders') per utterance,
    on the graph as it is or relabelled with pdf-ids (what `decode` does without lattices and ctm); `config`'s beams
    (default: DecodeConfig's, steps/nnet/decode.sh's)."""
    loaded, config = load_graph(graph, model, pdf_labels), config or DecodeConfig()
    return {u: ((h := decode_matrix(loaded, u, m, config)).words, h.log_like) for u, m in read_loglikes(loglikes)}


def _kaldi_one_best(
    kaldi_bundle: Path, graph: Path, model: Path, loglikes: Path, work: Path, beam: float = 13.0
) -> dict[str, tuple[list[str], float]]:
    """latgen-faster-mapped (steps/nnet/decode.sh's beams; `beam` for another) then lattice-1best: words and
    -(graph + 0.1 × acoustic) (lattices keep unscaled acoustic costs); lattice-best-path's words checked equal."""
    words = {line.split()[1]: line.split()[0] for line in (graph / "words.txt").read_text().splitlines()}
    lat = work / "lat.ark"
    # state-level lattices: determinizing them takes Kaldi minutes on this tiny network's flat scores
    run_kaldi(kaldi_bundle, "latgen-faster-mapped", "--acoustic-scale=0.1", f"--beam={beam}", "--lattice-beam=8",
              "--max-active=7000", "--determinize-lattice=false", model, graph / "HCLG.fst", f"ark:{loglikes}",
              f"ark:{lat}")  # fmt: skip
    run_kaldi(kaldi_bundle, "lattice-1best", "--acoustic-scale=0.1", f"ark:{lat}", f"ark:{work / 'best.ark'}")
    text = run_kaldi(kaldi_bundle, "lattice-copy", f"ark:{work / 'best.ark'}", "ark,t:-")
    out = {}
    for block in text.strip().split("\n\n"):
        utt, *lines = block.strip().splitlines()
        cost, hyp = 0.0, []
        for line in lines:  # "src dst word graph,acoustic,tids", a final "state graph,acoustic," or "state" (cost 0)
            fields = line.split()
            if len(fields) == 4 and fields[2] != "0":
                hyp.append(words[fields[2]])
            if len(fields) > 1:
                g, a = fields[-1].split(",")[:2]
                cost += float(g) + 0.1 * float(a)
        out[utt.strip()] = (hyp, -cost)
    best_path = run_kaldi(kaldi_bundle, "lattice-best-path", "--acoustic-scale=0.1", f"ark:{lat}", "ark,t:-")
    for line in best_path.splitlines():
        utt, *ids = line.split()
        assert [words[i] for i in ids] == out[utt][0]
    return out


def _assert_same(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for utt in ours:
        assert ours[utt][0] == theirs[utt][0], utt
        # log-likelihoods of ~60 (graph + 0.1 x acoustic, Kaldi's decoders'): float32 sums of the graphs' costs and
        # Kaldi's text lattices (6 significant digits per arc) differ by up to ~5e-3 per utterance
        assert ours[utt][1] == pytest.approx(theirs[utt][1], abs=1e-2), utt


@pytest.mark.parametrize("grammar", ["loop", "arpa"])
def test_mkgraph_matches_kaldi(
    yesno_root: Path, kaldi_bundle: Path, yesno_net_loglikes: dict[str, Path], tmp_path: Path, grammar: str
) -> None:
    """`asr-bn mkgraph`'s graph (word loop, ARPA) against Kaldi's utils/mkgraph.sh on the same lang, model and G:
    the same words and best-path costs on every utterance for real network scores, with asr-bn's decoder on both
    graphs and with Kaldi's latgen-faster-mapped + lattice-best-path on asr-bn's graph; fstinfo reads it."""
    model, lang = yesno_root / "exp/mono/final.mdl", yesno_root / "data/lang"
    words = {w: int(i) for w, i in (line.split() for line in (lang / "words.txt").read_text().splitlines())}
    args = ["mkgraph", str(lang), str(yesno_root / "exp/mono"), str(tmp_path / "ours")]
    if grammar == "loop":
        g_text = _loop_g(words)
    else:
        (tmp_path / "lm.arpa").write_text(ARPA)
        g_text = _arpa_g(lang / "words.txt", tmp_path / "lm.arpa")
        args += ["--lm", str(tmp_path / "lm.arpa")]
    made = runner.invoke(app, args)
    assert made.exit_code == 0, made.output
    ours = tmp_path / "ours"
    info = run_kaldi(kaldi_bundle, "fstinfo", ours / "HCLG.fst")
    assert "# of states" in info and "fst type                                          vector" in info
    kaldi = _kaldi_mkgraph(kaldi_bundle, yesno_root, g_text, tmp_path / "kaldi")
    assert read_std_fst(kaldi / "HCLG.fst").fst_type == "const"  # what mkgraph.sh writes, read as it is
    assert _equivalent(kaldi_bundle, kaldi / "HCLG.fst", ours / "HCLG.fst", tmp_path / "equivalent")
    (tmp_path / "k").mkdir()
    for part in ("train", "test"):
        ll = yesno_net_loglikes[part]
        mine = _one_best(ours, model, ll)
        _assert_same(mine, _one_best(kaldi, model, ll))
        for graph in (ours, kaldi):  # vector and const files relabelled with pdf-ids: the same search
            assert _one_best(graph, model, ll, pdf_labels=True) == _one_best(graph, model, ll)
        _assert_same(mine, _kaldi_one_best(kaldi_bundle, ours, model, ll, tmp_path / "k"))


def test_lmwt_sweep_matches_kaldi_score_sh(
    yesno_root: Path, kaldi_bundle: Path, yesno_net_loglikes: dict[str, Path], tmp_path: Path
) -> None:
    """`decode --lattices --lmwt` hypotheses against Kaldi's score.sh sweep on latgen-faster-mapped's lattices of the
    same graph and log-likelihoods (lattice-scale --inv-acoustic-scale=LMWT | lattice-best-path), every weight."""
    graph, model, ll = yesno_root / "exp/mono/graph", yesno_root / "exp/mono/final.mdl", yesno_net_loglikes["test"]
    weights = (1, 4, 12)
    _decode_cli(graph, model, ll, tmp_path / "d", "--lattices", "--lmwt", f"{weights[0]}:{weights[-1]}")
    lat = tmp_path / "lat.ark"
    run_kaldi(kaldi_bundle, "latgen-faster-mapped", "--acoustic-scale=0.1", "--beam=13", "--lattice-beam=8",
               "--determinize-lattice=false", model, graph / "HCLG.fst", f"ark:{ll}", f"ark:{lat}")  # fmt: skip
    words = {line.split()[1]: line.split()[0] for line in (graph / "words.txt").read_text().splitlines()}
    differ = set()
    for lmwt in weights:
        scaled = tmp_path / "scaled.ark"
        run_kaldi(kaldi_bundle, "lattice-scale", f"--inv-acoustic-scale={lmwt}", f"ark:{lat}", f"ark:{scaled}")
        best = run_kaldi(kaldi_bundle, "lattice-best-path", f"ark:{scaled}", "ark,t:-")
        kaldi = {u: [words[i] for i in ids] for u, *ids in (line.split() for line in best.splitlines())}
        lines = (tmp_path / "d" / f"hyp_{lmwt}").read_text().splitlines()
        ours = {u: hyp for u, *hyp in (line.split() for line in lines)}
        assert ours == kaldi, lmwt
        differ.add(tuple(sorted((u, tuple(h)) for u, h in kaldi.items())))
    assert len(differ) > 1  # the weights matter on these scores, so a wrong scale would show
