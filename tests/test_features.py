"""Features against real references: kaldi-native-fbank (Kaldi's fbank in C++) on real AN4/yesno speech, and
hand-worked examples of Kaldi's add-deltas / compute-cmvn-stats / apply-cmvn formulas."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_bn.errors import AsrBnError, UsageError
from asr_bn.cmvn import add_deltas, apply_cmvn, compute_cmvn_stats
from asr_bn.features import FbankConfig, FeaturePipeline, compute_fbank, num_frames

knf = pytest.importorskip("kaldi_native_fbank", reason="kaldi-native-fbank (the reference) is a test extra")

FLT_EPS = float(np.finfo(np.float32).eps)


def _read_int16(path: Path) -> np.ndarray:
    return sf.read(str(path), dtype="int16")[0].astype(np.float32)


@pytest.fixture(scope="module")
def an4_waves(an4_root: Path) -> list[np.ndarray]:
    """Three real 16 kHz utterances of different lengths."""
    files = sorted((an4_root / "wav" / "an4_clstk").glob("*/*.wav"))
    return [_read_int16(f) for f in (files[0], files[7], files[40])]


@pytest.fixture(scope="module")
def yesno_waves(yesno_root: Path) -> list[np.ndarray]:
    """Two real 8 kHz utterances."""
    files = sorted((yesno_root / "waves_yesno").glob("*.wav"))
    return [_read_int16(f) for f in files[:2]]


def _knf_options(cfg: FbankConfig) -> "knf.FbankOptions":
    o = knf.FbankOptions()
    f = o.frame_opts
    f.samp_freq = cfg.sample_frequency
    f.frame_length_ms = cfg.frame_length_ms
    f.frame_shift_ms = cfg.frame_shift_ms
    f.dither = 0.0
    f.preemph_coeff = cfg.preemphasis_coefficient
    f.remove_dc_offset = cfg.remove_dc_offset
    f.window_type = cfg.window_type
    f.blackman_coeff = cfg.blackman_coeff
    f.round_to_power_of_two = cfg.round_to_power_of_two
    f.snip_edges = cfg.snip_edges
    m = o.mel_opts
    m.num_bins = cfg.num_mel_bins
    m.low_freq = cfg.low_freq
    m.high_freq = cfg.high_freq
    m.vtln_low = cfg.vtln_low
    m.vtln_high = cfg.vtln_high
    o.use_energy = cfg.use_energy
    o.raw_energy = cfg.raw_energy
    o.energy_floor = cfg.energy_floor
    o.use_log_fbank = cfg.use_log_fbank
    o.use_power = cfg.use_power
    o.htk_compat = cfg.htk_compat
    return o


def knf_fbank(wave: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """kaldi-native-fbank's features of one utterance (dither 0), (T, dim)."""
    comp = knf.OnlineFbank(_knf_options(cfg))
    comp.accept_waveform(cfg.sample_frequency, wave.tolist())
    comp.input_finished()
    rows = [comp.get_frame(i) for i in range(comp.num_frames_ready)]
    return np.stack(rows) if rows else np.zeros((0, cfg.dim), dtype=np.float32)


def _assert_log_close(ours: torch.Tensor, ref: np.ndarray, cfg: FbankConfig) -> None:
    """≤ 1e-3 absolute on every log value within 10 nats of its frame's maximum (mel bins and log-energy)."""
    assert tuple(ours.shape) == ref.shape and ours.dtype == torch.float32
    o = ours.numpy()
    mel = slice(0, cfg.num_mel_bins) if (cfg.htk_compat or not cfg.use_energy) else slice(1, cfg.dim)
    strong = ref[:, mel] >= ref[:, mel].max(axis=1, keepdims=True) - 10.0
    err = np.abs(o[:, mel] - ref[:, mel])[strong]
    assert err.max() <= 1e-3, f"max log-mel error {err.max():.2e}"
    if cfg.use_energy:
        e = cfg.num_mel_bins if cfg.htk_compat else 0
        assert np.abs(o[:, e] - ref[:, e]).max() <= 1e-3


def _option_ids(opts: dict) -> str:
    """A parametrization id naming the options that differ from the defaults."""
    return ",".join(f"{k}={v}" for k, v in opts.items()) or "defaults"


