"""HMM-GMM training and alignment, checked against Kaldi's own yesno run (model, tree, topology, alignments) and by
training a monophone system on yesno whose alignments must spell out the transcripts."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_bn.alignments import read_alignments, read_transition_model
from asr_bn.data import load_data_dir
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.cmvn import add_deltas, apply_cmvn, compute_cmvn_stats
from asr_bn.features import FbankConfig
from asr_bn.gmm.align import align, AlignConfig
from asr_bn.gmm.features import gmm_features
from asr_bn.gmm.mono import MonoConfig, train_mono
from asr_bn.gmm.system import GmmSystem, make_topology
from asr_bn.lang import Lang, read_lang
from asr_bn.report import Report
from conftest import run_kaldi_bytes, yesno_gmm_inputs

FAST = MonoConfig(num_iters=6, max_iter_inc=4, total_gauss=60, realign_iters=(1, 2, 3, 4))


@pytest.fixture(scope="module")
def yesno(yesno_root: Path) -> tuple[dict[str, np.ndarray], dict[str, str], Lang]:
    """Our GMM features (fbank → DCT → CMVN → deltas) of the yesno training set, its transcripts and lang."""
    return (*yesno_gmm_inputs(yesno_root), read_lang(yesno_root / "data" / "lang"))


def _phones(lang: Lang, words: str) -> list[int]:
    prons = lang.pronunciations()
    return [lang.phones[p] for w in words.split() for p in prons[w][0]]


def test_gmm_features_are_normalized_cepstra_with_deltas(yesno: tuple) -> None:
    feats, _, _ = yesno
    assert all(f.dtype == np.float32 and f.shape[1] == 39 for f in feats.values())
    static = np.concatenate([f[:, :13] for f in feats.values()])  # one speaker: its mean is removed
    np.testing.assert_allclose(static.mean(axis=0), 0.0, atol=1e-3)


def test_topology_tree_and_model_are_kaldis(yesno_root: Path, tmp_path: Path) -> None:
    kaldi_mdl = yesno_root / "exp" / "mono" / "final.mdl"
    kaldi_tm = read_transition_model(kaldi_mdl)
    assert make_topology([2, 3], [1]) == kaldi_tm.topology  # utils/gen_topo.pl's layout
    system = GmmSystem.load(kaldi_mdl)
    system.save(tmp_path, read_lang(yesno_root / "data" / "lang").phones)
    assert (tmp_path / "tree").read_bytes() == (yesno_root / "exp" / "mono" / "tree").read_bytes()
    assert (tmp_path / "topo").read_text().split() == (yesno_root / "data" / "lang" / "topo").read_text().split()
    ours, theirs = (tmp_path / "final.mdl").read_bytes(), kaldi_mdl.read_bytes()
    assert len(ours) == len(theirs)
    our_tm = read_transition_model(tmp_path / "final.mdl")
    assert our_tm.topology == kaldi_tm.topology and our_tm.tuples == kaldi_tm.tuples
    np.testing.assert_allclose(our_tm.log_probs, kaldi_tm.log_probs, atol=1e-4)  # restored through an MLE update
    # The GMMs are written byte for byte as Kaldi did, but for the last bit of a few means·invvars entries.
    head = len(kaldi_tm.to_kaldi(binary=True))
    differing = np.count_nonzero(np.frombuffer(ours[head:], np.uint8) != np.frombuffer(theirs[head:], np.uint8))
    assert differing <= 16
    frames = np.random.default_rng(0).normal(size=(4, 39)).astype(np.float32)
    loglikes = system.log_likelihoods(frames)
    assert loglikes.shape == (4, 11)
    np.testing.assert_allclose(loglikes[2, 7], system.am.log_likelihood(7, frames[2]), rtol=1e-5)


def _kaldi_yesno_mono(yesno_root: Path) -> tuple[dict[str, np.ndarray], dict[str, list[int]], Path]:
    """Kaldi's yesno MFCCs with CMVN and deltas (as train_mono.sh), its ali.1.gz and the final.mdl that aligned them."""
    import kaldiio

    raw = dict(kaldiio.load_ark(str(yesno_root / "data" / "train_yesno" / "data" / "raw_mfcc_train_yesno.1.ark")))
    stats = compute_cmvn_stats(raw.values())
    feats = {u: add_deltas(torch.from_numpy(np.asarray(apply_cmvn(m, stats), np.float32))).numpy() for u, m in raw.items()}
    alis = {lab.utt: [int(t) for t in lab.values] for lab in read_alignments(yesno_root / "exp" / "mono" / "ali.1.gz")}
    return feats, alis, yesno_root / "exp" / "mono" / "final.mdl"


