"""Issue 14 §1-2 across commands: a file where a directory is expected, an output file whose folder is missing, and
misleading messages each give exit 1/2 with exactly one `error:` line naming the path and the fix, never a
traceback; a run that fails before writing anything leaves no directory behind (one it did not create stays); and
`score wer --details` reads speakers with the data-dir reader of `asr-bn prep` (a reversed utt2spk)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_batching import make_prepared_dir
from test_train import error_line
from typer.testing import CliRunner

from asr_bn.batching import BucketingSampler
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.features import FbankConfig, FeaturePipeline
from asr_bn.io import OutputLock, atomic_path, read_matrix, write_ark_scp
from asr_bn.score import read_per_utt
from asr_bn.train import TrainConfig, train
from asr_bn_cli.main import build_app

app = build_app()

runner = CliRunner()


def cli(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def tree(root: Path) -> list[str]:
    """Every path under `root`, relative: the test's leftovers check."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model trained for one epoch on a synthetic prepared dir, and that dir."""
    root = tmp_path_factory.mktemp("model")
    data = make_prepared_dir(root / "data", [12, 20, 16, 9], seed=1)
    cfg = TrainConfig(str(data), str(data), str(root / "exp"), layers=1, units=4, epochs=1, batch_size=4,
                      num_workers=0, device="cpu", log_every=100)  # fmt: skip
    train(cfg)
    return root / "exp", data


# -- a file where a directory is expected --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["prep", "kaldi", "{data}", "{file}"], "OUT_DIR {file} is a file, not a directory"),
        (["prep", "kaldi", "{file}", "{new}"], "data dir {file} is a file, not a directory (expected a Kaldi data dir"),
        (["prep", "wsj", "{data}", "{file}/sub"], "OUT_DIR {file}/sub is inside {file}, which is a file"),
        (["train", "{prep}", "{prep}", "{file}"], "EXP_DIR {file} is a file, not a directory"),
        (["train", "{prep}", "{file}", "{new}"], "dev dir {file} is a file, not a directory (expected a prepared dir"),
        (["train", "{file}", "{prep}", "{new}"], "train dir {file} is a file, not a directory"),
        (["forward", "{new}", "{file}", "ark:{new}.ark"], "DATA_DIR {file} is a file, not a directory"),
        (["score", "frames", "{new}", "{file}"], "DATA_DIR {file} is a file, not a directory"),
        (["decode", "{new}", "{new}", "ark:{file}", "{file}"], "OUT_DIR {file} is a file, not a directory"),
        (["decode", "{file}", "{new}", "ark:{file}", "{new}"], "graph dir {file} is a file, not a directory"),
        (["decode", "{new}", "{new}", "ark:{data}", "{new}"], "log-likelihoods ark:{data}: {data} is a directory"),
        (["decode", "{new}", "{new}", "{new}.scp", "{new}"], "log-likelihoods scp:{new}.scp: {new}.scp does not exist"),
        (["mkgraph", "{new}", "{new}", "{file}"], "OUT_DIR {file} is a file, not a directory"),
        (["mkgraph", "{file}", "{new}", "{new}"], "lang dir {file} is a file, not a directory"),
        (["score", "wer", "{file}", "{file}", "--details", "{file}"], "--details {file} is a file, not a directory"),
    ],
)
def test_a_file_where_a_dir_is_expected_is_one_line(
    args: list[str], message: str, tmp_path: Path, model: tuple[Path, Path]
) -> None:
    """Was a NotADirectoryError / FileExistsError traceback (train's DEV, prep's and decode's OUT_DIR) or, for a
    data dir, "does not exist"."""
    file = tmp_path / "afile"
    file.write_text("utt1 A\n")
    names = {"file": file, "new": tmp_path / "new", "data": tmp_path, "prep": model[1]}
    code, out = cli(*[a.format(**names) for a in args])
    assert code == 2, out
    assert message.format(**names) in error_line(out)
    assert "Traceback" not in out and file.read_text() == "utt1 A\n" and tree(tmp_path) == ["afile"]


