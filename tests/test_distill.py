"""Ensembles and soft targets: the mean of several networks' log-likelihoods (`gmm align --loglikes` given several)
against Kaldi's matrix-sum; Kaldi posterior archives read and written as Kaldi's tools do; `asr-bn prep post` (the
mean of several networks' posteriors) against Kaldi's matrix-sum + prob-to-post; `asr-bn train --soft-weight`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_kaldi, run_kaldi_bytes
from test_batching import make_prepared_dir
from test_train import TINY, cli, error_line, rows

from asr_bn.alignments.posteriors import average_posteriors, read_posterior_table, read_posteriors, write_posteriors
from asr_bn.batching import PAD_TARGET, Batch
from asr_bn.io import write_ark_scp
from asr_bn.train import compute_loss


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny learnable corpus of test_train: 16 training and 6 dev utterances, 4 pdfs."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    return (make_prepared_dir(root / "train", rng.integers(10, 40, 16).tolist(), seed=1),
            make_prepared_dir(root / "dev", rng.integers(10, 40, 6).tolist(), seed=2))


def _log_posteriors(path: Path, data: Path, seed: int, num_pdfs: int = 6, sharp: float = 3.0) -> Path:
    """A .scp of random log-posteriors (rows of log-softmax) for every utterance of the prepared dir `data`."""
    rng = np.random.default_rng(seed)
    mats = {}
    for line in (data / "utt2num_frames").read_text().splitlines():
        utt, n = line.split()
        logits = sharp * rng.standard_normal((int(n), num_pdfs))
        mats[utt] = (logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)).astype(np.float32)
    write_ark_scp(path.with_suffix(".ark"), path, mats.items())
    return path


def _kaldi_text_posteriors(text: str) -> dict[str, list[list[tuple[int, float]]]]:
    out = {}
    for line in text.splitlines():
        utt, *words = line.split()
        frames, frame = [], []
        for w in words:
            if w == "[":
                frame = []
            elif w == "]":
                frames.append([(int(frame[i]), float(frame[i + 1])) for i in range(0, len(frame), 2)])
            else:
                frame.append(w)
        out[utt] = frames
    return out


# -- ensembles of log-likelihoods ---------------------------------------------------------------------------------


def test_mean_loglikes_are_kaldis_matrix_sum_average(dirs: tuple[Path, Path], kaldi_bundle: Path,
                                                    tmp_path: Path) -> None:
    """Three networks' outputs averaged frame by frame are Kaldi's `matrix-sum --average=true` to the bit; a source
    with another shape (when read) or fewer utterances (at once) is one line naming it."""
    import kaldiio

    from asr_bn.decode import MeanLoglikes
    from asr_bn.errors import AsrBnError

    scps = [_log_posteriors(tmp_path / f"ll{s}.scp", dirs[0], s) for s in range(3)]
    ours = MeanLoglikes([str(s) for s in scps])
    run_kaldi_bytes(kaldi_bundle, "matrix-sum", "--average=true", *[f"scp:{s}" for s in scps],
                    f"ark:{tmp_path / 'k.ark'}")
    kaldi = dict(kaldiio.load_ark(str(tmp_path / "k.ark")))
    assert sorted(ours) == sorted(kaldi) and len(ours) == 16
    for utt, mat in kaldi.items():
        assert ours[utt].dtype == np.float32 and ours[utt].tobytes() == mat.tobytes(), utt
    other = _log_posteriors(tmp_path / "other.scp", dirs[0], 3, num_pdfs=5)
    with pytest.raises(AsrBnError, match="other.scp: utterance .* has log-likelihoods of shape"):
        dict(MeanLoglikes([str(scps[0]), str(other)]))
    short = tmp_path / "short.scp"
    short.write_text("".join(scps[1].read_text().splitlines(keepends=True)[2:]))
    with pytest.raises(AsrBnError, match="short.scp lacks 2 of the 16 utterances"):
        MeanLoglikes([str(scps[0]), str(short)])


# -- Kaldi's posterior archives ---------------------------------------------------------------------------------


def test_kaldis_posteriors_read_and_written_back_byte_for_byte(yesno_root: Path, kaldi_bundle: Path,
                                                               tmp_path: Path) -> None:
    """ali-to-post of the yesno run's alignments (Kaldi's writer), binary and text, read alike; written back, the
    bytes are Kaldi's, and copy-post reads them."""
    exp = yesno_root / "exp" / "mono"
    pdfs = run_kaldi_bytes(kaldi_bundle, "ali-to-pdf", exp / "final.mdl", f"ark:gunzip -c {exp / 'ali.1.gz'}|", "ark:-")
    binary = run_kaldi_bytes(kaldi_bundle, "ali-to-post", "ark:-", "ark:-", stdin=pdfs)
    text = run_kaldi_bytes(kaldi_bundle, "ali-to-post", "ark:-", "ark,t:-", stdin=pdfs)
    (tmp_path / "k.post").write_bytes(binary)
    (tmp_path / "k.tpost").write_bytes(text)
    ours, from_text = list(read_posteriors(tmp_path / "k.post")), list(read_posteriors(tmp_path / "k.tpost"))
    assert len(ours) == 31 and [u for u, _ in ours] == [u for u, _ in from_text]
    for (_, (p, w)), (_, (pt, wt)) in zip(ours, from_text):
        assert p.shape == (len(p), 1) and (w == 1).all()
        np.testing.assert_array_equal(p, pt)
        np.testing.assert_array_equal(w, wt)
    write_posteriors(tmp_path / "o.post", tmp_path / "o.scp", ours)
    assert (tmp_path / "o.post").read_bytes() == binary
    assert run_kaldi(kaldi_bundle, "copy-post", f"scp:{tmp_path / 'o.scp'}", "ark,t:-") == text.decode()
    table = read_posterior_table(tmp_path / "o.scp", [ours[3][0]])
    np.testing.assert_array_equal(table[ours[3][0]][0], ours[3][1][0])