def test_alignment_agrees_with_kaldis(yesno_root: Path, tmp_path: Path) -> None:
    """Kaldi's model on Kaldi's MFCCs (apply-cmvn + add-deltas as train_mono.sh) realigned here ≈ Kaldi's ali.1.gz."""
    feats, kaldi_alis, model = _kaldi_yesno_mono(yesno_root)
    lang = read_lang(yesno_root / "data" / "lang")
    text = {}
    for line in (yesno_root / "data" / "train_yesno" / "text").read_text().splitlines():
        utt, words = line.split(maxsplit=1)
        if utt in feats:
            text[utt] = words
    report = align(GmmSystem.load(model), feats, text, lang, tmp_path / "ali")
    assert report.num_skipped == 0 and report.counts["aligned"] == len(feats) == 8
    tm = read_transition_model(model)
    kaldi = {u: np.asarray(a) for u, a in kaldi_alis.items()}
    ours = {lab.utt: lab.values for lab in read_alignments(tmp_path / "ali")}
    assert sorted(ours) == sorted(feats)
    same = sum(int(np.sum(ours[u] == kaldi[u])) for u in ours)
    total = sum(len(kaldi[u]) for u in ours)
    # Kaldi aligned with its 38th model and CMVN over all 31 files; we use final.mdl (40) and 8 files.
    assert same / total > 0.99
    for u in ours:
        assert [p for p, _, _ in tm.phone_segments(ours[u])] == [p for p, _, _ in tm.phone_segments(kaldi[u])]


def test_network_alignment_reproduces_kaldis(yesno_root: Path, tmp_path: Path) -> None:
    """align(network=True) with log-likelihoods that favour the pdfs of Kaldi's own ali.1.gz gives back exactly those
    alignments (every transition-id of all 31 utterances); another width is an error, NaN rows a named skip."""
    model = yesno_root / "exp" / "mono" / "final.mdl"
    tm = read_transition_model(model)
    kaldi = {lab.utt: lab.values for lab in read_alignments(yesno_root / "exp" / "mono" / "ali.1.gz")}
    loglikes = {}
    for utt, tids in kaldi.items():
        m = np.full((len(tids), tm.num_pdfs), -20.0, dtype=np.float32)
        m[np.arange(len(tids)), tm.to_pdfs(tids)] = 0.0
        loglikes[utt] = m
    text = dict(line.split(maxsplit=1) for line in (yesno_root / "data/train_yesno/text").read_text().splitlines())
    lang, system = read_lang(yesno_root / "data" / "lang"), GmmSystem.load(model)
    counted = _CountedReads(loglikes)  # as an scp table: a matrix read from disk each time it is asked for
    report = align(system, counted, text, lang, tmp_path / "ali", network=True)
    assert report.counts["aligned"] == 31 and report.num_skipped == 0
    assert max(counted.reads.values()) == 2  # once for the checks, once to align (Kaldi: once, from a pipe)
    ours = {lab.utt: lab.values for lab in read_alignments(tmp_path / "ali")}
    assert sorted(ours) == sorted(kaldi) and all(np.array_equal(ours[u], kaldi[u]) for u in kaldi)
    assert (tmp_path / "ali" / "final.mdl").read_bytes()[:2] == b"\0B"  # the HMM, written as Kaldi does
    bad = next(iter(kaldi))
    loglikes[bad] = np.full_like(loglikes[bad], np.nan)
    report = align(system, loglikes, text, lang, tmp_path / "ali2", network=True)
    assert report.skipped == {"NaN or infinite log-likelihoods": [bad]} and report.counts["aligned"] == 30
    loglikes[bad] = np.zeros((5, 3), np.float32)
    with pytest.raises(AsrBnError, match=f"utterance {bad}: log-likelihoods have shape \\(5, 3\\) but the model has 11"):
        align(system, loglikes, text, lang, tmp_path / "ali3", network=True)