# Every option named in the issue, varied one or two at a time from the defaults (dither 0).
OPTION_SETS = [
    {},
    {"snip_edges": False},
    {"use_energy": True},
    {"use_energy": True, "raw_energy": False, "htk_compat": True, "snip_edges": False},
    {"use_energy": True, "energy_floor": 1e6},
    {"window_type": "hamming"},
    {"window_type": "hanning"},
    {"window_type": "rectangular"},
    {"window_type": "blackman", "blackman_coeff": 0.40},
    {"window_type": "sine"},
    {"low_freq": 64.0, "high_freq": -400.0},
    {"low_freq": 300.0, "high_freq": 3000.0, "num_mel_bins": 23},
    {"use_power": False},
    {"round_to_power_of_two": False},
    {"preemphasis_coefficient": 0.0, "remove_dc_offset": False},
    {"preemphasis_coefficient": 0.0},
    {"preemphasis_coefficient": 0.5, "use_energy": True, "raw_energy": False},
    {"remove_dc_offset": False},
    {"remove_dc_offset": False, "preemphasis_coefficient": 0.5, "use_energy": True},
    {"use_energy": True, "raw_energy": True, "htk_compat": True},
    {"vtln_low": 300.0, "vtln_high": 3000.0},  # at warp 1 Kaldi ignores the VTLN cut-offs
    {"frame_length_ms": 20.0, "frame_shift_ms": 5.0},
]


@pytest.mark.parametrize("opts", OPTION_SETS, ids=_option_ids)
def test_fbank_matches_knf_16k_and_8k(opts: dict, an4_waves: list, yesno_waves: list) -> None:
    for waves, rate in ((an4_waves, 16000.0), (yesno_waves, 8000.0)):
        cfg = FbankConfig(sample_frequency=rate, dither=0.0, **opts)
        for wave, ours in zip(waves, compute_fbank(waves, cfg)):
            _assert_log_close(ours, knf_fbank(wave, cfg), cfg)


def _assert_linear_close(ours: torch.Tensor, ref: np.ndarray, cfg: FbankConfig) -> None:
    """use_log_fbank=false: every mel bin within 1e-4 of the frame's total (summed) mel energy; the energy feature,
    which Kaldi keeps in the log domain, within 1e-3 absolute."""
    assert tuple(ours.shape) == ref.shape and ours.dtype == torch.float32
    o = ours.numpy()
    e = (cfg.num_mel_bins if cfg.htk_compat else 0) if cfg.use_energy else None
    mel = [i for i in range(cfg.dim) if i != e]
    total = ref[:, mel].sum(axis=1, keepdims=True)
    err = np.abs(o[:, mel] - ref[:, mel]) / total
    assert err.max() <= 1e-4, f"max linear error {err.max():.2e} of the frame's total"
    if e is not None:
        assert np.abs(o[:, e] - ref[:, e]).max() <= 1e-3


LINEAR_OPTION_SETS = [
    {"use_power": True, "snip_edges": True},
    {"use_power": True, "snip_edges": False},
    {"use_power": False, "snip_edges": True},
    {"use_power": False, "snip_edges": False},
    {"use_energy": True},
    {"use_energy": True, "raw_energy": False, "htk_compat": True, "snip_edges": False},
    {"use_energy": True, "htk_compat": True, "use_power": False},
    {"window_type": "hamming"},
    {"window_type": "rectangular", "use_power": False},
    {"window_type": "blackman", "preemphasis_coefficient": 0.5, "remove_dc_offset": False},
]


@pytest.mark.parametrize("opts", LINEAR_OPTION_SETS, ids=_option_ids)
def test_fbank_linear_domain_matches_knf(opts: dict, an4_waves: list, yesno_waves: list) -> None:
    """use_log_fbank=false, alone and with the energy, HTK order, magnitude spectra and other windows."""
    for waves, rate in ((an4_waves, 16000.0), (yesno_waves, 8000.0)):
        cfg = FbankConfig(sample_frequency=rate, dither=0.0, use_log_fbank=False, **opts)
        for wave, ours in zip(waves, compute_fbank(waves, cfg)):
            _assert_linear_close(ours, knf_fbank(wave, cfg), cfg)