def test_cut_or_corrupt_posterior_archives_are_one_line(tmp_path: Path) -> None:
    from asr_bn.errors import AsrBnError

    post = (np.array([[3, 1], [2, 0]], np.int32), np.array([[0.75, 0.25], [1.0, 0]], np.float32))
    write_posteriors(tmp_path / "p.ark", tmp_path / "p.scp", [("u1", post), ("u2", post)])
    data = (tmp_path / "p.ark").read_bytes()
    (tmp_path / "cut.ark").write_bytes(data[:-7])
    (tmp_path / "text.ark").write_bytes(b"u1 [ 3 0.75 1 0.25 ] [ 2 1 ]\nu2 [ 3 0.75 1 ] [ 2 1 ]\nu3 [ 1 1 ]")
    with pytest.raises(AsrBnError, match="does not fit in the file"):
        list(read_posteriors(tmp_path / "cut.ark"))
    text = read_posteriors(tmp_path / "text.ark")
    utt, (pdfs, weights) = next(text)
    assert utt == "u1" and pdfs.tolist() == [[3, 1], [2, 0]] and weights.tolist() == [[0.75, 0.25], [1.0, 0.0]]
    with pytest.raises(AsrBnError, match=r"byte \d+ \(utterance u2\): expected frames `\[ pdf weight"):
        next(text)
    (tmp_path / "text.ark").write_bytes(b"u1 [ 3 0.75 1 0.25 ] [ 2 1 ]\nu3 [ 1 1 ]")  # u3's line has no newline
    with pytest.raises(AsrBnError, match="the archive is cut off; write it again"):
        list(read_posteriors(tmp_path / "text.ark"))