class _CountedReads(Mapping[str, np.ndarray]):
    """A table of matrices that counts how often each is asked for (`in` does not count: the keys are known)."""

    def __init__(self, mats: dict[str, np.ndarray]) -> None:
        self.mats, self.reads = mats, dict.fromkeys(mats, 0)

    def __getitem__(self, utt: str) -> np.ndarray:
        self.reads[utt] += 1
        return self.mats[utt]

    def __contains__(self, utt: object) -> bool:
        return utt in self.mats

    def __iter__(self) -> Iterator[str]:
        return iter(self.mats)

    def __len__(self) -> int:
        return len(self.mats)


def test_train_mono_and_align_yesno(yesno: tuple, tmp_path: Path) -> None:
    feats, text, lang = yesno
    system, report = train_mono(feats, text, lang, tmp_path / "mono", FAST)
    assert report.num_skipped == 0 and report.counts["aligned"] == 31
    for name in ("final.mdl", "tree", "phones.txt", "topo", "iterations.jsonl", "config.json", "report.json"):
        assert (tmp_path / "mono" / name).is_file(), name
    import json

    history = [json.loads(line) for line in (tmp_path / "mono" / "iterations.jsonl").read_text().splitlines()]
    assert len(history) == FAST.num_iters
    assert history[-1]["avg_like"] > history[0]["avg_like"] + 5  # the model learned far more than a global Gaussian
    assert 11 < history[-1]["num_gauss"] <= FAST.total_gauss

    align_report = align(system, feats, text, lang, tmp_path / "ali", AlignConfig(num_jobs=2))
    assert align_report.num_skipped == 0
    assert (tmp_path / "ali" / "num_jobs").read_text() == "2\n"
    tm = read_transition_model(tmp_path / "ali" / "final.mdl")
    labels = list(read_alignments(tmp_path / "ali"))
    assert {lab.path.name for lab in labels} == {"ali.1.gz", "ali.2.gz"}
    assert sorted(lab.utt for lab in labels) == sorted(feats)
    sil = lang.phones["SIL"]
    for lab in labels:
        assert len(lab.values) == feats[lab.utt].shape[0]
        phones = [p for p, _, _ in tm.phone_segments(lab.values) if p != sil]
        assert phones == _phones(lang, text[lab.utt]), lab.utt
    first, second = sorted(feats)[:2]  # another dimension: at the start one line, later the utterance named
    with pytest.raises(AsrBnError, match=r"features of dimension \[36\] but final.mdl models 39"):
        system.check_features({u: feats[u][:, :36] for u in feats}, "final.mdl")
    with pytest.raises(AsrBnError, match=f"utterance {second}: features of dimension 36 but the model's are 39"):
        align(system, {first: feats[first], second: feats[second][:, :36]}, text, lang, tmp_path / "mixed")
    reloaded = GmmSystem.load(tmp_path / "ali" / "final.mdl")
    some = next(iter(feats.values()))[:50]
    np.testing.assert_allclose(reloaded.log_likelihoods(some), system.log_likelihoods(some), rtol=1e-5, atol=1e-3)


def test_unusable_utterances_are_named(yesno: tuple, tmp_path: Path) -> None:
    feats, text, lang = yesno
    utts = sorted(feats)[:6]
    feats = {u: feats[u] for u in utts}
    text = {u: text[u] for u in utts}
    oov, short, no_feats = utts[0], utts[1], "extra_utt"
    text[oov] = text[oov] + " MAYBE"
    feats[short] = feats[short][:5]  # 8 words cannot fit into 5 frames
    text[no_feats] = "YES"
    # --oov-policy skip: the utterance with a word outside the lexicon is named, not mapped to oov.txt's <SIL>
    _, report = train_mono(feats, text, lang, tmp_path / "mono", dataclasses.replace(FAST, oov_policy="skip"))
    assert report.skipped["words not in the lexicon"] == [oov]
    assert report.skipped["too few frames for its transcript"] == [short]
    assert report.skipped["no features"] == [no_feats]
    assert report.counts["aligned"] == 4
    saved = (tmp_path / "mono" / "report.json").read_text()
    assert oov in saved and short in saved and "MAYBE" in saved
    assert lang.oov == "<SIL>" and "words mapped to <SIL>" not in report.counts


def test_errors_are_one_line(tmp_path: Path, yesno_root: Path) -> None:
    with pytest.raises(UsageError, match="realign_iters"):
        MonoConfig(num_iters=5, realign_iters=(1, 7)).validate()
    bad = tmp_path / "final.mdl"
    bad.write_bytes(b"\0B<Nnet3> ")
    with pytest.raises(AsrBnError, match=str(bad)):
        GmmSystem.load(bad)
    truncated = tmp_path / "truncated.mdl"
    truncated.write_bytes((yesno_root / "exp" / "mono" / "final.mdl").read_bytes()[:5000])
    with pytest.raises(AsrBnError, match="truncated"):
        GmmSystem.load(truncated)