def _reference_fbank(wave: np.ndarray, cfg: FbankConfig, warp: float) -> np.ndarray:
    """Kaldi's fbank in float64 numpy with kaldi-native-fbank's window function and its MelBanks warped by `warp`.

    knf's OnlineFbank always computes at warp 1 (it has no warp argument; only knf.MelBanks takes a warp factor),
    so the warped reference is built here: Kaldi's framing (snip_edges true, or false with edge reflection as in
    ExtractWindow), DC removal, raw or windowed log-energy, pre-emphasis, window, power or magnitude spectrum, knf's
    warped mel matrix, log, energy floor, HTK order. At warp 1 the same function is checked against OnlineFbank."""
    o = _knf_options(cfg)
    window = np.asarray(knf.FeatureWindowFunction(o.frame_opts).window, dtype=np.float64)
    n, shift = cfg.window_size, cfg.window_shift
    if cfg.snip_edges:
        starts = range(0, len(wave) - n + 1, shift)
    else:  # (N + shift/2) / shift frames; frame f starts at f*shift + shift/2 - n/2, reflecting at the edges
        starts = range(shift // 2 - n // 2, (len(wave) + shift // 2) // shift * shift + shift // 2 - n // 2, shift)
    pad = n + shift
    ext = np.pad(wave.astype(np.float64), pad, mode="symmetric")
    frames = np.stack([ext[pad + s : pad + s + n] for s in starts])
    if cfg.remove_dc_offset:
        frames -= frames.mean(axis=1, keepdims=True)
    raw_energy = np.log(np.maximum((frames**2).sum(axis=1), FLT_EPS))
    frames[:, 1:] -= cfg.preemphasis_coefficient * frames[:, :-1].copy()
    frames[:, 0] *= 1.0 - cfg.preemphasis_coefficient
    frames *= window
    energy = raw_energy if cfg.raw_energy else np.log(np.maximum((frames**2).sum(axis=1), FLT_EPS))
    if cfg.energy_floor > 0.0:
        energy = np.maximum(energy, math.log(cfg.energy_floor))
    spectrum = np.abs(np.fft.rfft(frames, n=cfg.padded_window_size)) ** (2 if cfg.use_power else 1)
    banks = knf.MelBanks(o.mel_opts, o.frame_opts, warp).get_matrix().astype(np.float64)
    mel = spectrum[:, : banks.shape[1]] @ banks.T
    if cfg.use_log_fbank:
        mel = np.log(np.maximum(mel, FLT_EPS))
    if not cfg.use_energy:
        return mel
    return np.concatenate([mel, energy[:, None]] if cfg.htk_compat else [energy[:, None], mel], axis=1)


# Options varied with the warp: framing, energy and HTK order, pre-emphasis, VTLN cut-offs (absolute, and negative:
# an offset from Nyquist, e.g. 4000 - 600 = 3400 Hz at 8 kHz, inside the 64..3600 Hz mel range) with mel cut-offs.
VTLN_OPTION_SETS = [
    {},
    {"snip_edges": False, "use_energy": True},
    {"vtln_low": 300.0, "vtln_high": -1000.0, "use_energy": True, "raw_energy": False, "htk_compat": True},
    {"low_freq": 64.0, "high_freq": -400.0, "vtln_low": 200.0, "vtln_high": -600.0, "snip_edges": False},
    {"vtln_low": 150.0, "vtln_high": 2500.0, "window_type": "hamming", "preemphasis_coefficient": 0.5},
]


@pytest.mark.parametrize("opts", VTLN_OPTION_SETS, ids=_option_ids)
@pytest.mark.parametrize("warp", [0.88, 1.12])
def test_fbank_vtln_warp_matches_knf_mel_banks(warp: float, opts: dict, an4_waves: list, yesno_waves: list) -> None:
    """Warped fbank against `_reference_fbank` (knf's warped MelBanks); that reference is first checked against
    knf's OnlineFbank at warp 1, with the same options."""
    for waves, rate in ((an4_waves[:2], 16000.0), (yesno_waves[:1], 8000.0)):
        cfg = FbankConfig(sample_frequency=rate, dither=0.0, **opts)
        for wave in waves:
            unwarped = _reference_fbank(wave, cfg, 1.0)
            _assert_log_close(torch.from_numpy(unwarped.astype(np.float32)), knf_fbank(wave, cfg), cfg)
            ref = _reference_fbank(wave, cfg, warp)
            assert np.abs(ref - unwarped).max() > 0.1  # the warp changes the features
            (ours,) = compute_fbank([wave], cfg, vtln_warp=warp)
            _assert_log_close(ours, ref, cfg)
        warped_cfg = FbankConfig(sample_frequency=rate, dither=0.0, vtln_warp=warp, **opts)
        per_utt = compute_fbank(waves, cfg, vtln_warp=[warp] * len(waves))
        torch.testing.assert_close(compute_fbank(waves, warped_cfg), per_utt)


@pytest.mark.parametrize("snip_edges", [True, False])
def test_num_frames_and_short_audio_match_knf(snip_edges: bool, rng: np.random.Generator) -> None:
    """Frame counts for lengths around one frame (incl. shorter than one frame and exactly one frame)."""
    cfg = FbankConfig(dither=0.0, snip_edges=snip_edges)
    lengths = [0, 1, 79, 80, 81, 239, 240, 399, 400, 401, 559, 560, 561, 16000]
    waves = [rng.normal(0, 1000, n).astype(np.float32) for n in lengths]
    feats = compute_fbank(waves, cfg)
    for n, wave, ours in zip(lengths, waves, feats):
        ref = knf_fbank(wave, cfg) if n > 0 else np.zeros((0, cfg.dim), np.float32)
        assert num_frames(n, cfg) == ref.shape[0] == ours.shape[0], n
        if ref.shape[0]:
            _assert_log_close(ours, ref, cfg)
    if snip_edges:
        assert [f.shape[0] for f in feats[:8]] == [0] * 8  # shorter than one 400-sample frame
        assert feats[8].shape == (1, 40)  # exactly one frame


def test_fbank_batching_and_dither_are_independent_of_grouping(an4_waves: list, rng: np.random.Generator) -> None:
    short = rng.normal(0, 500, 4000).astype(np.float32)
    short_copy = short.copy()
    for dither in (0.0, 1.0):
        cfg = FbankConfig(dither=dither)
        (alone,) = compute_fbank([short], cfg, seed=3)
        batched = compute_fbank([an4_waves[0], short, an4_waves[1]], cfg, seed=3)
        torch.testing.assert_close(batched[1], alone)  # float32 tolerance: BLAS may block a matmul differently
    assert np.array_equal(short, short_copy)  # the caller's audio is never modified in place
    cfg = FbankConfig(dither=1.0)
    a, b = compute_fbank([short], cfg, seed=1)[0], compute_fbank([short], cfg, seed=2)[0]
    clean = compute_fbank([short], FbankConfig(dither=0.0))[0]
    assert not torch.equal(a, b) and (a - clean).abs().max() < 0.5


def test_fbank_threads_give_the_same_features(an4_waves: list) -> None:
    """The CPU thread pool (`threads` groups of utterances at once) changes nothing and leaves torch's own thread
    setting alone (the command sets it once)."""
    cfg = FbankConfig(dither=1.0)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = compute_fbank(an4_waves, cfg, seed=5)
        pooled = compute_fbank(an4_waves, cfg, seed=5, threads=3)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(serial, pooled)


def test_fbank_accepts_tensors_and_rejects_multichannel(rng: np.random.Generator) -> None:
    wave = rng.normal(0, 1000, 8000).astype(np.float32)
    cfg = FbankConfig(dither=0.0)
    torch.testing.assert_close(compute_fbank([torch.from_numpy(wave)], cfg), compute_fbank([wave], cfg))
    with pytest.raises(UsageError, match="1-D"):
        compute_fbank([np.zeros((2, 8000), np.float32)], cfg)


# ---------------------------------------------------------------------------------------------------------------------
# Deltas: Kaldi's DeltaFeatures (feature-functions.cc), order 2, window 2.
# Δ scales:  j / 10 for j = -2..2              (10 = Σ j²)
# ΔΔ scales: Δ scales convolved with themselves = [4, 4, 1, -4, -10, -4, 1, 4, 4] / 100
# Frames outside [0, T) replicate the first / last frame.

X = [0.0, 1.0, 4.0, 9.0]  # one dimension, T = 4; padded by replication: [0,0,0,0 | 0,1,4,9 | 9,9,9,9]
DELTA = [
    (-2 * 0 - 1 * 0 + 1 * 1 + 2 * 4) / 10,  # t=0: 0.9
    (-2 * 0 - 1 * 0 + 1 * 4 + 2 * 9) / 10,  # t=1: 2.2
    (-2 * 0 - 1 * 1 + 1 * 9 + 2 * 9) / 10,  # t=2: 2.6
    (-2 * 1 - 1 * 4 + 1 * 9 + 2 * 9) / 10,  # t=3: 2.1
]
DDELTA = [  # Σ_k s_k x[t+k], k = -4..4, s = [4, 4, 1, -4, -10, -4, 1, 4, 4] / 100
    (4 * 0 + 4 * 0 + 1 * 0 - 4 * 0 - 10 * 0 - 4 * 1 + 1 * 4 + 4 * 9 + 4 * 9) / 100,  # t=0: 0.72
    (4 * 0 + 4 * 0 + 1 * 0 - 4 * 0 - 10 * 1 - 4 * 4 + 1 * 9 + 4 * 9 + 4 * 9) / 100,  # t=1: 0.55
    (4 * 0 + 4 * 0 + 1 * 0 - 4 * 1 - 10 * 4 - 4 * 9 + 1 * 9 + 4 * 9 + 4 * 9) / 100,  # t=2: 0.01
    (4 * 0 + 4 * 0 + 1 * 1 - 4 * 4 - 10 * 9 - 4 * 9 + 1 * 9 + 4 * 9 + 4 * 9) / 100,  # t=3: -0.60
]


def test_add_deltas_hand_worked() -> None:
    feats = torch.tensor([X, [2 * v for v in X]]).T  # (4, 2): the second dimension is twice the first
    out = add_deltas(feats)
    expected = torch.tensor([X, [2 * v for v in X], DELTA, [2 * v for v in DELTA], DDELTA, [2 * v for v in DDELTA]]).T
    torch.testing.assert_close(out, expected.float(), rtol=0, atol=1e-6)
    # order 1, window 1: (x[t+1] - x[t-1]) / 2 with replication → [0.5, 2, 4, 2.5]
    torch.testing.assert_close(add_deltas(feats[:, :1], order=1, window=1)[:, 1], torch.tensor([0.5, 2.0, 4.0, 2.5]))
    one = add_deltas(torch.tensor([[3.0, -1.0]]))  # a single frame: every Δ is 0
    torch.testing.assert_close(one, torch.tensor([[3.0, -1.0, 0, 0, 0, 0]]))
    assert add_deltas(torch.zeros(0, 5)).shape == (0, 15)


def test_add_deltas_matches_knf(rng: np.random.Generator) -> None:
    opts = knf.DeltaOptions()
    a = rng.normal(size=(37, 5)).astype(np.float32)
    np.testing.assert_allclose(add_deltas(torch.from_numpy(a)).numpy(), knf.compute_deltas(opts, a), atol=1e-5)
    with pytest.raises(UsageError, match=r"expected \(T, D\) features of one utterance, got shape \(2, 37, 5\)"):
        add_deltas(torch.from_numpy(np.stack([a, a])))


# ---------------------------------------------------------------------------------------------------------------------
# CMVN: Kaldi's AccCmvnStats / ApplyCmvn (transform/cmvn.cc).


def test_cmvn_stats_hand_worked_and_kaldi_readable(tmp_path: Path) -> None:
    import kaldiio

    stats = compute_cmvn_stats([np.array([[1.0, 2.0]]), torch.tensor([[3.0, 6.0]])])
    # row 0: sums 1+3, 2+6, count 2; row 1: squares 1+9, 4+36, 0
    np.testing.assert_array_equal(stats, [[4.0, 8.0, 2.0], [10.0, 40.0, 0.0]])
    assert stats.dtype == np.float64
    kaldiio.save_ark(str(tmp_path / "cmvn.ark"), {"spk1": stats})
    np.testing.assert_array_equal(kaldiio.load_ark(str(tmp_path / "cmvn.ark")).__next__()[1], stats)
    feats = np.array([[1.0, 2.0], [3.0, 6.0]], np.float32)
    np.testing.assert_array_equal(compute_cmvn_stats([feats]), knf.compute_cmvn_stats(feats))
    # Kaldi's AccCmvnStats squares in float (knf in double): 0.1f² rounded to float, then summed in double
    tenth = np.float32(0.1)
    assert compute_cmvn_stats([np.array([[tenth]])])[1, 0] == float(tenth * tenth) != float(tenth) ** 2
    with pytest.raises(AsrBnError, match="no feature matrices"):
        compute_cmvn_stats([])


def test_apply_cmvn_hand_worked() -> None:
    feats = torch.tensor([[1.0, 2.0, 1.0], [3.0, 6.0, 1.0]])
    stats = np.array([[4.0, 8.0, 2.0, 2.0], [10.0, 40.0, 2.0, 0.0]])
    # means [2, 4, 1] → x - mean
    torch.testing.assert_close(apply_cmvn(feats, stats), torch.tensor([[-1.0, -2.0, 0.0], [1.0, 2.0, 0.0]]))
    # variances 10/2-2² = 1, 40/2-4² = 4, 2/2-1² = 0 → floored to 1e-20 (scale 1e10; the constant column stays 0)
    normed = apply_cmvn(feats, stats, norm_vars=True)
    torch.testing.assert_close(normed, torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 0.0]]))
    np_out = apply_cmvn(feats.numpy(), stats, norm_vars=True)
    assert isinstance(np_out, np.ndarray) and np_out.dtype == np.float32
    np.testing.assert_allclose(np_out, normed.numpy())
    rng = np.random.default_rng(1)
    real = rng.normal(3.0, 2.0, size=(20, 4)).astype(np.float32)
    real_stats = compute_cmvn_stats([real])
    for norm_vars in (False, True):
        opts = knf.CmvnOptions()
        opts.norm_vars = norm_vars
        np.testing.assert_allclose(
            apply_cmvn(real, real_stats, norm_vars), knf.apply_cmvn(real_stats, opts, real), atol=1e-5
        )
    with pytest.raises(AsrBnError, match="count = 0"):
        apply_cmvn(feats, np.zeros((2, 4)))
    with pytest.raises(AsrBnError, match="dimension"):
        apply_cmvn(feats, np.ones((2, 3)))


