"""Sequence training with MMI (`asr-bn train --criterion mmi`) on yesno: the gradient at the network's outputs is
κ (denominator − numerator), the denominator is the derivative of the lattice's log-probability (finite
differences), a run from a CE model raises the MMI objective, and bad input is one line or a named skip.
The lattice posteriors themselves are Kaldi's (tests/test_decode_kaldi.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from asr_bn.batching import Batch
from asr_bn.decode import DecodeConfig, decode
from asr_bn_cli.main import build_app

app = build_app()
RUN = ["--num-workers", "0", "--device", "cpu", "--batch-size", "4", "--log-every", "1", "--max-train-frames", "0"]


@pytest.fixture(scope="module")
def denlats(yesno_root: Path, yesno_net_loglikes: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """lat.scp of yesno's training set decoded with the tiny network of `yesno_net_loglikes` (its CE model)."""
    out = tmp_path_factory.mktemp("denlats") / "lat"
    scp = yesno_net_loglikes["train"].with_suffix(".scp")
    decode(yesno_root / "exp/mono/graph", yesno_root / "exp/mono/final.mdl", scp, out, DecodeConfig(lattices=True))
    return out / "lat.scp"


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def _mmi(yesno_root: Path, root: Path, denlats: Path) -> object:
    from asr_bn.alignments import read_counts
    from asr_bn.train.mmi import Mmi

    net = root / "exp"
    return Mmi(denlats, yesno_root / "exp/mono/final.mdl", read_counts(net / "priors.vec"), 0.1, drop_frames=False)


def test_gradient_is_acoustic_scale_times_denominator_minus_numerator(
    yesno_root: Path, yesno_net_loglikes: dict[str, Path], denlats: Path
) -> None:
    """The denominator posteriors are the derivative of the lattice's log-probability with respect to the
    log-likelihoods (central differences), and the loss's gradient at the log-softmax input is κ (den − num)."""
    import kaldiio

    mmi = _mmi(yesno_root, yesno_net_loglikes["train"].parent, denlats)
    utt, loglikes = next(iter(kaldiio.load_scp(str(yesno_net_loglikes["train"].with_suffix(".scp"))).items()))
    loglikes = loglikes.astype(np.float64)
    den, log_like = mmi.denominator(utt, loglikes)
    assert np.allclose(den.sum(1), 1.0) and ((den > 0.01) & (den < 0.99)).any()  # a real choice in the lattice
    rng = np.random.default_rng(0)
    for t, s in zip(rng.integers(0, len(loglikes), 6), np.argsort(-den, axis=1)[:, 0][:6]):
        step = np.zeros_like(loglikes)
        step[t, s] = 0.05  # the lattice keeps costs in float32: a step well above their rounding
        up, down = mmi.denominator(utt, loglikes + step)[1], mmi.denominator(utt, loglikes - step)[1]
        assert (up - down) / 0.1 == pytest.approx(0.1 * den[t, s], rel=1e-3, abs=1e-7)
    # the loss's gradient at the logits of a log-softmax network
    logits = torch.tensor(loglikes[None], requires_grad=True)
    log_probs = torch.log_softmax(logits, -1)
    targets = torch.from_numpy(np.argmax(loglikes, 1))[None]
    batch = Batch([utt], torch.zeros(1, len(loglikes), 1), targets, torch.tensor([len(loglikes)]))
    result = mmi(log_probs, batch)
    result.loss.backward()
    posteriors, _ = mmi.denominator(utt, (log_probs.detach()[0] - mmi.log_priors).double().numpy())
    num = np.eye(loglikes.shape[1])[targets[0].numpy()]
    assert np.allclose(logits.grad[0].numpy(), 0.1 * (posteriors - num), atol=1e-6)


def test_mmi_training_from_a_ce_model_raises_the_objective(
    yesno_root: Path, yesno_net_loglikes: dict[str, Path], denlats: Path, tmp_path: Path
) -> None:
    """A run from the CE model: every epoch runs, final.pt is the last one, the MMI objective per frame rises from
    the first updates to the last, and the metrics name it."""
    root = yesno_net_loglikes["train"].parent
    exp = tmp_path / "mmi"
    code, out = _cli("train", root / "train", root / "train", exp, *RUN, "--init", root / "exp", "--criterion", "mmi",
                     "--denlats", denlats, "--lattice-model", yesno_root / "exp/mono/final.mdl", "--lr", "0.003",
                     "--epochs", "3", "--optimizer", "adam")
    assert code == 0, out
    rows = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert all("mmi" in r and 0 <= r["dropped"] < 1 for r in train)
    first, last = np.mean([r["mmi"] for r in train[:3]]), np.mean([r["mmi"] for r in train[-3:]])
    assert last > first, (first, last)
    final = torch.load(exp / "final.pt", weights_only=True)
    assert final["update"] == train[-1]["update"]  # the last model, not the best dev CE


