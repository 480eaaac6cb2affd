"""`asr-bn forward`: log-likelihoods = log-posteriors − log-priors of the unfolded model, in the data dir's order,
as Kaldi binary float matrices (ark/scp read back by kaldiio; the stdout stream byte-for-byte the same archive,
`\\0BFM` headers as Kaldi writes them); `score frames`; and the yesno end-to-end check
`asr-bn forward | asr-bn decode` with a small BN-BLSTM trained on Kaldi's alignments → WER 0 on the test set."""

from __future__ import annotations

import io
import shutil
import struct
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from test_batching import make_prepared_dir
from typer.testing import CliRunner

from asr_bn.alignments import log_priors, read_counts, write_counts
from asr_bn.batching import UtteranceDataset
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.forward import ForwardConfig, _batches, _stream, forward, score_frames
from asr_bn.score import FrameScores, frame_scores
from asr_bn.train import TrainConfig, load_model, train
from asr_bn_cli.main import build_app

app = build_app()

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny sequence-BN model trained for two epochs on a synthetic prepared dir, and a held-out dir."""
    root = tmp_path_factory.mktemp("fwd")
    rng = np.random.default_rng(0)
    data = make_prepared_dir(root / "train", rng.integers(10, 40, 12).tolist(), seed=1)
    test = make_prepared_dir(root / "test", rng.integers(5, 60, 9).tolist(), seed=2)
    cfg = TrainConfig(str(data), str(data), str(root / "exp"), layers=2, units=8, bn="sequence", epochs=2,
                      batch_size=4, num_workers=0, device="cpu", lr=0.02, log_every=100)  # fmt: skip
    train(cfg)
    return root / "exp", test


def _expected(exp: Path, data: Path, posteriors: bool = False) -> dict[str, np.ndarray]:
    """Each utterance alone through the unfolded model in eval mode, minus the log-priors of priors.vec."""
    model, _ = load_model(exp / "final.pt")
    logp, _ = log_priors(read_counts(exp / "priors.vec"))
    dataset = UtteranceDataset(data, len(logp), targets=False)
    out = {}
    with torch.no_grad():
        for i, utt in enumerate(dataset.utts):
            feats, _ = dataset[i]
            post = model(feats[None], torch.tensor([len(feats)]))[0].numpy()
            out[utt] = post if posteriors else post - logp
    return out


def test_ark_scp_round_trip(trained: tuple[Path, Path], tmp_path: Path) -> None:
    exp, test = trained
    report = forward(exp, test, f"ark,scp:{tmp_path}/ll.ark,{tmp_path}/ll.scp", ForwardConfig(device="cpu"))
    got = kaldiio.load_scp(str(tmp_path / "ll.scp"))
    expected = _expected(exp, test)
    assert list(got) == list(expected) == [line.split()[0] for line in (test / "feats.scp").read_text().splitlines()]
    for utt, mat in expected.items():
        assert got[utt].dtype == np.float32 and got[utt].shape == mat.shape
        np.testing.assert_allclose(got[utt], mat, atol=1e-4)  # BN folded + batched vs unfolded, one at a time
    assert report.counts == {"utterances": 9, "frames": sum(len(m) for m in expected.values())}
    assert [k for k, _ in kaldiio.load_ark(str(tmp_path / "ll.ark"))] == list(expected)


def test_stdout_stream_is_the_same_binary_archive(trained: tuple[Path, Path], tmp_path: Path) -> None:
    exp, test = trained
    forward(exp, test, f"ark:{tmp_path}/ll.ark", ForwardConfig(device="cpu"))
    result = runner.invoke(app, ["forward", str(exp), str(test), "ark:-", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    stream = result.stdout_bytes
    assert stream == (tmp_path / "ll.ark").read_bytes()
    # Kaldi's binary float matrix: "key \0B" "FM " then rows and cols as (size byte 4, int32 LE), then row-major f32
    first = next(iter(_expected(exp, test).items()))
    header = first[0].encode() + b" \0BFM " + b"\x04" + struct.pack("<i", first[1].shape[0])
    header += b"\x04" + struct.pack("<i", first[1].shape[1])
    assert stream.startswith(header)
    keys = [k for k, _ in kaldiio.load_ark(io.BytesIO(stream))]
    assert keys == list(_expected(exp, test))
    assert b"forward:" not in stream  # the report goes to stderr, never into the archive


def test_progress_names_the_set_and_its_total_and_stays_plain_off_a_terminal(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """The bar says which set it runs on and how many utterances it will do; off a terminal (here: captured),
    rich prints it once, without cursor or colour codes. Torch's threads: 1 unless --threads says otherwise."""
    exp, test = trained
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    result = runner.invoke(app, ["forward", str(exp), str(test), f"ark:{tmp_path}/ll.ark", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    bar = [line for line in result.output.splitlines() if line.startswith("forward test")]
    assert len(bar) == 1 and " 9/9 " in bar[0], result.output
    assert "\x1b" not in result.output and "\r" not in result.output
    assert torch.get_num_threads() == 1  # the command's default --threads, set once for the process
    threads = runner.invoke(app, ["forward", str(exp), str(test), f"ark:{tmp_path}/ll.ark", "--threads", "2"])
    assert threads.exit_code == 0 and torch.get_num_threads() == 2
    torch.set_num_threads(before)


def test_posteriors_and_prior_scale(trained: tuple[Path, Path], tmp_path: Path) -> None:
    exp, test = trained
    forward(exp, test, f"ark:{tmp_path}/post.ark", ForwardConfig(posteriors=True, device="cpu"))
    forward(exp, test, f"ark:{tmp_path}/half.ark", ForwardConfig(prior_scale=0.5, device="cpu"))
    post = dict(kaldiio.load_ark(str(tmp_path / "post.ark")))
    half = dict(kaldiio.load_ark(str(tmp_path / "half.ark")))
    logp, _ = log_priors(read_counts(exp / "priors.vec"))
    for utt, mat in post.items():
        np.testing.assert_allclose(np.logaddexp.reduce(mat, axis=1), 0.0, atol=1e-5)
        np.testing.assert_allclose(half[utt], mat - 0.5 * logp, atol=1e-5)


def test_small_windows_keep_input_order(trained: tuple[Path, Path], tmp_path: Path) -> None:
    exp, test = trained
    forward(exp, test, f"ark:{tmp_path}/a.ark", ForwardConfig(window=2, max_frames=50, device="cpu"))
    forward(exp, test, f"ark:{tmp_path}/b.ark", ForwardConfig(device="cpu"))
    a, b = list(kaldiio.load_ark(str(tmp_path / "a.ark"))), list(kaldiio.load_ark(str(tmp_path / "b.ark")))
    assert [k for k, _ in a] == [k for k, _ in b]
    for (_, x), (_, y) in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5)
    lengths = np.array([30, 5, 12, 40, 7])
    batches = _batches(lengths, max_frames=40, window=3)
    assert batches == [[0], [2, 1], [3], [4]]  # longest first inside each window of 3; ≤ 40 padded frames
    assert sorted(i for b in batches for i in b) == list(range(5))


def test_score_frames(trained: tuple[Path, Path]) -> None:
    exp, test = trained
    scores = score_frames(exp, test, ForwardConfig(device="cpu"))
    model, _ = load_model(exp / "final.pt")
    dataset = UtteranceDataset(test, model.cfg.num_pdfs)
    expected = FrameScores()
    with torch.no_grad():
        for i in range(len(dataset)):
            feats, targets = dataset[i]
            lengths = torch.tensor([len(feats)])
            expected = expected + frame_scores(model(feats[None], lengths), targets[None], lengths)
    assert scores.frames == expected.frames and scores.errors == expected.errors
    assert scores.ce == pytest.approx(expected.ce, rel=1e-4)
    result = runner.invoke(app, ["score", "frames", str(exp), str(test), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"FER {100 * scores.fer:.2f} % over {scores.frames} frames" in result.output


def test_bad_inputs(trained: tuple[Path, Path], tmp_path: Path) -> None:
    exp, test = trained
    with pytest.raises(UsageError, match="wspecifier"):
        forward(exp, test, "scp:x.scp")
    bad = runner.invoke(app, ["forward", str(exp), str(test), "ark,t:x.txt"])
    assert bad.exit_code == 2 and "wspecifier" in bad.output
    missing = runner.invoke(app, ["forward", str(tmp_path), str(test), "ark:-"])
    assert missing.exit_code == 1 and "no such model" in missing.output

    other = tmp_path / "exp"
    shutil.copytree(exp, other)
    (other / "priors.vec").write_text("[ 1 2 3 ]\n")
    with pytest.raises(AsrBnError, match="has 3 pdf counts but .* has 4 outputs"):
        forward(other, test, f"ark:{tmp_path}/x.ark")
    counts = read_counts(exp / "priors.vec")
    counts[1] += 1
    write_counts(other / "priors.vec", counts)
    with pytest.raises(AsrBnError) as disagree:
        forward(other, test, f"ark:{tmp_path}/x.ark")
    message = f"{other / 'priors.vec'} disagrees with the pdf counts kept in {other / 'final.pt'} (1 of 4 pdfs differ)"
    assert message in str(disagree.value)

    data = tmp_path / "data"
    shutil.copytree(test, data)
    text = (data / "pipeline.json").read_text().replace('"delta_order": 1', '"delta_order": 2')
    (data / "pipeline.json").write_text(text)
    with pytest.raises(AsrBnError, match="pipeline.json differs from the model's .* in delta_order"):
        forward(exp, data, f"ark:{tmp_path}/x.ark")
    assert not (tmp_path / "x.ark").exists()  # nothing half-written under the final name


def test_priors_are_the_training_target_counts(trained: tuple[Path, Path]) -> None:
    """final.pt and checkpoint.pt keep the frame counts per pdf of the training targets, as priors.vec holds them."""
    exp, _ = trained
    targets = kaldiio.load_scp(str(exp.parent / "train" / "pdf.scp"))
    expected = np.bincount(np.concatenate(list(targets.values())), minlength=4)
    assert len(expected) == 4 and expected.sum() == sum(len(v) for v in targets.values())
    assert read_counts(exp / "priors.vec").tolist() == expected.tolist()
    for name in ("final.pt", "checkpoint.pt"):
        saved = torch.load(exp / name, map_location="cpu", weights_only=True)["priors"]
        assert [int(c) for c in saved] == expected.tolist(), name


def _with_priors(exp: Path, other: Path, counts: list[int] | None) -> Path:
    """A copy of the model dir whose final.pt keeps `counts` as its priors (None: unchanged)."""
    shutil.copytree(exp, other)
    if counts is not None:
        ckpt = torch.load(other / "final.pt", map_location="cpu", weights_only=True)
        torch.save({**ckpt, "priors": counts}, other / "final.pt")
    return other


def test_priors_from_final_pt_when_priors_vec_is_absent(trained: tuple[Path, Path], tmp_path: Path) -> None:
    exp, test = trained
    other = _with_priors(exp, tmp_path / "exp", None)
    (other / "priors.vec").unlink()
    report = forward(other, test, f"ark:{tmp_path}/x.ark", ForwardConfig(device="cpu"))
    assert f"{other / 'priors.vec'} is absent: using the pdf counts kept in {other / 'final.pt'}" in report.notes
    forward(exp, test, f"ark:{tmp_path}/y.ark", ForwardConfig(device="cpu"))
    assert (tmp_path / "x.ark").read_bytes() == (tmp_path / "y.ark").read_bytes()  # the same priors


def test_unseen_pdfs_are_reported_once(trained: tuple[Path, Path], tmp_path: Path) -> None:
    exp, test = trained
    counts = read_counts(exp / "priors.vec").astype(int).tolist()
    counts[1] = counts[3] = 0  # as if pdfs 1 and 3 never occurred in the training targets
    other = _with_priors(exp, tmp_path / "exp", counts)
    write_counts(other / "priors.vec", np.array(counts))
    result = runner.invoke(app, ["forward", str(other), str(test), f"ark:{tmp_path}/x.ark", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    message = "2 pdfs never seen in training (ids 1 3): their log-prior is floored"
    assert result.stderr.count(message) == 1, result.stderr
    ll = dict(kaldiio.load_ark(str(tmp_path / "x.ark")))
    assert all((mat[:, [1, 3]] < -1e29).all() for mat in ll.values())  # a floored pdf never wins
    result = runner.invoke(app, ["forward", str(other), str(test), f"ark:{tmp_path}/p.ark", "--posteriors"])
    assert result.exit_code == 0 and message not in result.stderr  # posteriors use no priors


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_out_of_memory_is_one_line(
    trained: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: type
) -> None:
    import asr_bn.model

    exp, test = trained

    def oom(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise error("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(asr_bn.model.BnBlstm, "forward", oom)
    result = runner.invoke(app, ["forward", str(exp), str(test), f"ark:{tmp_path}/x.ark", "--device", "cpu",
                                 "--max-frames", "100"])  # fmt: skip
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    first = UtteranceDataset(test, 4, targets=False)
    batch = _batches(first.lengths, 100, ForwardConfig().window)[0]
    padded = len(batch) * int(first.lengths[batch[0]])
    assert f"x {int(first.lengths[batch[0]])} frames = {padded} padded frames" in errors[0]
    assert "lower --max-frames (now 100)" in errors[0]
    assert not (tmp_path / "x.ark").exists()


def test_reader_closing_the_pipe_is_one_line() -> None:
    class Closed(io.BytesIO):
        def write(self, data: bytes) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(AsrBnError, match="reading the archive on stdout exited early"):
        _stream(iter([("u", np.zeros((2, 3), np.float32))]), Closed())


@pytest.mark.slow
def test_yesno_forward_pipe_decode_wer0(yesno_root: Path, tmp_path: Path) -> None:
    """The issue's end-to-end check: a small BN-BLSTM trained on Kaldi's yesno alignments, forwarded on the test
    set into `asr-bn decode` with Kaldi's own HCLG and final.mdl through a pipe (ark:-), reaches WER 0 at the best
    LM weight, as Kaldi's yesno recipe scores its own monophone system (0 %)."""
    from asr_bn.features import FbankConfig, FeaturePipeline
    from asr_bn.prep import prepare_kaldi

    pipeline = FeaturePipeline(FbankConfig(sample_frequency=8000, num_mel_bins=23, dither=0.0), cmvn="utterance",
                               delta_order=0)  # fmt: skip
    dev = tmp_path / "dev_data"  # 3 training utterances: a cheap dev pass each epoch
    dev.mkdir()
    utts = sorted(line.split()[0] for line in (yesno_root / "data/train_yesno/text").open())[:3]
    (dev / "wav.scp").write_text("".join(f"{u} {yesno_root}/waves_yesno/{u}.wav\n" for u in utts))
    (dev / "utt2spk").write_text("".join(f"{u} global\n" for u in utts))
    ali = yesno_root / "exp/mono"
    prepare_kaldi(yesno_root / "data/train_yesno", tmp_path / "train", pipeline, ali_dir=ali)
    prepare_kaldi(dev, tmp_path / "dev", pipeline, ali_dir=ali)
    prepare_kaldi(yesno_root / "data/test_yesno", tmp_path / "test", pipeline)
    cfg = TrainConfig(str(tmp_path / "train"), str(tmp_path / "dev"), str(tmp_path / "exp"), layers=1, units=24,
                      bn="sequence", lr=0.02, epochs=3, batch_size=2, num_workers=0, device="cpu", patience=0,
                      max_train_frames=None, cache=True, log_every=100)  # fmt: skip
    train(cfg)
    fwd = runner.invoke(app, ["forward", str(tmp_path / "exp"), str(tmp_path / "test"), "ark:-"])
    assert fwd.exit_code == 0, fwd.output
    graph, model = yesno_root / "exp/mono/graph", yesno_root / "exp/mono/final.mdl"
    dec = runner.invoke(app, ["decode", str(graph), str(model), "ark:-", str(tmp_path / "dec"), "--lattices",
                              "--lmwt", "2:12"], input=fwd.stdout_bytes)  # fmt: skip
    assert dec.exit_code == 0, dec.output
    assert "decoded 29" in dec.output
    scored = runner.invoke(app, ["score", "wer", str(yesno_root / "data/test_yesno"), str(tmp_path / "dec")])
    assert "best: %WER 0.00 [ 0 / 232, 0 ins, 0 del, 0 sub ]" in scored.output, scored.output