# ---------------------------------------------------------------------------------------------------------------------
# Config files and the pipeline


def test_kaldi_conf_round_trip_and_errors(tmp_path: Path) -> None:
    cfg = FbankConfig(num_mel_bins=23, sample_frequency=8000.0, use_energy=True, window_type="hamming", high_freq=-200)
    conf = tmp_path / "fbank.conf"
    conf.write_text(cfg.to_kaldi_conf())
    assert FbankConfig.from_kaldi_conf(conf) == cfg
    conf.write_text("# paper setup\n--num-mel-bins=40  # 40 bins\n\n--use-energy\n--verbose=2\n--snip_edges=false\n")
    got = FbankConfig.from_kaldi_conf(conf)
    assert (got.num_mel_bins, got.use_energy, got.snip_edges, got.dim) == (40, True, False, 41)
    assert FbankConfig.from_kaldi_conf(conf, dither=0.0).dither == 0.0
    conf.write_text("--use-energy=true\n")  # no --num-mel-bins: compute-fbank-feats' 23, not FbankConfig's 40
    assert (FbankConfig.from_kaldi_conf(conf).num_mel_bins, FbankConfig.from_kaldi_conf(conf).dim) == (23, 24)
    for line, pattern in [
        ("--num-mel-bin=40", r"fbank\.conf:2: unknown option --num-mel-bin"),
        ("--num-ceps=13", "MFCC"),
        ("--allow-downsample=true", "never resamples"),
        ("--use-energy=maybe", "not a boolean"),
        ("--num-mel-bins=forty", "not a valid int"),
        ("num-mel-bins=40", "not an option"),
        ("--window-type=kaiser", "--window-type .kaiser. is not one of"),
    ]:
        conf.write_text(f"--dither=0\n{line}\n")
        with pytest.raises(UsageError, match=pattern):
            FbankConfig.from_kaldi_conf(conf)
    with pytest.raises(UsageError, match="missing.conf"):
        FbankConfig.from_kaldi_conf(tmp_path / "missing.conf")
    with pytest.raises(UsageError, match="mel range"):
        FbankConfig(sample_frequency=8000.0, high_freq=5000.0)
    with pytest.raises(UsageError, match="VTLN cut-offs"):
        FbankConfig(vtln_warp=1.1, vtln_low=10.0)
    # the boundary as Kaldi's compute-fbank-feats draws it (8 kHz, --vtln-warp=1.1 --low-freq=100): --vtln-low=100
    # is "Bad values in options: vtln-low 100 ... versus low-freq 100", --vtln-low=101 computes
    with pytest.raises(UsageError, match="VTLN cut-offs"):
        FbankConfig(sample_frequency=8000.0, vtln_warp=1.1, low_freq=100.0, vtln_low=100.0)
    FbankConfig(sample_frequency=8000.0, vtln_warp=1.1, low_freq=100.0, vtln_low=101.0)