def test_bad_mmi_input(yesno_root: Path, yesno_net_loglikes: dict[str, Path], denlats: Path, tmp_path: Path) -> None:
    """Missing options are a usage error; utterances without a lattice a named skip; a lattice model of other pdfs
    and lattices of other lengths one line each, nothing written."""
    root, model = yesno_net_loglikes["train"].parent, yesno_root / "exp/mono/final.mdl"
    base = ["train", root / "train", root / "train"]
    code, out = _cli(*base, tmp_path / "a", *RUN, "--criterion", "mmi", "--denlats", denlats)
    assert code == 2 and "--criterion mmi needs --init" in out
    code, out = _cli(*base, tmp_path / "a", *RUN, "--init", tmp_path / "none")
    assert code == 2 and "--init" in out and "no such model (give the dir of an `asr-bn train` run" in out
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())
    lines = denlats.read_text().splitlines()
    (tmp_path / "short.scp").write_text("\n".join(lines[1:]) + "\n")
    opts = [*RUN, "--init", root / "exp", "--criterion", "mmi", "--lattice-model", model, "--epochs", "1"]
    code, out = _cli(*base, tmp_path / "b", *opts, "--denlats", tmp_path / "short.scp")
    assert code == 0, out
    skipped = json.loads((tmp_path / "b" / "report.json").read_text())["skipped"]
    assert skipped == {f"no denominator lattice in {tmp_path / 'short.scp'}": [lines[0].split()[0]]}
    from asr_bn.errors import AsrBnError
    from asr_bn.train.mmi import Mmi

    with pytest.raises(AsrBnError, match="has 11 pdfs but the network 5 outputs: give the final.mdl"):
        Mmi(denlats, model, np.ones(5), 0.1, True)
    # lattices of another utterance's frames: the lengths differ
    first, second = lines[0].split(), lines[1].split()
    swapped = tmp_path / "swapped.scp"
    swapped.write_text(f"{first[0]} {second[1]}\n{second[0]} {first[1]}\n" + "\n".join(lines[2:]) + "\n")
    code, out = _cli(*base, tmp_path / "d", *opts, "--denlats", swapped)
    assert code == 1 and "denominator lattice has" in out and "decode the training data again" in out
    assert not (tmp_path / "d" / "final.pt").exists()


def test_lattice_table_reads_each_lattice_and_names_bad_lines(denlats: Path, tmp_path: Path) -> None:
    """A lat.scp's lattices read one at a time from their offsets (any subset of the archive in any order, as Kaldi's
    split scp files list them); a line that is not `utterance archive:offset` or an archive that is gone is one line
    naming the file."""
    from asr_bn.errors import AsrBnError
    from asr_bn.lattice import LatticeTable

    table = LatticeTable(denlats)
    lines = denlats.read_text().splitlines()
    shuffled = tmp_path / "shuffled.scp"
    shuffled.write_text("\n".join(lines[::-2]) + "\n")  # every other lattice, backwards
    again = LatticeTable(shuffled)
    assert len(again) == (len(lines) + 1) // 2
    for utt in again:
        assert again[utt].raw == table[utt].raw and table[utt].num_states > 1
    bad = tmp_path / "bad.scp"
    bad.write_text(lines[0] + "\n" + lines[1].split()[0] + "\n")
    with pytest.raises(AsrBnError, match=r"bad.scp:2: not `utterance archive:offset`"):
        LatticeTable(bad)
    gone = tmp_path / "gone.scp"
    gone.write_text(f"{lines[0].split()[0]} {tmp_path / 'none.ark'}:5\n")
    with pytest.raises(AsrBnError, match=r"gone.scp: cannot read its archive .*none.ark"):
        LatticeTable(gone)[lines[0].split()[0]]