def test_prep_post_is_kaldis_mean_of_posteriors(dirs: tuple[Path, Path], kaldi_bundle: Path, tmp_path: Path) -> None:
    """Three networks' log-posteriors: asr-bn prep post keeps what Kaldi's copy-matrix --apply-exp, matrix-sum
    --average=true and prob-to-post --random-prune=false keep, with the same weights to an ulp."""
    data = tmp_path / "train"
    shutil.copytree(dirs[0], data)
    scps = [_log_posteriors(tmp_path / f"lp{s}.scp", data, s, sharp=1.5) for s in range(3)]
    code, out = cli("prep", "post", data, *scps, "--min-post", "0.05")
    assert code == 0, out
    assert out.strip().splitlines()[-1] == "soft targets: utterances 16, networks 3, pdfs 6"
    exps = [f"ark:copy-matrix --apply-exp scp:{s} ark:- |" for s in scps]
    probs = run_kaldi_bytes(kaldi_bundle, "matrix-sum", "--average=true", *exps, "ark:-")
    binary = run_kaldi_bytes(kaldi_bundle, "prob-to-post", "--random-prune=false", "--min-post=0.05", "ark:-", "ark:-",
                             stdin=probs)
    (tmp_path / "kaldi.post").write_bytes(binary)
    kaldi = dict(read_posteriors(tmp_path / "kaldi.post"))  # the reader is Kaldi's (test above)
    ours = dict(read_posteriors(data / "post.ark"))
    assert list(kaldi) == list(ours)
    for utt, (pdfs, weights) in kaldi.items():  # the same entries; weights to an ulp (Kaldi's expf is libm's)
        np.testing.assert_array_equal(ours[utt][0], pdfs)
        np.testing.assert_allclose(ours[utt][1], weights, rtol=2.5e-7, atol=0)
    assert max(w.shape[1] for _, w in kaldi.values()) > 1  # frames with several entries: soft targets
    # Kaldi's copy-post reads ours as its own
    assert run_kaldi(kaldi_bundle, "copy-post", f"scp:{data / 'post.scp'}", "ark,t:-").count("[") > 0


def test_average_posteriors_keeps_the_likely_pdfs_in_pdf_order() -> None:
    a = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]], np.float32)
    b = np.array([[0.5, 0.4, 0.1], [0.05, 0.15, 0.8]], np.float32)
    pdfs, weights = average_posteriors([a, b], min_post=0.09)
    assert pdfs.tolist() == [[0, 1, 2], [1, 2, 0]]
    np.testing.assert_allclose(weights, [[0.6, 0.3, 0.1], [0.1, 0.85, 0]], rtol=1e-6)