def test_pipeline_of_derived_input(tmp_path: Path) -> None:
    """Features derived from fbank (`asr-bn gmm fmllr-feats`) carry their input and dimension: saved and read back,
    absent from an fbank pipeline's file, refused without a dimension, and named (with the command that writes
    them) when a model's pipeline and a data dir's differ in them."""
    fmllr = FeaturePipeline(cmvn="none", delta_order=0, input="fmllr 0123456789ab", input_dim=40)
    assert fmllr.output_dim == 40
    fmllr.save(tmp_path / "pipeline.json")
    assert FeaturePipeline.load(tmp_path / "pipeline.json") == fmllr
    assert "input" not in FeaturePipeline().to_dict()
    for input, dim in (("fmllr x", None), ("fbank", 40), ("fmllr x", 0)):
        with pytest.raises(UsageError, match="input_dim"):
            FeaturePipeline(input=input, input_dim=dim)
    fbank = FeaturePipeline(cmvn="none", delta_order=0)
    assert "input fbank (not fmllr" in fmllr.mismatch(fbank) and "asr-bn gmm fmllr-feats" in fmllr.mismatch(fbank)
    assert "input fmllr 0123456789ab (not fbank)" in fbank.mismatch(fmllr) and "asr-bn prep" in fbank.mismatch(fmllr)