def test_reproducible_split_allocates_like_kaldi() -> None:
    """Our Gaussian split gives each pdf as many components as kaldi-hmm-gmm's SplitByCount does."""
    from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg

    from asr_bn.gmm.estimate import split_by_count

    rng = np.random.default_rng(0)
    kaldi, ours = khg.AmDiagGmm(), khg.AmDiagGmm()
    for _ in range(30):
        gmm = khg.DiagGmm(1, 5)
        gmm.set_weights(np.ones(1, np.float32))
        gmm.set_invvars_and_means(rng.uniform(0.5, 2, (1, 5)).astype(np.float32), rng.normal(size=(1, 5)).astype(np.float32))
        gmm.compute_gconsts()
        kaldi.add_pdf(gmm)
        ours.add_pdf(gmm)
    occs = rng.uniform(0, 3000, 30).astype(np.float32)
    occs[3] = 0.0  # a pdf never seen keeps its single Gaussian
    parents = [np.asarray(ours.get_pdf(p).means)[0] for p in range(30)]
    kaldi.split_by_count(occs, 400, 0.01, 0.25, 20.0)
    split_by_count(ours, occs, 400, 0.01, 0.25, 20.0)
    assert [ours.num_gauss_in_pdf(p) for p in range(30)] == [kaldi.num_gauss_in_pdf(p) for p in range(30)]
    assert ours.num_gauss == kaldi.num_gauss and ours.num_gauss_in_pdf(3) == 1
    for p in range(30):  # a split halves a weight and moves the two means apart symmetrically
        weights, means = np.asarray(ours.get_pdf(p).weights), np.asarray(ours.get_pdf(p).means)
        np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-6)
        np.testing.assert_allclose(weights @ means, parents[p], atol=1e-5)