def test_prep_post_refuses_what_is_not_a_teacher(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    data = tmp_path / "train"
    shutil.copytree(dirs[0], data)
    good = _log_posteriors(tmp_path / "good.scp", data, 0)
    loglikes = tmp_path / "ll.scp"  # forward without --posteriors: rows do not sum to one
    write_ark_scp(tmp_path / "ll.ark", loglikes, ((u, m + 2.0) for u, m in
                                                   ((line.split()[0], _row(good, line.split()[0])) for line in
                                                    good.read_text().splitlines())))
    code, out = cli("prep", "post", data, good, loglikes)
    assert code == 1 and "the rows are not log-posteriors" in error_line(out) and "--posteriors" in out
    short = tmp_path / "short.scp"
    short.write_text("".join(good.read_text().splitlines(keepends=True)[1:]))
    code, out = cli("prep", "post", data, short)
    assert code == 1 and "has no log-posteriors for utterance" in error_line(out)
    other = _log_posteriors(tmp_path / "other.scp", data, 1, num_pdfs=5)
    code, out = cli("prep", "post", data, good, other)
    assert code == 1 and "networks of different trees cannot be averaged" in error_line(out)
    code, out = cli("prep", "post", data, good, "--min-post", "0")
    assert code == 2 and "min-post" in out
    assert not (data / "post.scp").exists() and not (data / "post.ark").exists()  # nothing half-made


def _row(scp: Path, utt: str) -> np.ndarray:
    from asr_bn.io import read_matrix

    loc = dict(line.split(maxsplit=1) for line in scp.read_text().splitlines())[utt]
    return read_matrix(loc, scp, utt)


# -- training toward soft targets -------------------------------------------------------------------------------


def test_one_hot_soft_targets_are_the_alignment_loss() -> None:
    """Soft targets that put weight 1 on the aligned pdf give the alignment's CE; weight w mixes the two."""
    from asr_bn.config import ModelConfig
    from asr_bn.model import BnBlstm

    torch.manual_seed(0)
    model = BnBlstm(ModelConfig(input_dim=3, num_pdfs=5, layers=1, units=4)).eval()
    feats, lengths = torch.randn(2, 7, 3), torch.tensor([7, 4])
    targets = torch.randint(0, 5, (2, 7))
    targets[1, 4:] = PAD_TARGET
    one_hot = torch.stack([targets.clamp(min=0), torch.zeros_like(targets)], -1)
    weights = torch.stack([(targets != PAD_TARGET).float(), torch.zeros(2, 7)], -1)
    hard, errors, _ = compute_loss(model, Batch(["a", "b"], feats, targets, lengths))
    batch = Batch(["a", "b"], feats, targets, lengths, soft_pdfs=one_hot, soft_weights=weights)
    soft, soft_errors, _ = compute_loss(model, batch, soft_weight=1.0)
    torch.testing.assert_close(soft, hard)
    assert int(soft_errors) == int(errors)
    uniform = Batch(["a", "b"], feats, targets, lengths, soft_pdfs=torch.arange(5).expand(2, 7, 5),
                    soft_weights=torch.full((2, 7, 5), 0.2) * (targets != PAD_TARGET)[..., None])
    with torch.no_grad():
        log_probs = model(feats, lengths)
    uniform_ce = -(log_probs[0].sum() + log_probs[1, :4].sum()) * 0.2
    torch.testing.assert_close(compute_loss(model, uniform, 0.25)[0], 0.75 * hard + 0.25 * uniform_ce)


def test_train_toward_an_ensemble(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    """Two networks, their posteriors averaged into train's post.scp, a third trained toward them: it learns; a
    training utterance without soft targets is a counted, named skip; a pdf outside the model is one line."""
    train, dev = dirs
    data = tmp_path / "train"
    shutil.copytree(train, data)
    scps = []
    for seed in (0, 1):
        exp = tmp_path / f"teacher{seed}"
        code, out = cli("train", train, dev, exp, *TINY, "--epochs", "3", "--optimizer", "adam", "--seed", str(seed))
        assert code == 0, out
        scp = exp / "post_train.scp"
        code, out = cli("forward", exp, train, f"ark,scp:{scp.with_suffix('.ark')},{scp}", "--posteriors")
        assert code == 0, out
        scps.append(scp)
    code, out = cli("prep", "post", data, *scps, "--min-post", "0.02")
    assert code == 0, out
    soft = dict(read_posteriors(data / "post.ark"))
    assert max(w.shape[1] for _, w in soft.values()) > 1  # frames shared between pdfs
    lines = (data / "post.scp").read_text().splitlines(keepends=True)
    (data / "post.scp").write_text("".join(lines[1:]))  # the first utterance loses its soft targets
    student = tmp_path / "student"
    code, out = cli("train", data, dev, student, *TINY, "--epochs", "3", "--optimizer", "adam", "--soft-weight", "1")
    assert code == 0, out
    assert "no soft targets in post.scp" in out and "train kept 15" in out.replace(":", "")
    dev_rows = rows(student, "dev")
    assert dev_rows[-1]["ce"] < 0.8 * dev_rows[0]["ce"]
    # a teacher of another tree: pdf-ids the student does not have
    pdfs, weights = soft[lines[1].split()[0]]
    bad = {lines[1].split()[0]: (pdfs + 7, weights)}
    write_posteriors(data / "bad.ark", data / "post.scp", bad.items())
    code, out = cli("train", data, dev, tmp_path / "bad", *TINY, "--epochs", "1", "--soft-weight", "0.5")
    assert code == 1 and "outside the model's 4 outputs" in error_line(out)