def test_pipeline_save_load_transform(tmp_path: Path, rng: np.random.Generator) -> None:
    pipe = FeaturePipeline(FbankConfig(use_energy=True), cmvn="speaker", norm_vars=True)
    assert pipe.output_dim == 41 * 3
    pipe.save(tmp_path / "pipeline.json")
    assert FeaturePipeline.load(tmp_path / "pipeline.json") == pipe
    assert FeaturePipeline.from_dict(json.loads((tmp_path / "pipeline.json").read_text())) == pipe
    with pytest.raises(AsrBnError, match="nope.json"):
        FeaturePipeline.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(AsrBnError, match="bad.json"):
        FeaturePipeline.load(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text('{"cmvn": "sometimes"}')
    with pytest.raises(AsrBnError, match="bad2.json"):
        FeaturePipeline.load(tmp_path / "bad2.json")

    raws = [torch.from_numpy(rng.normal(size=(t, 41)).astype(np.float32)) for t in (9, 4)]
    stats = compute_cmvn_stats(raws)  # one speaker
    one = pipe.transform(raws[0], stats)
    torch.testing.assert_close(one, add_deltas(apply_cmvn(raws[0], stats, norm_vars=True)))
    with pytest.raises(UsageError, match="needs CMVN stats"):
        pipe.transform(raws[0], None)
    per_utt = FeaturePipeline(cmvn="utterance", delta_order=0, fbank=FbankConfig(use_energy=True))
    assert per_utt.output_dim == 41
    torch.testing.assert_close(per_utt.transform(raws[0], None).mean(0), torch.zeros(41), atol=1e-5, rtol=0)
    unnormalized = FeaturePipeline(cmvn="none").transform(raws[0][:, :40], None)
    assert math.isclose(float(unnormalized[0, 0]), float(raws[0][0, 0]))
