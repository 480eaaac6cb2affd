"""Bucketing sampler (padding ≤ 3 % on WSJ-like lengths, reproducible, resumable, split between ranks) and the
dataset reading a prepared data dir (CMVN + deltas on the fly, padding, named data errors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_bn.batching import (
    PAD_TARGET,
    BucketingSampler,
    UtteranceDataset,
    filter_by_length,
    make_loader,
    padding_waste,
    read_targets,
)
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.cmvn import compute_cmvn_stats
from asr_bn.features import FbankConfig, FeaturePipeline
from asr_bn.io import write_ark_scp, write_text
from asr_bn.report import Report


def wsj_like_lengths(n: int = 37_000, seed: int = 0) -> np.ndarray:
    """Log-normal utterance lengths clipped to 100–1300 frames, like WSJ si284 (mean ≈ 7.5 s)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(700), 0.4, n), 100, 1300).astype(np.int64)


def make_prepared_dir(
    path: Path,
    lengths: list[int],
    num_pdfs: int = 4,
    dim: int = 5,
    num_speakers: int = 2,
    seed: int = 0,
    cmvn: str = "speaker",
) -> Path:
    """A tiny prepared data dir (feats/cmvn/pdf/utt2num_frames/utt2spk/pipeline.json) with a learnable class:
    the pdf of each frame shifts one feature dimension, in runs of a few frames."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    utts = [f"spk{i % num_speakers}-utt{i:03d}" for i in range(len(lengths))]
    feats, pdfs = {}, {}
    for utt, n in zip(utts, lengths):
        targets = np.repeat(rng.integers(0, num_pdfs, size=n // 3 + 1), 3)[:n].astype(np.int32)
        x = rng.standard_normal((n, dim)).astype(np.float32) + 5.0  # the offset is removed by CMVN
        x[np.arange(n), targets % dim] += 3.0
        feats[utt], pdfs[utt] = x, targets
    spk = {u: u.split("-")[0] for u in utts}
    write_ark_scp(path / "feats.ark", path / "feats.scp", feats.items())
    write_ark_scp(path / "pdf.ark", path / "pdf.scp", pdfs.items())
    if cmvn == "speaker":
        stats = {s: compute_cmvn_stats([feats[u] for u in utts if spk[u] == s]) for s in sorted(set(spk.values()))}
    else:
        stats = {"global": compute_cmvn_stats(feats.values())}
    write_ark_scp(path / "cmvn.ark", path / "cmvn.scp", stats.items())
    write_text(path / "utt2num_frames", "".join(f"{u} {len(feats[u])}\n" for u in utts))
    write_text(path / "utt2spk", "".join(f"{u} {spk[u]}\n" for u in utts))
    FeaturePipeline(fbank=FbankConfig(num_mel_bins=dim), cmvn=cmvn, delta_order=1).save(path / "pipeline.json")
    return path


# -- sampler ----------------------------------------------------------------------------------------------------


def test_padding_waste_at_most_3_percent_on_wsj_like_lengths() -> None:
    lengths = wsj_like_lengths()
    sampler = BucketingSampler(lengths, batch_size=24, seed=1)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert padding_waste(lengths, batches) <= 0.03
        assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))  # every utterance once
    rng = np.random.default_rng(0)
    random_batches = np.array_split(rng.permutation(len(lengths)), len(lengths) // 24)
    assert padding_waste(lengths, random_batches) > 0.2  # what bucketing saves


def test_padding_waste_is_exact_on_hand_worked_batches() -> None:
    """Worked by hand: the figures in README and docs/PERFORMANCE.md come from this function."""
    assert padding_waste(np.array([1, 3]), [[0, 1]]) == pytest.approx(1 / 3)  # 4 real frames of 2 x 3
    assert padding_waste(np.array([1, 3]), [[0], [1]]) == 0.0  # every utterance alone: nothing padded
    lengths = np.array([5, 2, 2, 7, 1])
    batches = [[3, 0], [1, 2, 4]]  # padded 2 x 7 + 3 x 2 = 20 frames, 17 of them real
    assert padding_waste(lengths, batches) == pytest.approx(3 / 20)
    # the same figure from the padded arrays themselves, as a batch of the loader holds them
    masks = [np.arange(lengths[b].max())[None, :] < lengths[b][:, None] for b in map(np.array, batches)]
    real, padded = sum(m.sum() for m in masks), sum(m.size for m in masks)
    assert padding_waste(lengths, batches) == pytest.approx(1 - real / padded)


def test_frame_budget_is_respected_and_long_utterances_get_their_own_batch() -> None:
    lengths = np.array([50, 60, 70, 400, 80, 90, 100, 110] * 5)
    sampler = BucketingSampler(lengths, batch_size=None, max_frames=300, seed=0)
    batches = list(sampler)
    for b in batches:
        assert len(b) * lengths[b].max() <= 300 or len(b) == 1
    assert sorted(sum(batches, [])) == list(range(len(lengths)))


def test_epochs_are_reproducible_and_differ() -> None:
    lengths = wsj_like_lengths(2000)
    a, b = BucketingSampler(lengths, seed=3), BucketingSampler(lengths, seed=3)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    b.set_epoch(2)
    assert list(a) != list(b)
    assert list(BucketingSampler(lengths, seed=4)) != list(BucketingSampler(lengths, seed=3))


def test_drop_last_and_exclusive_options() -> None:
    lengths = np.arange(1, 51)
    assert all(len(b) == 24 for b in BucketingSampler(lengths, batch_size=24, drop_last=True, pool_batches=1))
    assert sum(map(len, BucketingSampler(lengths, batch_size=24))) == 50
    assert list(BucketingSampler(np.arange(1, 4), batch_size=24, drop_last=True)) != []  # the only batch stays
    with pytest.raises(UsageError, match="exactly one"):
        BucketingSampler(lengths, batch_size=24, max_frames=100)


def test_ranks_get_disjoint_equally_long_lists_covering_the_global_batches() -> None:
    lengths = wsj_like_lengths(1001)
    one = BucketingSampler(lengths, batch_size=24, seed=5)
    ranks = [BucketingSampler(lengths, batch_size=24, seed=5, rank=r, world_size=3) for r in range(3)]
    per_rank = [list(s) for s in ranks]
    assert len({len(p) for p in per_rank}) == 1 == len({len(s) for s in ranks})
    for k, global_batch in enumerate(one):
        parts = [per_rank[r][k] for r in range(3)]
        assert all(parts)
        assert sorted(sum(parts, [])) == sorted(global_batch)
        assert ranks[0].batch_num_frames(k) == lengths[global_batch].sum()


def test_state_dict_resumes_mid_epoch_and_refuses_other_data() -> None:
    lengths = wsj_like_lengths(500)
    sampler = BucketingSampler(lengths, seed=7)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.position = 5
    state = sampler.state_dict()
    fresh = BucketingSampler(lengths, seed=7)
    fresh.load_state_dict(state)
    fresh.set_epoch(2)  # the loop selects the epoch it resumes: the position stays
    assert list(fresh) == full[5:]
    fresh.set_epoch(3)  # the next epoch starts at its first batch
    sampler.set_epoch(3)
    sampler.position = 0
    assert list(fresh) == list(sampler) and len(list(fresh)) == len(full)
    with pytest.raises(UsageError, match="num_utts"):
        BucketingSampler(lengths[:-1], seed=7).load_state_dict(state)


# -- dataset ----------------------------------------------------------------------------------------------------


def test_dataset_pads_and_applies_the_pipeline(tmp_path: Path) -> None:
    d = make_prepared_dir(tmp_path / "data", [7, 12, 9, 4])
    utts, lengths = filter_by_length(d, 10, report := Report("train"))
    assert len(utts) == 3 and report.skipped == {"train: longer than --max-train-frames 10": ["spk1-utt001"]}
    ds = UtteranceDataset(d, num_pdfs=4, utts=utts)
    loader = make_loader(ds, BucketingSampler(lengths, batch_size=3, shuffle=False), num_workers=0)
    (batch,) = list(loader)
    batch.check()
    assert batch.feats.shape == (3, 9, 10) and batch.feats.dtype == torch.float32  # 5 dims + deltas
    assert batch.lengths.tolist() == [4, 7, 9]
    assert (batch.targets[0, 4:] == PAD_TARGET).all() and (batch.targets[2] != PAD_TARGET).all()
    assert (batch.feats[0, 4:] == 0).all()
    single, _ = ds[ds.utts.index("spk1-utt003")]
    torch.testing.assert_close(batch.feats[0, :4], single)
    assert abs(float(batch.feats[..., :5].sum())) < 20  # CMVN removed the +5 offset


def test_nan_features_name_the_utterance_even_from_a_worker(tmp_path: Path) -> None:
    d = make_prepared_dir(tmp_path / "data", [5, 6])
    import kaldiio

    feats = {k: v.copy() for k, v in kaldiio.load_scp_sequential(str(d / "feats.scp"))}
    feats["spk1-utt001"][2, 1] = np.nan
    write_ark_scp(d / "feats.ark", d / "feats.scp", feats.items())
    ds = UtteranceDataset(d, num_pdfs=4)
    loader = make_loader(ds, BucketingSampler(ds.lengths, batch_size=2, shuffle=False), num_workers=1)
    with pytest.raises(AsrBnError, match=r"^\S+feats.scp: utterance spk1-utt001 has NaN/Inf features") as e:
        for batch in loader:
            batch.check()
    assert "\n" not in str(e.value)


def test_cache_gives_the_same_batches(tmp_path: Path) -> None:
    """--cache holds the features in RAM: the batches (CMVN, deltas, padding, targets) are those read from disk."""
    d = make_prepared_dir(tmp_path / "data", [5, 9, 7, 4, 6], num_speakers=2)
    sampler = BucketingSampler([5, 9, 7, 4, 6], batch_size=2, seed=3)
    cached_set = UtteranceDataset(d, num_pdfs=4, cache=True)
    (d / "feats.ark").rename(d / "moved.ark")  # a cached dataset no longer needs the archive
    for epoch in range(2):
        sampler.set_epoch(epoch)
        cached = list(make_loader(cached_set, sampler, num_workers=0))
        (d / "moved.ark").rename(d / "feats.ark")
        read = list(make_loader(UtteranceDataset(d, num_pdfs=4), sampler, num_workers=0))
        (d / "feats.ark").rename(d / "moved.ark")
        assert len(cached) == len(read) == 3
        for a, b in zip(cached, read):
            assert a.utts == b.utts
            torch.testing.assert_close(a.feats, b.feats, rtol=0, atol=0)
            assert torch.equal(a.targets, b.targets) and torch.equal(a.lengths, b.lengths)


@pytest.mark.parametrize("slow_kills", [False, True])
def test_a_process_exits_while_a_loader_holds_its_workers(tmp_path: Path, slow_kills: bool) -> None:
    """Workers ignore SIGTERM, which is how multiprocessing ends them at exit: a loader still alive then (here a
    global iterator, as an exception's traceback would hold it) must not keep the process from exiting. With
    `slow_kills` the main process pauses after each kill, as on a loaded machine, so that torch's SIGCHLD handler
    runs between two kills (it raised there, the second worker lived on, and a CI run hung at this exit)."""
    d = make_prepared_dir(tmp_path / "data", [5, 6, 7])
    pause = ("import multiprocessing, time\nkill = multiprocessing.Process.kill\n"
             "multiprocessing.Process.kill = lambda self: (kill(self), time.sleep(0.3))\n") if slow_kills else ""
    script = pause + (
        "from asr_bn.batching import BucketingSampler, UtteranceDataset, make_loader\n"
        f"ds = UtteranceDataset({str(d)!r}, num_pdfs=4)\n"
        "it = iter(make_loader(ds, BucketingSampler(ds.lengths, batch_size=1, shuffle=False), num_workers=2))\n"
        "next(it)\n"
        "print('exiting', flush=True)\n"
    )
    try:
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the process did not exit with its loader's workers alive: {e.stdout!r} "
                             f"{(e.stderr or b'')[-2000:]!r}") from None
    assert run.returncode == 0 and run.stdout == "exiting\n" and "Traceback" not in run.stderr, run.stderr[-2000:]


def test_target_beyond_the_outputs_is_an_error(tmp_path: Path) -> None:
    d = make_prepared_dir(tmp_path / "data", [5, 6], num_pdfs=4)
    with pytest.raises(AsrBnError, match="pdf-id 3, outside the model's 3 outputs"):
        for i in range(2):
            UtteranceDataset(d, num_pdfs=3)[i]


def test_empty_after_filter_names_the_filter(tmp_path: Path) -> None:
    d = make_prepared_dir(tmp_path / "data", [50, 60])
    with pytest.raises(AsrBnError, match="2 longer than --max-train-frames 10.*raise --max-train-frames"):
        filter_by_length(d, 10, Report("train"))
    report = Report("train")  # one skip under the same reason already, from another dir
    assert filter_by_length(make_prepared_dir(tmp_path / "other", [5, 70]), 10, report)[0] == ["spk0-utt000"]
    with pytest.raises(AsrBnError, match=r"left to train on \(2 longer than"):  # this call's skips, not 3
        filter_by_length(d, 10, report)


def test_a_key_twice_in_a_prepared_table_is_an_error(tmp_path: Path) -> None:
    """pdf.scp listing an utterance twice took the last line silently; the one table reader names both lines."""
    d = make_prepared_dir(tmp_path / "data", [5, 6])
    lines = (d / "pdf.scp").read_text().splitlines()
    (d / "pdf.scp").write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(AsrBnError, match=rf"pdf\.scp: key '{lines[0].split()[0]}' appears twice \(lines 1 and 3\)"):
        filter_by_length(d, None, Report("train"))


def test_targets_of_a_dir_whose_path_has_a_colon(tmp_path: Path) -> None:
    """pdf.scp's `ark:offset` splits at the last colon only, as Kaldi's does (a path may hold colons)."""
    d = make_prepared_dir(tmp_path / "run:1" / "data", [5, 6])
    utts = [line.split()[0] for line in (d / "pdf.scp").read_text().splitlines()]
    targets = read_targets(d, utts)
    assert [len(targets[u]) for u in utts] == [5, 6]
