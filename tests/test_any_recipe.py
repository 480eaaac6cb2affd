"""The generic recipe (recipes/any/run.sh) end to end in --fast mode on a corpus that is not AN4's: the synthesized
small corpus written as plain Kaldi data dirs and a dict dir, with OOV words, no utt2spk, mixed case and punctuation,
no dev set (speakers held out)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from asr_bn.alignments import read_alignments, read_transition_model
from asr_bn.lang import read_lang
from asr_bn.lattice import LatticeTable

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "any" / "run.sh"
DROPPED = "SEVEN"  # a lexicon word removed from the dict: its occurrences become <UNK>


def _table(path: Path) -> dict[str, str]:
    return dict(line.split(maxsplit=1) if " " in line else (line, "") for line in path.read_text().splitlines())


def make_corpus(out: Path) -> tuple[Path, Path, Path]:
    """(train, test, dict): the small synthesized corpus as a user's files. train has no utt2spk and transcripts
    in lower case with commas; the dict dir lacks one word."""
    from asr_bn.synth import synthesize_corpus

    paths = synthesize_corpus(out / "synth", seed=3, size="small")
    train, test, dict_dir = out / "corpus" / "train", out / "corpus" / "test", out / "corpus" / "dict"
    for split, dest in (("train", train), ("test", test)):
        dest.mkdir(parents=True)
        (dest / "wav.scp").write_text((paths.data[split] / "wav.scp").read_text())
        text = _table(paths.data[split] / "text")
        if split == "train":
            text = {u: t.lower().replace(" ", ", ", 1) for u, t in text.items()}
        else:
            (dest / "utt2spk").write_text((paths.data[split] / "utt2spk").read_text())
        (dest / "text").write_text("".join(f"{u} {t}\n" for u, t in text.items()))
    lexicon = [line for line in (paths.lang / "lexicon.txt").read_text().splitlines() if line.split()[0] != DROPPED]
    phones = sorted({p for line in lexicon for p in line.split()[1:]} - {"SIL"})
    dict_dir.mkdir()
    (dict_dir / "lexicon.txt").write_text("\n".join(lexicon) + "\n")
    (dict_dir / "silence_phones.txt").write_text("SIL\n")
    (dict_dir / "optional_silence.txt").write_text("SIL\n")
    (dict_dir / "nonsilence_phones.txt").write_text("".join(f"{p}\n" for p in phones))
    return train, test, dict_dir


@pytest.mark.slow
def test_any_recipe_fast_end_to_end(tmp_path: Path) -> None:
    train, test, dict_dir = make_corpus(tmp_path)
    work = tmp_path / "work"
    cmd = ["bash", str(RECIPE), "--fast", "--train", str(train), "--test", str(test), "--dict", str(dict_dir),
           "--dev-speakers", "8", "--case", "upper", "--strip-punctuation", "--nj", "1", "--dir", str(work)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for stage in range(1, 9):
        assert f"Stage {stage}:" in run.stdout
    # stage 1: no utt2spk (each utterance its own speaker), 8 of them held out as dev; case and commas normalised,
    # SEVEN (not in the dict) counted and named as <UNK> everywhere transcripts are read
    assert "each utterance is its own speaker" in run.stdout and "punctuation removed (count): ',' (33)" in run.stdout
    dev_text, train_text = _table(work / "data" / "dev" / "text"), _table(work / "data" / "train" / "text")
    assert len(dev_text) == 8 and len(train_text) == 32 and not set(dev_text) & set(train_text)
    assert all(t == t.upper() and "," not in t for t in train_text.values())
    sevens = sum(t.split().count(DROPPED) for t in train_text.values())
    assert sevens > 0 and f"words outside the lexicon, mapped to <UNK> (count): {DROPPED} ({sevens})" in run.stdout
    mono = json.loads((work / "exp" / "mono" / "report.json").read_text())
    assert mono["counts"]["words mapped to <UNK>"] == sevens and mono["counts"]["aligned"] == 32
    assert "perplexity" in run.stdout and (work / "data" / "local" / "lm" / "tg.arpa").is_file()

    # stage 3: alignments in word-position phones spell each transcript (<UNK> as SPN_S)
    lang = read_lang(work / "data" / "lang")
    names = {i: p for p, i in lang.phones.items()}
    prons = lang.pronunciations()
    tm = read_transition_model(work / "exp" / "mono" / "final.mdl")
    for ali_dir, prep in (("mono_ali", "train"), ("mono_ali_dev", "dev")):
        frames = {u: int(n) for u, n in _table(work / "prep" / prep / "utt2num_frames").items()}
        text = _table(work / "data" / prep / "text")
        labels = {lab.utt: lab.values for lab in read_alignments(work / "exp" / ali_dir)}
        assert set(labels) == set(frames)
        for utt, tids in labels.items():
            phones = [names[p] for p, _, _ in tm.phone_segments(tids) if not names[p].startswith("SIL")]
            expected = [w if w in prons else "<UNK>" for w in text[utt].split()]
            assert _spells(phones, expected, prons), (utt, phones, expected)
        pdfs = dict(kaldiio.load_scp(str(work / "prep" / prep / "pdf.scp")))  # stage 4
        assert all(len(v) == frames[u] and v.max() < tm.num_pdfs for u, v in pdfs.items()) and set(pdfs) == set(labels)
    # stages 5-7: two models alike but for --bn; log-likelihoods of every test frame; a test WER per model
    test_frames = {u: int(n) for u, n in _table(work / "prep" / "test" / "utt2num_frames").items()}
    configs = {}
    for exp, bn in (("blstm", "none"), ("blstm_bn_seq", "sequence")):
        configs[exp] = json.loads((work / "exp" / exp / "config.json").read_text())
        assert configs[exp]["bn"] == bn and (work / "exp" / exp / "final.pt").is_file()
        loglikes = dict(kaldiio.load_scp(str(work / "exp" / exp / "forward_test" / "loglikes.scp")))
        assert {u: m.shape for u, m in loglikes.items()} == {u: (n, tm.num_pdfs) for u, n in test_frames.items()}
        assert (work / "exp" / exp / "decode_test_tg" / "wer").read_text().startswith("%WER")
    assert {k: v for k, v in configs["blstm"].items() if k not in ("bn", "exp_dir")} == {
        k: v for k, v in configs["blstm_bn_seq"].items() if k not in ("bn", "exp_dir")}
    # stage 8: curves and a table row per model
    assert (work / "exp" / "learning_curves.png").stat().st_size > 0
    rows = (work / "exp" / "results.md").read_text().splitlines()
    assert [r.split("|")[1].strip() for r in rows[2:] if r.startswith("|")] == ["none", "sequence"]
    assert any("P(" in r for r in rows)  # the bootstrap comparison below the table

    again = subprocess.run([*cmd, "--stage", "3", "--stop-stage", "7"], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    # nothing redone: mono, 2 ali dirs, GMM decode, 2 networks, 2 x 2 forwards, 2 test decodes
    assert again.stdout.count("skipping") == 12, again.stdout
    other = subprocess.run([*cmd[:-2], "--case", "lower", "--dir", str(work), "--stop-stage", "1"],
                           capture_output=True, text=True, env=env)
    assert other.returncode == 1 and "made with other options" in other.stderr, other.stderr
    # --targets nnet: the sequence-BN network realigns train and dev (steps/nnet/align.sh), targets joined
    nnet = subprocess.run([*cmd, "--targets", "nnet", "--stage", "4", "--stop-stage", "4"], capture_output=True,
                          text=True, env=env)
    assert nnet.returncode == 0, nnet.stdout[-3000:] + nnet.stderr[-3000:]
    for prep, ali_dir, share in (("train", "nnet_ali", 0.8), ("dev", "nnet_ali_dev", 0.5)):
        labels = {lab.utt for lab in read_alignments(work / "exp" / ali_dir)}
        skipped = [u for utts in json.loads((work / "exp" / ali_dir / "report.json").read_text())["skipped"].values()
                   for u in utts]
        utts = _table(work / "data" / prep / "text")
        assert sorted([*labels, *skipped]) == sorted(utts)  # every utterance aligned or named
        assert len(labels) >= share * len(utts)  # 32 of 32 and 6 of 8 measured (a weak network, unseen dev)
        assert set(dict(kaldiio.load_scp(str(work / "prep" / f"{prep}_nnali" / "pdf.scp")))) == labels
    # another seed realigns with its own network into its own dirs: seed 0's targets stay as they are
    seed0 = (work / "prep" / "train_nnali" / "pdf.scp").read_bytes()
    for stages in (["--stage", "6", "--stop-stage", "6"], ["--targets", "nnet", "--stage", "4", "--stop-stage", "4"]):
        seed1 = subprocess.run([*cmd, "--seed", "1", *stages], capture_output=True, text=True, env=env)
        assert seed1.returncode == 0, seed1.stdout[-3000:] + seed1.stderr[-3000:]
    labels = {lab.utt for lab in read_alignments(work / "exp" / "nnet_ali_s1")}
    assert labels and set(dict(kaldiio.load_scp(str(work / "prep" / "train_nnali_s1" / "pdf.scp")))) == labels
    assert (work / "prep" / "train_nnali" / "pdf.scp").read_bytes() == seed0
    # --ensemble: seeds 0 and 1 decoded as one system (their frame-by-frame mean), a row of stage 8's table each
    seed1 = subprocess.run([*cmd, "--seed", "1", "--stage", "5", "--stop-stage", "7"], capture_output=True, text=True,
                           env=env)
    assert seed1.returncode == 0, seed1.stdout[-3000:] + seed1.stderr[-3000:]
    ens = subprocess.run([*cmd, "--ensemble", "0,1", "--stage", "7"], capture_output=True, text=True, env=env)
    assert ens.returncode == 0, ens.stdout[-3000:] + ens.stderr[-3000:]
    for kind in ("blstm", "blstm_bn_seq"):
        out = work / "exp" / f"{kind}_ens0_1"
        assert (out / "members").read_text().split() == [f"exp/{kind}", f"exp/{kind}_s1"]
        notes = json.loads((out / "decode_test_tg" / "report.json").read_text())["notes"]
        assert any(f"mean of 2 sources: exp/{kind}/forward_test/loglikes.scp, exp/{kind}_s1/" in n for n in notes)
        assert (out / "decode_test_tg" / "wer").read_text().startswith("%WER")
    rows = [r.split("|") for r in (work / "exp" / "results.md").read_text().splitlines() if r.startswith("| ")]
    assert [(r[1].strip(), r[2].strip()) for r in rows if "ensemble" in r[1]] == [("none ensemble", "0+1"),
                                                                                   ("sequence ensemble", "0+1")]
    for bad, message in (("0", "give two or more seeds"), ("0,5", "exp/blstm_s5 has no forward outputs")):
        failed = subprocess.run([*cmd, "--ensemble", bad, "--stage", "7"], capture_output=True, text=True, env=env)
        assert failed.returncode == 1 and message in failed.stderr, failed.stderr[-2000:]
    # --mmi: the sequence-BN network's denominator lattices of train, MMI from it, decoded and reported
    mmi = subprocess.run([*cmd, "--mmi", "--stage", "6"], capture_output=True, text=True, env=env)
    assert mmi.returncode == 0, mmi.stdout[-3000:] + mmi.stderr[-3000:]
    assert "exp/blstm_bn_seq/.done exists - skipping" in mmi.stdout  # the CE network is not trained again
    config = json.loads((work / "exp" / "blstm_bn_seq_mmi" / "config.json").read_text())
    assert (config["criterion"], config["init"], config["denlats"]) == ("mmi", "exp/blstm_bn_seq", "exp/denlats/lat.scp")
    assert len(LatticeTable(work / "exp" / "denlats" / "lat.scp")) == len(train_text)
    assert any("mmi" in json.loads(line) for line in (work / "exp" / "blstm_bn_seq_mmi" / "metrics.jsonl").open())
    assert (work / "exp" / "blstm_bn_seq_mmi" / "decode_test_tg" / "wer").read_text().startswith("%WER")
    report = (work / "exp" / "results.md").read_text()
    assert "| sequence+MMI | 0 |" in report and "P(sequence+MMI better than sequence)" in report
    assert "P(none better than sequence+MMI)" not in report


def _spells(phones: list[str], words: list[str], prons: dict[str, list[list[str]]]) -> bool:
    """Whether `phones` is the concatenation of one pronunciation of each word in turn."""
    if not words:
        return not phones
    return any(phones[: len(p)] == p and _spells(phones[len(p):], words[1:], prons) for p in prons[words[0]])


@pytest.mark.slow
def test_any_recipe_climbs_the_gmm_ladder(tmp_path: Path) -> None:
    """--gmm sat: stage 3 trains mono → deltas → LDA+MLLT → SAT (each rung from the last one's alignments, SAT's
    aligned with fMLLR) on position-dependent phones, then decodes dev and test with it (decode-fmllr); stage 4's
    targets are the SAT system's pdfs."""
    train, test, dict_dir = make_corpus(tmp_path)
    work = tmp_path / "work"
    cmd = ["bash", str(RECIPE), "--fast", "--gmm", "sat", "--train", str(train), "--test", str(test), "--dict",
           str(dict_dir), "--dev-speakers", "8", "--case", "upper", "--strip-punctuation", "--nj", "1", "--dir",
           str(work), "--stop-stage", "4", "--cache"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    exp = work / "exp"
    for rung in ("tri1", "tri2b", "tri3b"):
        assert json.loads((exp / rung / "report.json").read_text())["counts"]["aligned"] == 32
        for ali in (f"{rung}_ali", f"{rung}_ali_dev"):
            assert len(list(read_alignments(exp / ali))) == (32 if ali.endswith("_ali") else 8)
    assert (exp / "tri2b" / "final.mat").is_file() and (exp / "tri3b_ali" / "trans.1").is_file()
    sat = read_transition_model(exp / "tri3b" / "final.mdl")
    targets = dict(kaldiio.load_scp(str(work / "prep" / "train" / "pdf.scp")))
    alis = {labels.utt: labels.values for labels in read_alignments(exp / "tri3b_ali")}
    assert len(targets) == 32 and all((targets[u] == sat.to_pdfs(alis[u])).all() for u in targets)
    assert (exp / "tri3b" / "decode_test_tg" / "trans.1").is_file() and (exp / "tri3b" / "decode_dev_tg.si").is_dir()
    assert "%WER" in (exp / "tri3b" / "decode_test_tg" / "wer").read_text()
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert rerun.returncode == 0 and "exp/tri3b/.done exists - skipping training" in rerun.stdout
    assert "exp/tri3b/decode_test_tg/.done exists - skipping the SAT decode" in rerun.stdout
    fmllr = subprocess.run([*cmd[:-3], "--stop-stage", "7", "--cache", "--stage", "4", "--input", "fmllr"],
                           capture_output=True, text=True, env=env)
    assert fmllr.returncode == 0, fmllr.stdout[-3000:] + fmllr.stderr[-3000:]
    for name in ("train_fmllr", "dev_fmllr", "dev_fmllr_decode", "test_fmllr_decode"):  # fbank's utterances
        prep, fbank = work / "prep" / name, work / "prep" / name.split("_")[0]
        assert json.loads((prep / "pipeline.json").read_text())["input"].startswith("fmllr ")
        assert _table(prep / "utt2num_frames") == _table(fbank / "utt2num_frames")
        assert (prep / "pdf.scp").is_file() == (not name.endswith("_decode"))
    for model in ("blstm_fmllr", "blstm_bn_seq_fmllr"):
        assert "%WER" in (exp / model / "decode_test_tg" / "wer").read_text()
    # --speed-perturb: train three times (0.9, 1.0, 1.1), each copy aligned by the SAT system, its fMLLR features
    # with each frame's fbank appended (--input fmllr-fbank)
    speed = subprocess.run([*cmd[:-3], "--stop-stage", "6", "--cache", "--stage", "4", "--input", "fmllr-fbank",
                            "--speed-perturb"], capture_output=True, text=True, env=env)
    assert speed.returncode == 0, speed.stdout[-3000:] + speed.stderr[-3000:]
    utts = set(_table(work / "data" / "train" / "utt2spk"))
    copies = {f"{prefix}{u}" for u in utts for prefix in ("", "sp0.9-", "sp1.1-")}
    assert set(_table(work / "data" / "train_sp" / "utt2spk")) == copies
    aligned = {lab.utt for lab in read_alignments(exp / "tri3b_ali_sp")}  # the --fast SAT system misses a few
    skipped = json.loads((exp / "tri3b_ali_sp" / "report.json").read_text())["skipped"]
    assert aligned <= copies and len(aligned) >= 0.9 * len(copies)
    assert sorted(copies - aligned) == sorted(skipped.get("no alignment within the retry beam", []))
    assert set(dict(kaldiio.load_scp(str(work / "prep" / "train_sp_fmfb" / "pdf.scp")))) == aligned
    for name in ("train_sp_fmfb", "train_fmfb", "dev_fmfb", "dev_fmfb_decode", "test_fmfb_decode"):
        pipeline = json.loads((work / "prep" / name / "pipeline.json").read_text())
        assert pipeline["input"].startswith("fmllr+fbank ") and pipeline["input_dim"] == 80, name
    assert (exp / "blstm_fmfb_sp" / "final.pt").is_file()
    # --speed-perturb --targets nnet: the speed-perturbed sequence-BN network realigns the copies and dev
    sp_nnet = subprocess.run([*cmd[:-3], "--stop-stage", "5", "--cache", "--stage", "4", "--input", "fmllr-fbank",
                              "--speed-perturb", "--targets", "nnet"], capture_output=True, text=True, env=env)
    assert sp_nnet.returncode == 0, sp_nnet.stdout[-3000:] + sp_nnet.stderr[-3000:]
    for prep, ali_dir, source, share in (("train_sp_fmfb_nnali", "nnet_ali_fmfb_sp", "train_sp_fmfb", 0.8),
                                         ("dev_fmfb_nnali_sp", "nnet_ali_fmfb_sp_dev", "dev_fmfb", 0.5)):
        labels = {lab.utt: lab.values for lab in read_alignments(exp / ali_dir)}
        targets = dict(kaldiio.load_scp(str(work / "prep" / prep / "pdf.scp")))
        assert labels and set(targets) == set(labels) and all((targets[u] == sat.to_pdfs(labels[u])).all()
                                                              for u in targets)
        assert len(labels) >= share * len(_table(work / "prep" / source / "utt2num_frames"))  # a --fast network
    assert any(u.startswith("sp0.9-") for u in _table(work / "prep" / "train_sp_fmfb_nnali" / "utt2num_frames"))
    assert (exp / "blstm_bn_seq_fmfb_sp" / "forward_train_sp_fmfb" / "loglikes.scp").is_file()
    config = json.loads((exp / "blstm_fmfb_nnali_sp" / "config.json").read_text())
    assert (config["data"], config["dev"]) == ("prep/train_sp_fmfb_nnali", "prep/dev_fmfb_nnali_sp")
    # --targets nnet with fMLLR input: the fMLLR sequence-BN network realigns; same features, its targets joined
    nnet = subprocess.run([*cmd[:-3], "--stop-stage", "6", "--cache", "--stage", "4", "--input", "fmllr", "--targets",
                           "nnet"], capture_output=True, text=True, env=env)
    assert nnet.returncode == 0, nnet.stdout[-3000:] + nnet.stderr[-3000:]
    for set_, ali_dir in (("train", "nnet_ali_fmllr"), ("dev", "nnet_ali_fmllr_dev")):
        labels = {lab.utt: lab.values for lab in read_alignments(exp / ali_dir)}
        prep, before = work / "prep" / f"{set_}_fmllr_nnali", work / "prep" / f"{set_}_fmllr"
        targets = dict(kaldiio.load_scp(str(prep / "pdf.scp")))
        assert labels and set(targets) == set(labels)
        assert all((targets[u] == sat.to_pdfs(labels[u])).all() for u in targets)
        same = dict(kaldiio.load_scp(str(before / "feats.scp")))
        feats = dict(kaldiio.load_scp(str(prep / "feats.scp")))
        assert feats.keys() == same.keys() and all(np.array_equal(m, same[u]) for u, m in feats.items())
    for model in ("blstm_fmllr_nnali", "blstm_bn_seq_fmllr_nnali"):
        assert (exp / model / "final.pt").is_file()