def test_kaldi_mfcc_dir_gives_kaldis_gmm_features(yesno_root: Path, kaldi_bundle: Path, tmp_path: Path) -> None:
    """A Kaldi data dir (compressed MFCC as make_mfcc.sh writes, no pipeline.json) gives its features as they are,
    with per-speaker CMVN and deltas: Kaldi's apply-cmvn --utt2spk | add-deltas on the same dir."""
    import kaldiio

    from asr_bn.gmm.features import prepared_gmm_features

    src, data = yesno_root / "data" / "train_yesno", tmp_path / "data"
    data.mkdir()
    (data / "text").write_text((src / "text").read_text())
    wavs = [line.split() for line in (src / "wav.scp").read_text().splitlines()]
    (data / "wav.scp").write_text("".join(f"{u} {yesno_root / w}\n" for u, w in wavs))
    utts = sorted(line.split()[0] for line in (src / "text").read_text().splitlines())
    spk = {u: "a" if i < len(utts) // 2 else "b" for i, u in enumerate(utts)}  # two speakers: CMVN per speaker
    (data / "utt2spk").write_text("".join(f"{u} {spk[u]}\n" for u in utts))
    (data / "spk2utt").write_text("".join(f"{s} {' '.join(u for u in utts if spk[u] == s)}\n" for s in "ab"))
    mfcc = run_kaldi_bytes(kaldi_bundle, "compute-mfcc-feats", "--sample-frequency=8000", "--use-energy=false",
                           f"scp:{data / 'wav.scp'}", "ark:-")
    run_kaldi_bytes(kaldi_bundle, "copy-feats", "--compress=true", "ark:-",
                    f"ark,scp:{tmp_path / 'mfcc.ark'},{data / 'feats.scp'}", stdin=mfcc)
    run_kaldi_bytes(kaldi_bundle, "compute-cmvn-stats", f"--spk2utt=ark:{data / 'spk2utt'}",
                    f"scp:{data / 'feats.scp'}", f"ark:{tmp_path / 'cmvn.ark'}")
    normed = run_kaldi_bytes(kaldi_bundle, "apply-cmvn", f"--utt2spk=ark:{data / 'utt2spk'}",
                             f"ark:{tmp_path / 'cmvn.ark'}", f"scp:{data / 'feats.scp'}", "ark:-")
    expected = dict(kaldiio.load_ark(io.BytesIO(run_kaldi_bytes(kaldi_bundle, "add-deltas", "ark:-", "ark:-",
                                                                stdin=normed))))
    feats, text, report = prepared_gmm_features(data)
    assert "no pipeline.json" in " ".join(report.lines())
    assert feats.num_ceps is None and set(feats) == set(expected) == set(text)
    for utt, mat in expected.items():
        np.testing.assert_allclose(feats[utt], mat, atol=1e-4)


def test_mixup_splits_at_the_target_like_gmm_est(yesno: tuple, tmp_path: Path) -> None:
    """gmm-est --mix-up=N calls SplitByCount on every pass, also once the model has N Gaussians: a pdf whose
    occupancy share grew gets more (Kaldi's AN4 mono logs: 'target = 979 … split #Gauss from 978 to 980')."""
    from asr_bn.gmm.estimate import mle_gmm_update, PassStats

    feats, text, lang = yesno
    cfg = MonoConfig(num_iters=4, max_iter_inc=2, total_gauss=40, realign_iters=(1, 2))
    system, _ = train_mono(feats, text, lang, tmp_path / "mono", cfg)
    align(system, feats, text, lang, tmp_path / "ali")
    alis = {lab.utt: list(lab.values) for lab in read_alignments(tmp_path / "ali")}
    kaldi = GmmSystem.load(tmp_path / "mono" / "final.mdl")
    stats = PassStats(system, feats, alis)
    stats.pdf_occs = stats.pdf_occs[::-1].copy()  # occupancies that moved since the model was mixed up
    target = system.am.num_gauss
    stats.update(system, 10.0, target, 0.25)
    for pdf, pdf_stats in enumerate(stats.gauss):
        mle_gmm_update(kaldi.am.get_pdf(pdf), *pdf_stats)
    kaldi.am.split_by_count(stats.pdf_occs, target, 0.01, 0.25, 20.0)
    pdfs = range(system.am.num_pdfs)
    assert [system.am.num_gauss_in_pdf(p) for p in pdfs] == [kaldi.am.num_gauss_in_pdf(p) for p in pdfs]
    assert system.am.num_gauss > target


@pytest.mark.parametrize("num_jobs", [1, 2])
def test_training_pass_is_gmm_acc_stats_ali_and_gmm_est(yesno_root: Path, kaldi_bundle: Path, tmp_path: Path,
                                                       num_jobs: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """One pass (PassStats + update) on the same model, alignment and features as Kaldi's gmm-acc-stats-ali +
    gmm-est: the same transitions, weights, means and variances, also with --mix-up (the split Gaussians' random
    directions drawn from the C library's rand() as gmm-est draws them). With two jobs, as Kaldi's nj=2: one
    gmm-acc-stats-ali per part + gmm-sum-accs; asr-bn's forked jobs give the very bytes of its jobs run in one
    process."""
    import kaldiio

    from asr_bn import jobs
    from asr_bn.gmm.align import kaldi_split
    from asr_bn.gmm.estimate import PassStats

    feats, alis, model = _kaldi_yesno_mono(yesno_root)
    parts = kaldi_split(sorted(feats), num_jobs)
    ali = f"ark:gunzip -c {yesno_root / 'exp' / 'mono' / 'ali.1.gz'}|"
    for n, part in enumerate(parts, 1):
        kaldiio.save_ark(str(tmp_path / f"feats.{n}.ark"), {u: feats[u] for u in part})
        run_kaldi_bytes(kaldi_bundle, "gmm-acc-stats-ali", model, f"ark:{tmp_path / f'feats.{n}.ark'}", ali,
                        tmp_path / f"{n}.acc")
    run_kaldi_bytes(kaldi_bundle, "gmm-sum-accs", tmp_path / "acc",
                    *[tmp_path / f"{n}.acc" for n in range(1, num_jobs + 1)])
    target = GmmSystem.load(model).am.num_gauss + 12
    for mixup in (0, target):
        run_kaldi_bytes(kaldi_bundle, "gmm-est", f"--mix-up={mixup}", "--power=0.25", model, tmp_path / "acc",
                        tmp_path / f"kaldi_{mixup}.mdl")
        models = []
        for in_process in (False, True):
            monkeypatch.setattr(jobs, "IN_PROCESS", in_process)
            ours = GmmSystem.load(model)
            stats = PassStats(ours, feats, {u: a for u, a in alis.items() if u in feats}, parts)
            assert stats.frames == sum(m.shape[0] for m in feats.values())
            stats.update(ours, 10.0, mixup, 0.25)
            models.append(ours.model_bytes())
        assert models[0] == models[1]
        kaldi = GmmSystem.load(tmp_path / f"kaldi_{mixup}.mdl")
        np.testing.assert_allclose(ours.trans_model.log_probs, kaldi.trans_model.log_probs, atol=1e-5)
        for pdf in range(kaldi.am.num_pdfs):
            a, b = ours.am.get_pdf(pdf), kaldi.am.get_pdf(pdf)
            assert a.num_gauss == b.num_gauss
            np.testing.assert_allclose(np.asarray(a.weights), np.asarray(b.weights), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(np.asarray(a.inv_vars), np.asarray(b.inv_vars), rtol=1e-3)
            np.testing.assert_allclose(np.asarray(a.means_invvars), np.asarray(b.means_invvars), rtol=1e-3, atol=1e-3)
        assert ours.am.num_gauss == kaldi.am.num_gauss


@pytest.mark.parametrize(("min_occupancy", "remove"), [(3.0, True), (10.0, True), (1e6, True), (1e6, False)])
def test_gmm_update_is_kaldis_mle_update(yesno_root: Path, min_occupancy: float, remove: bool) -> None:
    """mle_gmm_update, from the statistics as arrays (what jobs send back), is Kaldi's MleAmDiagGmmUpdate as
    kaldi-hmm-gmm binds it, run on its own accumulator of the same frames: the same Gaussians removed (also when a
    pdf's Gaussians all lack data: the last kept; none with --remove-low-count-gaussians=false, as final.alimdl is
    estimated) and the same parameters to a float's rounding."""
    from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg

    from asr_bn.gmm.estimate import PassStats, mle_gmm_update

    feats, alis, model = _kaldi_yesno_mono(yesno_root)
    alis = {u: a for u, a in alis.items() if u in feats}
    ours, theirs = GmmSystem.load(model), GmmSystem.load(model)
    stats = PassStats(ours, feats, alis)
    acc = khg.AccumAmDiagGmm()
    acc.init(theirs.am, int(khg.GmmUpdateFlags.kGmmAll))
    tid2pdf = np.asarray(theirs.trans_model.transition_id_to_pdf_array())
    for utt, ali in alis.items():
        for frame, pdf in zip(feats[utt], tid2pdf[np.asarray(ali)].tolist()):
            acc.accumulate_for_gmm(theirs.am, frame, pdf, 1.0)
    opts = khg.MleDiagGmmOptions()
    opts.min_gaussian_occupancy = min_occupancy
    opts.remove_low_count_gaussians = remove
    khg.mle_am_diag_gmm_update(opts, acc, int(khg.str_to_gmm_flags("mvw")), theirs.am)
    for pdf, pdf_stats in enumerate(stats.gauss):
        kept, removed = mle_gmm_update(ours.am.get_pdf(pdf), *pdf_stats, min_occupancy, remove_low_count=remove)
        if remove:
            assert kept == (removed == len(pdf_stats[0]) - 1 and not (pdf_stats[0] > min_occupancy).any())
            assert kept or min_occupancy < 1e6
        else:
            assert removed == 0 and kept == len(pdf_stats[0]) > 1  # (no data is enough at this floor)
        a, b = ours.am.get_pdf(pdf), theirs.am.get_pdf(pdf)
        assert a.num_gauss == b.num_gauss
        for name in ("weights", "inv_vars", "means_invvars", "gconsts"):
            np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), rtol=1e-6,
                                       atol=1e-6, err_msg=f"pdf {pdf} {name}")


def test_initial_monophone_is_gmm_init_monos(yesno: tuple, yesno_root: Path, kaldi_bundle: Path,
                                             tmp_path: Path) -> None:
    """The monophone before its first pass is train_mono.sh's gmm-init-mono: every pdf one Gaussian with the mean
    and variance of the first 10 utterances (subset-feats --n=10 of the first job's features, in sorted order)."""
    import kaldiio

    from asr_bn.gmm.mono import _initial_system

    feats, text, lang = yesno
    _, ours = _initial_system(feats, text, lang, Report("init"))
    kaldiio.save_ark(str(tmp_path / "feats.ark"), {u: feats[u] for u in sorted(feats)})
    run_kaldi_bytes(kaldi_bundle, "gmm-init-mono", f"--train-feats=ark:subset-feats --n=10 ark:{tmp_path / 'feats.ark'} "
                    "ark:-|", yesno_root / "data" / "lang" / "topo", "39", tmp_path / "0.mdl", tmp_path / "tree")
    kaldi = GmmSystem.load(tmp_path / "0.mdl")
    assert kaldi.am.num_pdfs == ours.am.num_pdfs
    for pdf in range(kaldi.am.num_pdfs):
        a, b = ours.am.get_pdf(pdf), kaldi.am.get_pdf(pdf)
        np.testing.assert_allclose(np.asarray(a.means), np.asarray(b.means), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(a.inv_vars), np.asarray(b.inv_vars), rtol=1e-5)


def test_flat_start_is_align_equal_compileds(yesno: tuple, kaldi_bundle: Path, tmp_path: Path) -> None:
    """The flat start of seed 0 is Kaldi's: compile-train-graphs + align-equal-compiled on asr-bn's monophone tree,
    model, lexicon and transcripts give the same transition-ids on every frame of every utterance (the random path
    of each utterance is seeded by Kaldi's hash of its id); another seed draws another flat start."""
    import kaldiio

    from asr_bn.gmm.mono import flat_start, kaldi_seed
    from asr_bn.lang import lexicon_fst

    feats, text, lang = yesno
    cfg = MonoConfig(num_iters=1, max_iter_inc=1, total_gauss=20, realign_iters=())
    train_mono(feats, text, lang, tmp_path / "mono", cfg)  # its tree and model: the graphs' HMMs and transition-ids
    kaldiio.save_ark(str(tmp_path / "feats.ark"), feats)
    lexicon_fst(lang, cfg.sil_prob).write(str(tmp_path / "L.fst"))
    (tmp_path / "disambig.int").write_text("".join(f"{i}\n" for i in lang.disambig_phone_ids))
    (tmp_path / "text.int").write_text("".join(f"{u} {' '.join(str(lang.words[w]) for w in text[u].split())}\n"
                                               for u in sorted(text)))
    mono = tmp_path / "mono"
    run_kaldi_bytes(kaldi_bundle, "compile-train-graphs", f"--read-disambig-syms={tmp_path / 'disambig.int'}",
                    mono / "tree", mono / "final.mdl", tmp_path / "L.fst", f"ark:{tmp_path / 'text.int'}",
                    f"ark:{tmp_path / 'g.fsts'}")
    kaldi_text = run_kaldi_bytes(kaldi_bundle, "align-equal-compiled", f"ark:{tmp_path / 'g.fsts'}",
                                 f"ark:{tmp_path / 'feats.ark'}", "ark,t:-").decode()
    kaldi = {line.split()[0]: [int(t) for t in line.split()[1:]] for line in kaldi_text.splitlines()}
    ours = flat_start(feats, text, lang)
    assert len(kaldi) == len(feats) and ours == kaldi
    assert flat_start(feats, text, lang, dataclasses.replace(cfg, seed=1)) != kaldi
    assert kaldi_seed("0_0_1_0_1_0_0_1") == kaldi_seed("0_0_1_0_1_0_0_0") + 1  # StringHasher: the last byte adds
    assert kaldi_seed("é") == (ord("\xc3") - 256) * 7853 + (ord("\xa9") - 256)  # bytes are signed chars, as in C++


def test_first_alignments_replace_the_flat_start(yesno: tuple, tmp_path: Path) -> None:
    """train_mono from given first-pass alignments (e.g. Kaldi's align-equal-compiled): its own flat start given
    back trains the same model as its seed; an alignment of another length is one line naming the utterance."""
    from asr_bn.gmm.mono import flat_start

    feats, text, lang = yesno
    cfg = MonoConfig(num_iters=3, max_iter_inc=2, total_gauss=40, realign_iters=(1,), seed=3)
    start = flat_start(feats, text, lang, cfg)
    assert set(start) == set(feats) and all(len(start[u]) == feats[u].shape[0] for u in start)
    assert start != flat_start(feats, text, lang, dataclasses.replace(cfg, seed=4))
    train_mono(feats, text, lang, tmp_path / "seed", cfg)
    train_mono(feats, text, lang, tmp_path / "given", cfg, first_alignments=start)
    assert (tmp_path / "seed" / "final.mdl").read_bytes() == (tmp_path / "given" / "final.mdl").read_bytes()
    utt = sorted(start)[0]
    with pytest.raises(AsrBnError, match=f"utterance {utt} has .* transition-ids for") as e:
        train_mono(feats, text, lang, tmp_path / "bad", cfg, first_alignments={**start, utt: start[utt][:-1]})
    assert "\n" not in str(e.value)
    _, report = train_mono(feats, text, lang, tmp_path / "fewer", cfg,
                           first_alignments={u: start[u] for u in sorted(start)[1:]})
    assert report.num_skipped == 1 and utt in " ".join(report.lines())
    with pytest.raises(AsrBnError, match="no utterance has a first-pass alignment"):
        train_mono(feats, text, lang, tmp_path / "none", cfg, first_alignments={})


def test_output_dir_is_locked_and_report_written_last(yesno: tuple, tmp_path: Path) -> None:
    from asr_bn.io import OutputLock

    feats, text, lang = yesno
    one = dict(list(feats.items())[:2])
    system, _ = train_mono(one, text, lang, tmp_path / "mono", MonoConfig(num_iters=2, max_iter_inc=1,
                                                                             realign_iters=(1,)))
    (tmp_path / "ali").mkdir()
    (tmp_path / "ali" / "report.json").write_text("{}")  # a stale marker of an older run
    with OutputLock(tmp_path / "ali"):
        with pytest.raises(AsrBnError, match="in use by another asr-bn run"):
            align(system, one, text, lang, tmp_path / "ali")
    assert not (tmp_path / "ali" / "ali.1.gz").exists()
    align(system, one, text, lang, tmp_path / "ali")
    assert (tmp_path / "ali" / "report.json").read_text() != "{}"


def test_corrupt_models_only_raise_asr_bn_errors(yesno_root: Path, tmp_path: Path) -> None:
    """Truncations and byte flips anywhere in a real final.mdl: an AsrBnError naming the file, or a valid model."""
    good = (yesno_root / "exp" / "mono" / "final.mdl").read_bytes()
    rng = np.random.default_rng(0)
    path = tmp_path / "final.mdl"
    cases = [good[:n] for n in rng.integers(0, len(good), 40)]
    for _ in range(80):
        bad = bytearray(good)
        for i in rng.integers(0, len(good), 3):
            bad[i] = int(rng.integers(0, 256))
        cases.append(bytes(bad))
    for data in cases:
        path.write_bytes(data)
        try:
            system = GmmSystem.load(path)
        except AsrBnError as e:
            assert str(path) in str(e)
        else:
            assert np.isfinite(system.log_likelihoods(np.zeros((1, 39), np.float32))).all()


def test_prepared_features_are_read_when_asked_unless_cached(yesno_root: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A prepared dir's GMM features equal gmm_features of its fbank, are computed from feats.scp each time an
    utterance is asked for (no corpus-sized memory), and once with in_memory=True (--cache)."""
    import kaldiio

    import asr_bn.gmm.features as gmm_features_module
    from asr_bn.features import FeaturePipeline
    from asr_bn.gmm.features import prepared_gmm_features
    from asr_bn.prep import prepare_kaldi

    prep = tmp_path / "prep"
    prepare_kaldi(yesno_root / "data" / "train_yesno", prep,
                  FeaturePipeline(fbank=FbankConfig(sample_frequency=8000, num_mel_bins=23)))
    fbank = dict(kaldiio.load_scp(str(prep / "feats.scp")))
    data = load_data_dir(prep, Report("test"))
    expected = gmm_features(fbank, {u: data.utterances[u].speaker for u in fbank})
    reads: list[str] = []
    real = gmm_features_module.read_matrix
    monkeypatch.setattr(gmm_features_module, "read_matrix", lambda loc, table, key: reads.append(key) or real(loc, table, key))
    for in_memory, per_access in ((False, 1), (True, 0)):
        feats, _, _ = prepared_gmm_features(prep, in_memory=in_memory)
        assert set(feats) == set(expected) and len(reads) == len(expected)  # one pass for the CMVN statistics
        utt = next(iter(feats))
        first = feats[utt]
        reads.clear()
        np.testing.assert_allclose(feats[utt], expected[utt], atol=1e-5)
        np.testing.assert_array_equal(feats[utt], first)
        assert len(reads) == 2 * per_access
        reads.clear()