# -- output files need their folder; output dirs are made (and unmade when nothing was written) ------------------


def test_output_file_in_a_missing_folder_is_refused(model: tuple[Path, Path], tmp_path: Path) -> None:
    """`forward … ark:/nonexistent_dir/foo.ark` created the folder; Kaldi's binaries refuse (as `plot --out`)."""
    exp, data = model
    for wspecifier in (f"ark:{tmp_path}/gone/x.ark", f"ark,scp:{tmp_path}/x.ark,{tmp_path}/gone/x.scp"):
        code, out = cli("forward", exp, data, wspecifier, "--device", "cpu")
        assert code == 2 and f"its folder {tmp_path}/gone does not exist; create it first" in error_line(out)
    code, out = cli("forward", exp, data, f"ark:{tmp_path}", "--device", "cpu")
    assert code == 2 and f"wspecifier file {tmp_path} is a directory" in error_line(out)
    code, out = cli("plot", exp, "--out", tmp_path / "gone" / "curves.png")
    assert code == 2 and f"--out {tmp_path}/gone/curves.png: its folder" in error_line(out)
    assert tree(tmp_path) == []
    (tmp_path / "there").mkdir()  # the folder made first, as a recipe does: it works
    assert cli("forward", exp, data, f"ark,scp:{tmp_path}/there/x.ark,{tmp_path}/there/x.scp", "--device", "cpu")[0] == 0
    assert tree(tmp_path / "there") == ["x.ark", "x.scp"]


def test_a_failed_run_leaves_no_directory_it_made(yesno_root: Path, model: tuple[Path, Path], tmp_path: Path) -> None:
    """prep (yesno is 8 kHz, the default config 16 kHz), train (a missing pdf.scp) and decode (5 columns, not 11)
    fail after taking their output dir: the dirs they created, parents included, are gone; a dir that was there
    before (empty, or holding the user's file) stays as it was."""
    exp, data = model
    nodes = make_prepared_dir(tmp_path / "in" / "nopdf", [10, 12], seed=3)
    (nodes / "pdf.scp").unlink()
    write_ark_scp(tmp_path / "in" / "ll.ark", None, [("u1", np.zeros((3, 5), np.float32))])  # yesno has 11 pdfs
    before = tree(tmp_path)
    code, out = cli("prep", "kaldi", yesno_root / "data" / "test_yesno", tmp_path / "a" / "prep")
    assert code == 1 and "pass --sample-frequency 8000" in error_line(out)
    code, out = cli("train", nodes, data, tmp_path / "b" / "exp", "--device", "cpu", "--num-workers", "0")
    assert code == 1 and "pdf.scp is missing" in error_line(out)
    code, out = cli("decode", yesno_root / "exp/mono/graph", yesno_root / "exp/mono", f"ark:{tmp_path}/in/ll.ark",
                    tmp_path / "c" / "decode")  # fmt: skip
    assert code == 1 and "has log-likelihoods of shape (3, 5)" in error_line(out)
    assert tree(tmp_path) == before
    (tmp_path / "empty").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    for out_dir in ("empty", "mine"):
        assert cli("prep", "kaldi", yesno_root / "data" / "test_yesno", tmp_path / out_dir)[0] == 1
    assert tree(tmp_path) == sorted([*before, "empty", "mine", "mine/notes.txt"])


def test_alignments_without_their_model_are_refused_before_the_features(yesno_root: Path, tmp_path: Path) -> None:
    """An archive of transition-ids without --model was refused only after the features were computed and written."""
    ali = tmp_path / "ali.txt"
    ali.write_text("1_0_0_0_0_0_0_0 1 2 3\n")
    code, out = cli("prep", "kaldi", yesno_root / "data" / "test_yesno", tmp_path / "out", "--ali-dir", ali,
                    "--sample-frequency", "8000")  # fmt: skip
    line = error_line(out)
    assert code == 2 and f"{ali}: transition-id alignments need the final.mdl they were made with" in line
    assert "give --model, or --pdf-ids" in line and tree(tmp_path) == ["ali.txt"]


