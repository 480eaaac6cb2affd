"""`asr-bn lang` against Kaldi's utils/prepare_lang.sh on the same dict dir (same files, same numbering, same L),
accepted by utils/validate_lang.pl; position-dependent lang folders train, align and build graphs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_kaldi, yesno_gmm_inputs
from typer.testing import CliRunner

from asr_bn.errors import AsrBnError
from asr_bn.lang import read_lang
from asr_bn.prepare_lang import prepare_lang, read_dict_dir
from asr_bn.report import Report
from asr_bn_cli.main import build_app

app = build_app()

DICT = {  # stress variants share a line (one set, one root); pronunciation probabilities; an extra question
    "silence_phones.txt": "SIL\nSPN\n",
    "optional_silence.txt": "SIL\n",
    "nonsilence_phones.txt": "AH AH1\nEY\nT\nUW\n",
    "extra_questions.txt": "SIL SPN\nAH1\n",
    "lexiconp.txt": "<SIL> 1.0 SIL\n<UNK> 1.0 SPN\nA 0.6 AH\nA 0.4 EY\nEIGHT 1.0 EY T\nTWO 1.0 T UW\nTOO 1.0 T UW\n"
                    "TUT 1.0 T AH1 T\nAT 1.0 AH1 T\n",
}


def _write_dict(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _kaldi_sh(bundle: Path, command: str, cwd: Path) -> str:
    """Run a Kaldi script's command line (utils/ on PATH through the bundle's path.sh); its stdout."""
    proc = subprocess.run(["bash", "-c", f"export KALDI_BUNDLE={bundle}; . {bundle}/path.sh && {command}"], cwd=cwd,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _normalized(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


@pytest.mark.parametrize("position_dependent", ["true", "false"])
def test_lang_matches_prepare_lang_sh(kaldi_bundle: Path, tmp_path: Path, position_dependent: str) -> None:
    dict_dir = _write_dict(tmp_path / "dict", DICT)
    (tmp_path / "utils").symlink_to(kaldi_bundle / "egs" / "utils")
    (tmp_path / "path.sh").write_text(f". {kaldi_bundle}/path.sh\n")
    _kaldi_sh(kaldi_bundle, f"utils/prepare_lang.sh --position-dependent-phones {position_dependent} "
              "dict '<UNK>' tmp kaldi", tmp_path)
    run = CliRunner().invoke(app, ["lang", str(dict_dir), str(tmp_path / "ours"), "--position-dependent-phones",
                                   position_dependent])
    assert run.exit_code == 0, run.output
    kaldi, ours = tmp_path / "kaldi", tmp_path / "ours"
    kaldi_files = sorted(str(p.relative_to(kaldi)) for p in kaldi.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(ours)) for p in ours.rglob("*") if p.is_file()) == sorted(
        [*kaldi_files, "lexiconp.txt"])
    assert ("phones/word_boundary.txt" in kaldi_files) == (position_dependent == "true")
    for name in kaldi_files:
        if not name.endswith(".fst"):
            assert _normalized(ours / name) == _normalized(kaldi / name), name
    for name in ("L.fst", "L_disambig.fst"):  # same states, arcs and costs (arc order within a state aside)
        prints = [sorted(run_kaldi(kaldi_bundle, "fstprint", d / name).splitlines()) for d in (kaldi, ours)]
        assert prints[0] == prints[1] and len(prints[0]) > 20, name
    assert "SUCCESS" in _kaldi_sh(kaldi_bundle, f"utils/validate_lang.pl {ours}", tmp_path)
    lang = read_lang(ours)  # what the GMM trainer and mkgraph read: the lang's phones, probabilities and sets
    assert lang.oov == "<UNK>" and lang.pron_probs[2:4] == [0.6, 0.4]
    if position_dependent == "true":
        assert dict(lang.lexicon)["TUT"] == ["T_B", "AH1_I", "T_E"]
        assert lang.phone_sets[2] == ["AH_B", "AH_E", "AH_I", "AH_S", "AH1_B", "AH1_E", "AH1_I", "AH1_S"]
        assert lang.silence_phone == "SIL" and len(lang.silence_phone_ids) == 10


def test_bare_lexicon_and_missing_oov_are_said(tmp_path: Path) -> None:
    """A bare lexicon: phone lists derived and said so; the OOV word added as SPN, said so."""
    (tmp_path / "lexicon.txt").write_text("<SIL> SIL\nYES Y EH S\nNO N OW\n")
    report = Report("lang")
    lang = prepare_lang(read_dict_dir(tmp_path / "lexicon.txt", report), tmp_path / "lang", report)
    assert any("bare lexicon: phone lists derived" in n for n in report.notes)
    assert any("added `<UNK> SPN`" in n for n in report.notes)
    again = read_lang(tmp_path / "lang")
    assert again.lexicon == lang.lexicon and dict(again.lexicon)["<UNK>"] == ["SPN_S"]
    assert [p for s in again.phone_sets for p in s][:10] == ["SIL", "SIL_B", "SIL_E", "SIL_I", "SIL_S",
                                                             "SPN", "SPN_B", "SPN_E", "SPN_I", "SPN_S"]


@pytest.mark.parametrize("files, message", [
    ({"optional_silence.txt": "SIL2\n"}, "optional silence SIL2 is not in silence_phones.txt"),
    ({"lexiconp.txt": "A 1.0 AH ZZ\n<UNK> 1.0 SPN\n"}, r"word 'A' uses phones \['ZZ'\]"),
    ({"lexiconp.txt": "A 1.5 AH\n"}, r"lexiconp.txt:1: expected `WORD PROB PH1 …` with 0 < PROB <= 1"),
    ({"lexiconp.txt": "<s> 1.0 AH\n"}, r"lexicon words \['<s>'\] are reserved"),
    ({"nonsilence_phones.txt": "AH_B\nEY T UW AH1\n"}, r"phones \['AH_B'\] have reserved names"),
    ({"nonsilence_phones.txt": "SIL AH AH1\nEY T UW\n"}, r"phones \['SIL'\] are listed twice"),
])
def test_bad_dict_dirs_are_one_line_errors(tmp_path: Path, files: dict[str, str], message: str) -> None:
    dict_dir = _write_dict(tmp_path / "dict", {**DICT, **files})
    with pytest.raises(AsrBnError, match=message):
        prepare_lang(read_dict_dir(dict_dir, Report("lang")), tmp_path / "lang", Report("lang"))
    assert not (tmp_path / "lang").exists() and os.listdir(tmp_path) == ["dict"]


def test_position_dependent_lang_trains_aligns_and_builds_graphs(kaldi_bundle: Path, yesno_root: Path,
                                                                  tmp_path: Path) -> None:
    """The monophone trainer shares pdfs across a phone's position variants (the tree is gmm-init-mono
    --shared-phones=phones/sets.int's), aligns yesno into word-position phones, reloads, and mkgraph works."""
    from asr_bn.alignments import read_alignments, read_transition_model
    from asr_bn.gmm.align import align, AlignConfig
    from asr_bn.gmm.mono import MonoConfig, train_mono
    from asr_bn.gmm.system import GmmSystem
    from asr_bn.mkgraph import build_graph

    report = Report("lang")
    prepare_lang(read_dict_dir(yesno_root / "data" / "local" / "dict", report), tmp_path / "lang", report)
    lang = read_lang(tmp_path / "lang")
    feats, text = yesno_gmm_inputs(yesno_root, 12)
    utts = list(feats)
    cfg = MonoConfig(num_iters=4, max_iter_inc=2, total_gauss=40, realign_iters=(1, 2))
    train_mono(feats, text, lang, tmp_path / "mono", cfg)
    run_kaldi(kaldi_bundle, "gmm-init-mono", f"--shared-phones={tmp_path}/lang/phones/sets.int",
              tmp_path / "lang" / "topo", "39", tmp_path / "k.mdl", tmp_path / "k.tree")
    assert (tmp_path / "mono" / "tree").read_bytes() == (tmp_path / "k.tree").read_bytes()
    tm = read_transition_model(tmp_path / "mono" / "final.mdl")
    assert tm.num_pdfs == 2 * 5 + 2 * 3  # SIL, SPN (5 states); Y, N (3): one pdf set per phone, not per variant
    system = GmmSystem.load(tmp_path / "mono" / "final.mdl")  # the tree beside it gives the shared pdfs
    report = align(system, feats, text, lang, tmp_path / "ali", network=False)
    names = {i: p for p, i in lang.phones.items()}
    for ali in read_alignments(tmp_path / "ali"):
        words = [names[p] for p, _, _ in tm.phone_segments(ali.values) if not names[p].startswith("SIL")]
        assert words == [{"YES": "Y_S", "NO": "N_S"}[w] for w in text[ali.utt].split()], ali.utt
    assert report.counts["aligned"] == len(utts)
    # words outside the lexicon: mapped to <UNK> (SPN), counted and named per word; or the utterance skipped, named
    odd = {utts[0]: text[utts[0]] + " MAYBE MAYBE", utts[1]: "PERHAPS " + text[utts[1]]}
    mapped = align(system, feats, odd, lang, tmp_path / "ali_map")
    assert mapped.counts["words mapped to <UNK>"] == 3 and "MAYBE (2), PERHAPS (1)" in mapped.notes[0]
    assert not mapped.skipped.get("words not in the lexicon")
    skipped = align(system, feats, odd, lang, tmp_path / "ali_skip", AlignConfig(oov_policy="skip"))
    assert skipped.skipped["words not in the lexicon"] == utts[:2] and "words mapped to <UNK>" not in skipped.counts
    graph = build_graph(tmp_path / "lang", tmp_path / "mono", tmp_path / "graph")
    assert (graph / "HCLG.fst").stat().st_size > 0
    assert np.count_nonzero([w.startswith("#") for w in (graph / "words.txt").read_text().split()[::2]]) == 1
