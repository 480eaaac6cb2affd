"""Decoding graphs against real Kaldi and OpenFst (../shared/kaldi): const and vector HCLG.fst as OpenFst writes them,
bad graphs refused in one line, `asr-bn mkgraph`'s graphs accepted by fstinfo and latgen-faster-mapped (same words
and best-path costs as `asr-bn decode`), and compared with Kaldi's own utils/mkgraph.sh — all on real network
log-likelihoods (the `yesno_net_loglikes` fixture), whose margins make a wrongly weighted graph visible."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_kaldi
from typer.testing import CliRunner

from asr_bn.decode import DecodeConfig, decode_matrix, load_graph, read_loglikes
from asr_bn.fst import read_std_fst, vector_bytes
from asr_bn.io import write_ark_scp
from asr_bn.mkgraph import build_graph
from asr_bn_cli.main import app

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
    run_kaldi(["fstconvert", "--fst_type=const", *flags, fst, f"{fst}.const"])
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