def test_output_lock_removes_only_the_empty_dirs_it_created(tmp_path: Path) -> None:
    with OutputLock(tmp_path / "a" / "b" / "c"):
        pass
    assert tree(tmp_path) == []  # nothing written: all three made by the lock, all three gone
    with OutputLock(tmp_path / "a" / "b"):
        (tmp_path / "a" / "b" / "done").write_text("x")
    assert tree(tmp_path) == ["a", "a/b", "a/b/done"]  # something written: kept
    with pytest.raises(RuntimeError):
        with OutputLock(tmp_path / "a" / "b" / "c" / "d"):
            raise RuntimeError  # a failed run that wrote nothing
    assert tree(tmp_path) == ["a", "a/b", "a/b/done"]  # its dirs removed, the existing ones kept


# -- messages that misled ------------------------------------------------------------------------------------------


def test_pipeline_mismatch_names_the_key_and_the_prep_option(model: tuple[Path, Path], tmp_path: Path) -> None:
    """Was "differs … in fbank (… --config matching it)" whatever differed."""
    exp, data = model
    ours = FeaturePipeline.load(data / "pipeline.json")
    other = tmp_path / "other"
    shutil.copytree(data, other)
    cases = [
        (FeaturePipeline(FbankConfig(num_mel_bins=5, dither=0.5), "speaker", False, 1),
         "in dither 0.5 (not 1.0); prepare it with `asr-bn prep … --dither 1.0` (or with a --config that has these)"),
        (FeaturePipeline(FbankConfig(num_mel_bins=5, sample_frequency=8000, snip_edges=False), "speaker", False, 1),
         "in sample_frequency 8000 (not 16000.0), snip_edges False (not True); prepare it with `asr-bn prep … "
         "--sample-frequency 16000.0 --snip-edges`"),
        (FeaturePipeline(ours.fbank, "utterance", True, 1),
         "in cmvn utterance (not speaker), norm_vars True (not False); prepare it with `asr-bn prep … --cmvn speaker` "
         "without --norm-vars"),
    ]  # fmt: skip
    for pipeline, expected in cases:
        pipeline.save(other / "pipeline.json")
        code, out = cli("forward", exp, other, f"ark:{tmp_path}/x.ark", "--device", "cpu")
        line = error_line(out)
        assert code == 1 and f"{other}/pipeline.json differs from the model's {exp}/pipeline.json {expected}" in line
        assert ("--config" in line) == (pipeline.fbank != ours.fbank)
        code, out = cli("train", data, other, tmp_path / "exp", "--device", "cpu", "--num-workers", "0")
        assert code == 1 and f"{other}/pipeline.json differs from {data}/pipeline.json {expected}" in error_line(out)
    assert not (tmp_path / "x.ark").exists() and not (tmp_path / "exp").exists()


def test_corrupt_wav_names_file_and_utterance_not_a_bytesio(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "bad.wav").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    (data / "wav.scp").write_text(f"u1 {data}/bad.wav\nu2 cat {data}/bad.wav |\n")
    (data / "utt2spk").write_text("u1 s\nu2 s\n")
    code, out = cli("prep", "kaldi", data, tmp_path / "out")
    line = error_line(out)
    assert code == 1 and f"utterance u1: {data}/bad.wav is not readable audio (libsndfile: Format not recognised)" in line
    assert "BytesIO" not in out and not (tmp_path / "out").exists()


