"""WER/SER exactly as Kaldi's compute-wer (cross-checked against kaldialign, k2-fsa's port of Kaldi's
edit distance), score.sh's best-of-LMWT, Kaldi's per_utt / per_spk details, frame CE / FER, and
compute-wer-bootci's bootstrap (statistically against the real binary, exactly by hand on a tiny case)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from asr_bn.errors import AsrBnError, UsageError
from asr_bn.score import (
    ErrorCounts,
    bootstrap_wer,
    read_per_utt,
    FrameScores,
    align_words,
    frame_scores,
    hyp_files,
    read_text,
    score_hyps,
    score_wer,
    write_details,
)
from asr_bn_cli.main import build_app
from conftest import run_kaldi

app = build_app()

runner = CliRunner()


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_counts_match_kaldi_edit_distance(rng: np.random.Generator) -> None:
    kaldialign = pytest.importorskip("kaldialign", reason="kaldialign (k2-fsa) is the reference implementation")
    vocab = ["a", "b", "c", "d"]  # a small vocabulary makes ties between alignments frequent
    for _ in range(2000):
        ref = list(rng.choice(vocab, rng.integers(0, 9)))
        hyp = list(rng.choice(vocab, rng.integers(0, 9)))
        ali = align_words(ref, hyp)
        expected = kaldialign.edit_distance(ref, hyp)
        assert (ali.counts.ins, ali.counts.dels, ali.counts.subs) == (expected["ins"], expected["del"], expected["sub"])
        assert [r for r, _ in ali.pairs if r is not None] == ref
        assert [h for _, h in ali.pairs if h is not None] == hyp
        assert ali.ops().count("S") == ali.counts.subs


def test_alignment_by_hand() -> None:
    ali = align_words("the cat sat on the mat".split(), "the bat sat the mat too".split())
    assert ali.ops() == ["C", "S", "C", "D", "C", "C", "I"]
    assert (ali.counts.subs, ali.counts.dels, ali.counts.ins, ali.counts.words) == (1, 1, 1, 6)
    assert align_words([], []).counts.errors == 0
    assert align_words([], ["x"]).ops() == ["I"]
    assert align_words(["x"], []).ops() == ["D"]


def test_kaldi_line_format() -> None:
    counts = ErrorCounts(words=8234, ins=61, dels=75, subs=362, sentences=503, sentence_errors=200)
    assert counts.wer_line() == "%WER 6.05 [ 498 / 8234, 61 ins, 75 del, 362 sub ]"
    assert counts.ser_line() == "%SER 39.76 [ 200 / 503 ]"


def test_modes_and_ignored_words(tmp_path: Path) -> None:
    ref = {"u1": "A B <NOISE> C".split(), "u2": "D E".split(), "u3": "F".split()}
    hyp = _write(tmp_path / "hyp", ["u1 A B C <SIL>", "u2 D X", "u4 Z"])
    all_ = score_wer(ref, hyp)  # u3 missing: counts as empty; u4 has no reference: not scored
    assert all_.missing == ["u3"] and all_.extra == ["u4"]
    # u1: Kaldi's tie-breaking prefers deleting <NOISE> and inserting <SIL> to two substitutions
    assert (all_.counts.words, all_.counts.subs, all_.counts.ins, all_.counts.dels) == (7, 1, 1, 2)
    ignored = score_wer(ref, hyp, ignore=["<NOISE>", "<SIL>"])
    assert (ignored.counts.words, ignored.counts.errors, ignored.counts.sentence_errors) == (6, 2, 2)
    present = score_wer(ref, hyp, ignore=["<NOISE>", "<SIL>"], mode="present")
    assert (present.counts.sentences, present.counts.words) == (2, 5)
    assert present.lines()[2] == "Scored 2 sentences, 1 not present in hyp."
    # as compute-wer (tests/test_kaldi_formats.py runs it): a missing hypothesis marks %WER [PARTIAL], in any mode
    assert present.lines()[0] == f"%WER 20.00 [ 1 / 5, 0 ins, 0 del, 1 sub ] [PARTIAL] {hyp}"
    assert all_.wer_line().endswith("sub ] [PARTIAL]") and all_.wer_line() in all_.lines()[0]
    with pytest.raises(AsrBnError, match="no hypothesis for 1 reference utterance"):
        score_wer(ref, hyp, mode="strict")
    with pytest.raises(UsageError, match="--mode"):
        score_wer(ref, hyp, mode="some")


def test_text_errors(tmp_path: Path) -> None:
    with pytest.raises(AsrBnError, match=r"nope is missing; give a Kaldi `text` file of transcripts"):
        read_text(tmp_path / "nope")
    with pytest.raises(AsrBnError, match="appears twice"):
        read_text(_write(tmp_path / "dup", ["u1 a", "u1 b"]))
    assert read_text(_write(tmp_path / "ids", ["u1", "u2  a  b "])) == {"u1": [], "u2": ["a", "b"]}
    empty_ref = {"u1": []}
    with pytest.raises(AsrBnError, match="no reference words"):
        score_wer(empty_ref, _write(tmp_path / "h", ["u1 a"]))


def test_best_of_several_lm_weights(tmp_path: Path) -> None:
    _write(tmp_path / "text", ["u1 A B C", "u2 D E"])
    dec = tmp_path / "decode"
    dec.mkdir()
    _write(dec / "hyp_9", ["u1 A B", "u2 D E"])
    _write(dec / "hyp_10", ["u1 A B C", "u2 D E"])
    _write(dec / "hyp_11", ["u1 A", "u2 D"])
    _write(dec / "text", ["u1 X", "u2 Y"])
    assert [p.name for p in hyp_files([dec])] == ["hyp_9", "hyp_10", "hyp_11"]  # numeric order; text ignored
    results, best = score_hyps(tmp_path, [dec])  # a data dir holding `text` works as the reference
    assert [r.counts.errors for r in results] == [1, 0, 3]
    assert best.hyp_path.name == "hyp_10"
    for name in ("hyp_9", "hyp_10", "hyp_11"):
        (dec / name).unlink()
    assert hyp_files([dec]) == [dec / "text"]  # a decode without an LM-weight sweep
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsrBnError, match="no hyp_"):
        hyp_files([tmp_path / "empty"])


def test_details_files(tmp_path: Path) -> None:
    ref = {"s1-u1": "THE CAT SAT".split(), "s2-u1": "A B".split()}
    hyp = _write(tmp_path / "hyp", ["s1-u1 THE SAT DOWN", "s2-u1 A B"])
    result = score_wer(ref, hyp)
    utt2spk = _write(tmp_path / "utt2spk", ["s1-u1 s1", "s2-u1 s2"])
    per_utt, per_spk = write_details(result, tmp_path / "details", utt2spk)
    lines = per_utt.read_text().splitlines()
    assert lines[:4] == [
        "s1-u1 ref  THE CAT SAT ***",
        "s1-u1 hyp  THE *** SAT DOWN",
        "s1-u1 op   C   D   C   I",
        "s1-u1 #csid 2 0 1 1",
    ]
    table = per_spk.read_text().splitlines()
    assert table[0].split() == ["SPEAKER", "id", "#SENT", "#WORD", "Corr", "Sub", "Ins", "Del", "Err", "S.Err"]
    assert table[1].split() == ["s1", "raw", "1", "3", "2", "0", "1", "1", "2", "1"]
    assert table[2].split() == ["s1", "sys", "1", "3", "66.67", "0.00", "33.33", "33.33", "66.67", "100.00"]
    assert table[-1].split()[:4] == ["SUM", "sys", "2", "5"]


def test_frame_scores_against_torch(rng: np.random.Generator) -> None:
    B, T, S = 3, 7, 5
    logits = torch.from_numpy(rng.normal(size=(B, T, S)).astype(np.float32))
    log_probs = logits.log_softmax(-1)
    targets = torch.from_numpy(rng.integers(0, S, size=(B, T)))
    lengths = torch.tensor([7, 4, 1])
    targets[1, 4:] = -1  # padding value a collate might use; masked by length anyway
    targets[2, 1:] = 99  # out-of-range padding beyond the length must not matter
    scores = frame_scores(log_probs, targets, lengths)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    ce = torch.nn.functional.nll_loss(log_probs[mask], targets[mask], reduction="sum")
    assert scores.frames == 12
    assert scores.ce_sum == pytest.approx(float(ce), rel=1e-6)
    assert scores.errors == int((log_probs.argmax(-1)[mask] != targets[mask]).sum())
    total = scores + FrameScores(1.0, 1, 1)
    assert total.frames == 13 and total.ce == pytest.approx((scores.ce_sum + 1.0) / 13)
    assert np.isnan(FrameScores().ce) and np.isnan(FrameScores().fer)


def test_frame_scores_by_hand() -> None:
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]])
    scores = frame_scores(probs.log(), torch.tensor([[0, 1, 2]]), torch.tensor([2]))
    assert scores.frames == 2 and scores.errors == 1  # frame 1 predicts pdf 2, target 1; frame 2 is padding
    assert scores.ce == pytest.approx(-(np.log(0.7) + np.log(0.1)) / 2)
    assert scores.fer == pytest.approx(0.5)
    with pytest.raises(ValueError, match="do not fit"):
        frame_scores(probs.log(), torch.tensor([0, 1, 2]), torch.tensor([2]))
    with pytest.raises(ValueError, match="target pdf-id 3"):
        frame_scores(probs.log(), torch.tensor([[3, 1, 2]]), torch.tensor([3]))


def test_cli_wer(tmp_path: Path) -> None:
    ref = _write(tmp_path / "ref", ["u1 A B C", "u2 D E"])
    hyp = _write(tmp_path / "hyp", ["u1 A B", "u2 D E F"])
    result = runner.invoke(app, ["score", "wer", str(ref), str(hyp), "--details", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert f"%WER 40.00 [ 2 / 5, 1 ins, 1 del, 0 sub ] {hyp}" in result.output
    assert "%SER 100.00 [ 2 / 2 ]" in result.output
    assert (tmp_path / "d" / "per_utt").is_file() and (tmp_path / "d" / "per_spk").is_file()

    two = runner.invoke(app, ["score", "wer", str(ref), str(hyp), str(ref)])
    assert two.exit_code == 0 and f"best: %WER 0.00 [ 0 / 5, 0 ins, 0 del, 0 sub ] {ref}" in two.output

    missing = runner.invoke(app, ["score", "wer", str(ref), str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "no such file or directory" in missing.output
    bad_mode = runner.invoke(app, ["score", "wer", str(ref), str(hyp), "--mode", "x"])
    assert bad_mode.exit_code == 2 and "--mode" in bad_mode.output


def test_cli_wer_data_dir_ignore_and_per_speaker(tmp_path: Path) -> None:
    """`asr-bn score wer DATA_DIR DECODE_DIR --ignore '<NOISE>' --details D`: hand-counted %WER of each hyp_LMWT,
    the best one's per_spk rows from the data dir's utt2spk (speakers interleaved, so not guessed from ids)."""
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "text", ["u1 A B <NOISE> C", "u2 D E", "u3 F G H", "u4 I <NOISE>"])
    _write(data / "utt2spk", ["u1 alice", "u2 bob", "u3 alice", "u4 bob"])
    dec = tmp_path / "decode"
    dec.mkdir()
    _write(dec / "hyp_9", ["u1 X Y C", "u2 D", "u3 F G H", "u4"])  # 2 sub; 1 del; -; 1 del
    _write(dec / "hyp_10", ["u1 A B C <NOISE>", "u2 D X", "u3 F H", "u4 I J"])  # -; 1 sub; 1 del; 1 ins
    details = tmp_path / "details"
    result = runner.invoke(app, ["score", "wer", str(data), str(dec), "--ignore", "<NOISE>", "--details", str(details)])
    assert result.exit_code == 0, result.output
    assert f"%WER 44.44 [ 4 / 9, 0 ins, 2 del, 2 sub ] {dec / 'hyp_9'}" in result.output
    assert f"%WER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ] {dec / 'hyp_10'}" in result.output
    assert f"best: %WER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ] {dec / 'hyp_10'}" in result.output
    # the sweep: one line per LM weight, then the best's %SER and count lines (once)
    scores = [line for line in result.output.splitlines() if not line.startswith("wrote ")]
    assert len(scores) == 5 and result.output.count("%SER 75.00 [ 3 / 4 ]") == 1
    assert scores[-1] == "Scored 4 sentences, 0 not present in hyp."
    assert (details / "per_utt").read_text().splitlines()[:2] == ["u1 ref  A B C", "u1 hyp  A B C"]  # <NOISE> gone
    # Kaldi's per_spk (utils/scoring/wer_per_spk_details.pl): raw counts then percentages of #WORD (S.Err of #SENT)
    rows = [line.split() for line in (details / "per_spk").read_text().splitlines()]
    assert rows == [
        ["SPEAKER", "id", "#SENT", "#WORD", "Corr", "Sub", "Ins", "Del", "Err", "S.Err"],
        ["alice", "raw", "2", "6", "5", "0", "0", "1", "1", "1"],
        ["alice", "sys", "2", "6", "83.33", "0.00", "0.00", "16.67", "16.67", "50.00"],
        ["bob", "raw", "2", "3", "2", "1", "1", "0", "2", "2"],
        ["bob", "sys", "2", "3", "66.67", "33.33", "33.33", "0.00", "66.67", "100.00"],
        ["SUM", "raw", "4", "9", "7", "1", "1", "1", "3", "3"],
        ["SUM", "sys", "4", "9", "77.78", "11.11", "11.11", "11.11", "33.33", "75.00"],
    ]
    plain = runner.invoke(app, ["score", "wer", str(data), str(dec / "hyp_10")])  # <NOISE> scored: 2 more words
    assert plain.exit_code == 0 and "%WER 45.45 [ 5 / 11," in plain.output


# --------------------------------------------------------------------------------------------------------------
# compute-wer-bootci


def _noisy_corpus(tmp_path: Path, rng: np.random.Generator, rates: tuple[float, float]) -> tuple[Path, Path, Path]:
    """A reference of 300 utterances and two hypothesis files with about `rates` word errors (the second misses one
    utterance: an empty hypothesis in --mode all)."""
    vocab = list("abcdef")
    refs, hyps = [], ([], [])
    for i in range(300):
        ref = list(rng.choice(vocab, rng.integers(1, 10)))
        refs.append(f"u{i:03d} " + " ".join(ref))
        for rate, out in zip(rates, hyps):
            words = [str(rng.choice(vocab)) if rng.random() < rate else w for w in ref if rng.random() >= rate / 2]
            if i != 7 or out is hyps[0]:
                out.append(f"u{i:03d} " + " ".join(words))
    return _write(tmp_path / "ref", refs), _write(tmp_path / "h1", hyps[0]), _write(tmp_path / "h2", hyps[1])


def _bootci_numbers(lines: list[str]) -> list[float]:
    """Set1 mean, low, high, Set2 mean, low, high, P(Set2 better) in percent, from compute-wer-bootci lines."""
    text = "\n".join(line for line in lines if line.startswith(("Set", "Probability")))
    return [float(x) for x in re.findall(r"-?\d+\.\d\d", text)]


def test_bootstrap_agrees_with_kaldi_compute_wer_bootci(
    tmp_path: Path, rng: np.random.Generator, kaldi_bundle: Path
) -> None:
    ref, h1, h2 = _noisy_corpus(tmp_path, rng, (0.12, 0.11))
    reps = "20000"
    kaldi = run_kaldi(kaldi_bundle, "compute-wer-bootci", "--mode=all", f"--replications={reps}",
                      f"ark:{ref}", f"ark:{h1}", f"ark:{h2}").splitlines()  # fmt: skip
    ours = runner.invoke(app, ["score", "wer", str(ref), str(h1), str(h2), "--bootstrap", "--replications", reps])
    assert ours.exit_code == 0, ours.output
    lines = ours.output.splitlines()
    assert [re.sub(r"[\d.]+", "N", line) for line in lines[-3:]] == [re.sub(r"[\d.]+", "N", line) for line in kaldi]
    k, o = _bootci_numbers(kaldi), _bootci_numbers(lines)
    assert len(k) == len(o) == 7, (kaldi, lines)
    # Kaldi draws with its own RNG: with 20000 replications each bound's Monte-Carlo error is below 0.03 points
    # (σ_WER ≈ 1 %, /√20000 and /√40000) and that of P about 0.35 points (√(p(1-p)/20000)); allow 4-5 σ of
    # both
    assert max(abs(a - b) for a, b in zip(k[:6], o[:6])) < 0.15, (kaldi, lines)
    assert 5 < k[6] < 95 and abs(k[6] - o[6]) < 2.5, (kaldi, lines)  # a close comparison, not a certain one
    # the deterministic part, exactly: each point WER is compute-wer's
    for hyp in (h1, h2):
        expected = run_kaldi(kaldi_bundle, "compute-wer", "--mode=all", f"ark:{ref}", f"ark:{hyp}")
        assert f"{expected.splitlines()[0]} {hyp}" in lines  # h2 misses one: "[PARTIAL]" too


def test_bootstrap_by_hand_and_seeded() -> None:
    one, zero = ErrorCounts(words=1, subs=1, sentences=1), ErrorCounts(words=1, sentences=1)
    a, b = {"u1": one, "u2": zero}, {"u1": zero, "u2": zero}
    boot = bootstrap_wer([a, b], replications=40000, seed=3)
    # a's WER in a draw of 2 is k/2, k ~ Binomial(2, 1/2): mean 50 %, σ 35.36 %; b never errs, so b is better
    # whenever u1 is drawn: P = 1 - 1/4
    assert boot.intervals[0].mean == pytest.approx(50, abs=0.5)
    assert boot.intervals[0].high - boot.intervals[0].mean == pytest.approx(1.96 * 35.355, abs=0.5)
    assert boot.intervals[1] == type(boot.intervals[1])(0.0, 0.0, 0.0)
    assert boot.p_improve == pytest.approx(0.75, abs=0.01) and boot.p_worse == 0.0
    assert boot.lines()[2].startswith("Probability of Set2 improving Set1: 7")
    assert bootstrap_wer([a, b], 1000, seed=3) == bootstrap_wer([a, b], 1000, seed=3)
    assert bootstrap_wer([a, b], 1000, seed=3) != bootstrap_wer([a, b], 1000, seed=4)
    same = bootstrap_wer([a, a], 1000)
    assert same.p_improve == same.p_worse == 0.0 and len(same.lines()) == 3  # ties improve nothing
    assert len(bootstrap_wer([a], 10).lines()) == 1
    with pytest.raises(AsrBnError, match="different references"):
        bootstrap_wer([a, {"u1": ErrorCounts(words=2, sentences=1), "u2": zero}])
    with pytest.raises(UsageError, match="replications"):
        bootstrap_wer([a], replications=0)
    with pytest.raises(UsageError, match="--seed -1"):
        bootstrap_wer([a], seed=-1)


def test_per_utt_round_trip_and_bootstrap_cli_errors(tmp_path: Path) -> None:
    ref = _write(tmp_path / "ref", ["u1 A B C", "u2 D E", "u3 F"])
    hyp = _write(tmp_path / "hyp", ["u1 A X C Y", "u2 E", "u3 F"])
    result = score_wer(read_text(ref), hyp)
    write_details(result, tmp_path / "details")
    assert read_per_utt(tmp_path / "details" / "per_utt") == result.per_utt()
    _write(tmp_path / "bad", ["u1 #csid 1 2 3"])
    with pytest.raises(AsrBnError, match="bad:1: expected `utt-id #csid C S I D`"):
        read_per_utt(tmp_path / "bad")
    three = runner.invoke(app, ["score", "wer", str(ref), str(hyp), str(hyp), str(hyp), "--bootstrap"])
    assert three.exit_code == 2 and "one or two systems" in three.output
    zero = runner.invoke(app, ["score", "wer", str(ref), str(hyp), "--bootstrap", "--replications", "0"])
    assert zero.exit_code == 2
