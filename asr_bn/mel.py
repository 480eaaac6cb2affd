"""Kaldi's mel filterbank (MelBanks) and its VTLN warping, as numpy: used by the features and, when options are
parsed, by FbankConfig to refuse mel bins that cover no FFT bin (so the CLI refuses them before reading audio)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from asr_bn.errors import UsageError

__all__ = ["MelOptions", "mel_scale", "inverse_mel_scale", "vtln_warp_freq", "mel_banks"]


class MelOptions(Protocol):
    """The options of a mel filterbank (FbankConfig has them all)."""

    num_mel_bins: int
    padded_window_size: int
    sample_frequency: float
    low_freq: float
    high_freq: float
    vtln_low: float
    vtln_high: float


def mel_scale(f: np.ndarray | float) -> np.ndarray | float:
    """Hz to mel, as Kaldi's MelBanks::MelScale."""
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def inverse_mel_scale(m: np.ndarray | float) -> np.ndarray | float:
    """Mel to Hz (MelBanks::InverseMelScale)."""
    return 700.0 * (np.exp(np.asarray(m, dtype=np.float64) / 1127.0) - 1.0)


def vtln_warp_freq(
    vtln_low: float, vtln_high: float, low: float, high: float, warp: float, freq: np.ndarray
) -> np.ndarray:
    """Kaldi's MelBanks::VtlnWarpFreq: piecewise-linear warp of `freq` by 1/warp between the two cut-offs."""
    lo = vtln_low * max(1.0, warp)
    hi = vtln_high * min(1.0, warp)
    scale = 1.0 / warp
    f_lo, f_hi = scale * lo, scale * hi
    if not (lo > low and hi < high):
        raise UsageError(
            f"vtln_warp={warp} moves the VTLN cut-offs ({lo:g}, {hi:g} Hz) outside ({low:g}, {high:g}) Hz; "
            "use a warp factor nearer 1 or change vtln_low/vtln_high"
        )
    scale_left = (f_lo - low) / (lo - low)
    scale_right = (high - f_hi) / (high - hi)
    out = np.where(
        freq < lo,
        low + scale_left * (freq - low),
        np.where(freq < hi, scale * freq, high + scale_right * (freq - high)),
    )
    return np.where((freq < low) | (freq > high), freq, out)


def mel_banks(cfg: MelOptions, vtln_warp: float) -> np.ndarray:
    """Kaldi's MelBanks as a dense (padded/2 + 1, num_mel_bins) float32 matrix (the Nyquist row is zero)."""
    num_bins = cfg.num_mel_bins
    padded = cfg.padded_window_size
    num_fft_bins = padded // 2
    nyquist = 0.5 * cfg.sample_frequency
    low = cfg.low_freq
    high = cfg.high_freq if cfg.high_freq > 0 else nyquist + cfg.high_freq
    mel_low, mel_high = mel_scale(low), mel_scale(high)
    delta = (mel_high - mel_low) / (num_bins + 1)
    edges = mel_low + np.arange(num_bins + 2, dtype=np.float64) * delta
    if vtln_warp != 1.0:
        vtln_low = cfg.vtln_low
        vtln_high = cfg.vtln_high + nyquist if cfg.vtln_high < 0 else cfg.vtln_high
        if not (low < vtln_low < high and 0 < vtln_high < high and vtln_high > vtln_low):
            raise UsageError(
                f"bad VTLN cut-offs vtln_low={cfg.vtln_low} vtln_high={cfg.vtln_high} for the mel range "
                f"({low:g}, {high:g}) Hz (need low_freq < vtln_low < vtln_high < high_freq)"
            )
        edges = mel_scale(vtln_warp_freq(vtln_low, vtln_high, low, high, vtln_warp, inverse_mel_scale(edges)))
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (num_bins, 1)
    mel = mel_scale(np.arange(num_fft_bins, dtype=np.float64) * (cfg.sample_frequency / padded))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    active = (mel > left) & (mel < right)
    if not active.any(axis=1).all():  # Kaldi's MelBanks asserts that every bin covers an FFT bin
        empty = int(np.argmin(active.any(axis=1)))
        raise UsageError(
            f"--num-mel-bins {num_bins} is too large for a {padded}-point FFT at {cfg.sample_frequency:g} Hz (mel "
            f"bin {empty} covers no FFT bin, as Kaldi refuses); use fewer mel bins or longer frames"
        )
    weights = np.where(active, np.where(mel <= center, up, down), 0.0)
    out = np.zeros((num_fft_bins + 1, num_bins), dtype=np.float32)
    out[:num_fft_bins] = weights.T
    return out