def test_truncated_archive_says_where_it_ends(tmp_path: Path, yesno_root: Path) -> None:
    """Was "(AssertionError: )" for an archive cut before an utterance's header."""
    ark = tmp_path / "x.ark"
    mats = [("a", np.zeros((3, 11), np.float32)), ("b", np.zeros((4, 11), np.float32))]  # yesno's model: 11 pdfs
    write_ark_scp(ark, tmp_path / "x.scp", mats)
    full = ark.read_bytes()
    second = int((tmp_path / "x.scp").read_text().split()[-1].rsplit(":", 1)[1])
    ark.write_bytes(full[: second - 2])  # cut inside b's key: its header is gone
    with pytest.raises(AsrBnError, match=rf"x.ark has {second - 2} bytes, it ends before byte {second}\)"):
        read_matrix(f"{ark}:{second}", tmp_path / "x.scp", "b")
    ark.write_bytes(full[:-3])  # cut inside b's data (was kaldiio's "buffer size must be a multiple …")
    with pytest.raises(AsrBnError, match=rf"has {len(full) - 3} bytes, the matrix at byte {second} ends at byte {len(full)}"):
        read_matrix(f"{ark}:{second}", tmp_path / "x.scp", "b")
    ark.write_bytes(full[:second + 5] + b"\7" + full[second + 6 :])  # b's header: a size field of 7 bytes, not 4
    with pytest.raises(AsrBnError, match=rf"no Kaldi binary matrix header at {ark}:{second}\)"):
        read_matrix(f"{ark}:{second}", tmp_path / "x.scp", "b")
    ark.write_bytes(full[: second - 2])
    code, out = cli("decode", yesno_root / "exp/mono/graph", yesno_root / "exp/mono", f"scp:{tmp_path}/x.scp",
                    tmp_path / "dec")  # fmt: skip
    assert code == 1 and "AssertionError" not in out and f"it ends before byte {second}" in error_line(out)


def test_an_unreadable_input_is_not_reported_as_a_failed_write(model: tuple[Path, Path], tmp_path: Path) -> None:
    """A feats.scp that cannot be read (here a directory) was "could not write X.ark: Is a directory (free disk
    space …)": atomic_path took the input's OSError for its own."""
    exp, data = model
    other = tmp_path / "other"
    shutil.copytree(data, other)
    (other / "feats.scp").unlink()
    (other / "feats.scp").mkdir()
    code, out = cli("forward", exp, other, f"ark:{tmp_path}/x.ark", "--device", "cpu")
    line = error_line(out)
    assert code == 1 and f"cannot read {other}/feats.scp (IsADirectoryError" in line and "could not write" not in out
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "y"):
            raise PermissionError(13, "Permission denied", str(tmp_path / "input"))  # reading an input failed
    assert tree(tmp_path) == sorted(["other", *(f"other/{p.name}" for p in other.iterdir())])


def test_a_file_that_is_no_checkpoint_says_so(model: tuple[Path, Path]) -> None:
    """`config.json` given as the model printed PyTorch's paragraph about weights_only."""
    exp, data = model
    code, out = cli("forward", exp / "config.json", data, "ark:-", "--device", "cpu")
    line = error_line(out)
    assert code == 1 and f"{exp}/config.json is not an asr-bn model or checkpoint (not a PyTorch zip file)" in line
    assert "weights_only" not in out and "give a model dir of `asr-bn train` or its final.pt" in line


def test_library_batch_sizes_below_one_are_refused() -> None:
    """Was "--batch-size 0 is smaller than the number of processes 1" (a library caller gets no CLI range check)."""
    with pytest.raises(UsageError, match=r"^--batch-size 0: must be at least 1$"):
        BucketingSampler(np.array([3, 4]), batch_size=0)
    with pytest.raises(UsageError, match=r"^--max-frames -5: must be at least 1$"):
        BucketingSampler(np.array([3, 4]), batch_size=None, max_frames=-5)


def test_train_without_targets_says_to_prepare_with_alignments(model: tuple[Path, Path], tmp_path: Path) -> None:
    """Was "pdf.scp is missing (a prepared data dir from `asr-bn prep` has it)" for a dir prep made without them."""
    _, data = model
    nopdf = make_prepared_dir(tmp_path / "nopdf", [10, 12], seed=3)
    (nopdf / "pdf.scp").unlink()
    code, out = cli("train", nopdf, data, tmp_path / "exp", "--device", "cpu", "--num-workers", "0")
    line = error_line(out)
    assert code == 1 and f"{nopdf}/pdf.scp is missing; it holds the training targets" in line
    assert "--ali-dir ALI_DIR" in line and "--pdf-ids" in line and not (tmp_path / "exp").exists()


def test_malformed_arpa_is_one_line_not_an_abort(yesno_root: Path, tmp_path: Path) -> None:
    """kaldilm's arpa2fst aborted the process (exit 134, a C++ log on stderr) on a malformed ARPA file; the message
    quotes kaldilm's line with its brackets (rich markup ate `[x YES]`)."""
    arpa = tmp_path / "bad.arpa"
    arpa.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0 <s>\n-0.5 </s>\nx YES\n\n\\end\\\n")
    code, out = cli("mkgraph", yesno_root / "data/lang", yesno_root / "exp/mono", tmp_path / "graph", "--lm", arpa)
    line = error_line(out)
    assert code == 1 and f"{arpa}: not an ARPA language model that arpa2fst reads" in line
    assert "[E] line 7 [x YES]: invalid n-gram logprob 'x'" in line and tree(tmp_path) == ["bad.arpa"]


def test_non_utf8_text_and_metrics_are_one_line(model: tuple[Path, Path], tmp_path: Path) -> None:
    """`score wer` read text files with a bare open() (UnicodeDecodeError traceback), `plot` metrics.jsonl too."""
    (tmp_path / "ref").write_bytes(b"u1 caf\xe9\n")
    code, out = cli("score", "wer", tmp_path / "ref", tmp_path / "ref")
    line = error_line(out)
    assert code == 1 and f"{tmp_path}/ref line 1: not valid UTF-8 (byte 0xe9 at column 7)" in line and "iconv" in line
    with pytest.raises(AsrBnError, match=r"per_utt line 1: not valid UTF-8 \(byte 0xe9"):  # bootstrap's reader
        (tmp_path / "per_utt").write_bytes(b"u1 #csid 1 0 0 0 caf\xe9\n")
        read_per_utt(tmp_path / "per_utt")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_bytes(b"\xc6\x01garbage\n")
    code, out = cli("plot", run, "--out", tmp_path / "x.png")
    assert code == 1 and f"{run}/metrics.jsonl holds no metrics rows" in error_line(out)
    assert not (tmp_path / "x.png").exists()


# -- one reader of data dirs ---------------------------------------------------------------------------------------


def test_score_details_reads_a_reversed_utt2spk_as_prep_does(yesno_root: Path, tmp_path: Path) -> None:
    """yesno's utt2spk is written `<speaker> <utterance>`: prep reads it so; score --details said "unknown"."""
    ref = yesno_root / "data" / "test_yesno"
    hyp = tmp_path / "hyp"
    hyp.write_text((ref / "text").read_text())
    for extra in ([], ["--utt2spk", ref / "utt2spk"]):
        details = tmp_path / f"details{len(extra)}"
        code, out = cli("score", "wer", ref, hyp, "--details", details, *extra)
        assert code == 0, out
        assert "note: utt2spk is written `<speaker> <utterance>` (reversed); read it that way" in out
        speakers = {line.split()[0] for line in (details / "per_spk").read_text().splitlines()[1:]}
        assert speakers == {"global", "SUM"}
    (tmp_path / "u2s").write_text("1_0_0_0_0_0_0_0 alice\n")  # one utterance named: the others are counted apart
    code, out = cli("score", "wer", ref, hyp, "--details", tmp_path / "d", "--utt2spk", tmp_path / "u2s")
    assert code == 0 and "note: 28 scored utterances have no speaker in" in out
    assert {line.split()[0] for line in (tmp_path / "d" / "per_spk").read_text().splitlines()[1:]} == {
        "alice", "unknown", "SUM"}  # fmt: skip
