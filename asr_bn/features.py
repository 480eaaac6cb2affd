"""Kaldi-exact filterbank features in torch (batched, CPU or CUDA), Kaldi deltas and CMVN, and the one
`FeaturePipeline` that training and decoding share.

Matches Kaldi's `compute-fbank-feats`, `add-deltas`, `compute-cmvn-stats` and `apply-cmvn`; option names are
Kaldi's in snake_case. Waveforms are float arrays in the int16 range, as Kaldi reads them.

>>> cfg = FbankConfig(dither=0.0)
>>> feats = compute_fbank([np.zeros(16000, np.float32)], cfg)  # [tensor of shape (98, 40)]
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from asr_bn.config import FbankConfig
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import write_text
from asr_bn.cmvn import add_deltas, apply_cmvn, compute_cmvn_stats
from asr_bn.mel import mel_banks

__all__ = [
    "FbankConfig",
    "num_frames",
    "compute_fbank",
    "FeaturePipeline",
]

_FLT_EPSILON = float(np.finfo(np.float32).eps)  # Kaldi's std::numeric_limits<float>::epsilon()
_GROUP_FRAMES = 8192  # frames framed at once (bounds memory: 16384 x 400 floats = 26 MB)
_BLOCK_FRAMES = {"cpu": 1024, "cuda": 16384}  # rows per FFT/matmul pass: on CPU small enough to stay in cache


def num_frames(num_samples: int, cfg: FbankConfig) -> int:
    """Number of frames Kaldi makes from `num_samples` samples (feature-window.cc NumFrames, flush=true).

    The one frame-count function: alignments, batching and prep all use it.
    """
    length, shift = cfg.window_size, cfg.window_shift
    if cfg.snip_edges:
        return 0 if num_samples < length else 1 + (num_samples - length) // shift
    if num_samples <= 0:
        return 0
    return (num_samples + shift // 2) // shift


def _first_sample(frame: int, cfg: FbankConfig) -> int:
    """Index of the first sample of `frame` (Kaldi's FirstSampleOfFrame); negative when snip_edges=false."""
    shift = cfg.window_shift
    if cfg.snip_edges:
        return frame * shift
    return frame * shift + shift // 2 - cfg.window_size // 2


# ---------------------------------------------------------------------------------------------------------------------
# Cached constant tensors (window, mel matrix) per config and device.


def _window_np(cfg: FbankConfig) -> np.ndarray:
    """Kaldi's FeatureWindowFunction, computed in double and stored as float32 like Kaldi's BaseFloat vector."""
    n = cfg.window_size
    i = np.arange(n, dtype=np.float64)
    a = 2 * math.pi / (n - 1)
    kind = cfg.window_type
    if kind == "hanning":
        w = 0.5 - 0.5 * np.cos(a * i)
    elif kind == "sine":
        w = np.sin(0.5 * a * i)
    elif kind == "hamming":
        w = 0.54 - 0.46 * np.cos(a * i)
    elif kind == "povey":
        w = np.power(0.5 - 0.5 * np.cos(a * i), 0.85)
    elif kind == "rectangular":
        w = np.ones(n)
    else:  # blackman
        c = cfg.blackman_coeff
        w = c - 0.5 * np.cos(a * i) + (0.5 - c) * np.cos(2 * a * i)
    return w.astype(np.float32)


@lru_cache(maxsize=64)
def _constants(cfg_key: tuple, vtln_warp: float, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = FbankConfig(**dict(cfg_key))
    window = torch.from_numpy(_window_np(cfg)).to(device)
    mel = torch.from_numpy(mel_banks(cfg, vtln_warp)).to(device)
    return window, mel


def _cfg_key(cfg: FbankConfig) -> tuple:
    return tuple(sorted(cfg.to_dict().items()))


# ---------------------------------------------------------------------------------------------------------------------
# Fbank


def _utterance_frames(wave: torch.Tensor, n_frames: int, cfg: FbankConfig) -> torch.Tensor:
    """(n_frames, window_size) view/copy of one utterance's frames, reflecting at the edges as Kaldi's ExtractWindow."""
    length, shift = cfg.window_size, cfg.window_shift
    n = wave.shape[0]
    start = _first_sample(0, cfg)
    end = _first_sample(n_frames - 1, cfg) + length
    if start < 0 or end > n:
        idx = torch.arange(start, end) % (2 * n)  # reflection has period 2n: s<0 → -s-1, s>=n → 2n-1-s
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx)
        ext = wave[idx.to(wave.device)]
    else:
        ext = wave[start:end]
    return ext.unfold(0, length, shift)


def _dither_noise(wave: np.ndarray | torch.Tensor, n_frames: int, cfg: FbankConfig, seed: int) -> torch.Tensor:
    """Gaussian dither for one utterance's frames, seeded by (seed, the utterance's samples): the same audio gets the
    same noise whatever batch or position it is computed in."""
    data = wave.detach().cpu().numpy() if isinstance(wave, torch.Tensor) else np.asarray(wave)
    digest = zlib.crc32(np.ascontiguousarray(data, dtype=np.float32).view(np.uint8))
    gen = torch.Generator().manual_seed((int(seed) * 1_000_003 + digest) % (2**63))
    return torch.randn((n_frames, cfg.window_size), generator=gen)


def _fbank_block(
    frames: torch.Tensor, cfg: FbankConfig, window: torch.Tensor, mel: torch.Tensor
) -> torch.Tensor:
    """Kaldi's ProcessWindow + Fbank::Compute on a (N, window_size) block of frames (modified in place) → (N, dim)."""
    if cfg.remove_dc_offset:
        frames -= frames.mean(dim=1, keepdim=True)
    log_energy = None
    if cfg.use_energy and cfg.raw_energy:
        log_energy = frames.square().sum(dim=1).clamp_(min=_FLT_EPSILON).log_()
    c = cfg.preemphasis_coefficient
    if c != 0.0:
        first = frames[:, :1] * (1.0 - c)
        frames[:, 1:] -= c * frames[:, :-1]  # right side is evaluated into a temporary first
        frames[:, :1] = first
    frames *= window
    if cfg.use_energy and not cfg.raw_energy:
        log_energy = frames.square().sum(dim=1).clamp_(min=_FLT_EPSILON).log_()
    spec = torch.fft.rfft(frames, n=cfg.padded_window_size, dim=1)  # (N, padded/2 + 1) complex
    power = torch.addcmul(spec.real.square(), spec.imag, spec.imag)  # re² + im² (a size-2 sum() is slower)
    if not cfg.use_power:
        power.sqrt_()
    energies = power @ mel  # (N, num_mel_bins)
    if cfg.use_log_fbank:
        energies.clamp_(min=_FLT_EPSILON).log_()
    if log_energy is None:
        return energies
    if cfg.energy_floor > 0.0:
        log_energy.clamp_(min=math.log(cfg.energy_floor))
    parts = (energies, log_energy[:, None]) if cfg.htk_compat else (log_energy[:, None], energies)
    return torch.cat(parts, dim=1)


def compute_fbank(
    waves: Sequence[np.ndarray | torch.Tensor],
    cfg: FbankConfig,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    vtln_warp: float | Sequence[float] | None = None,
    threads: int = 1,
) -> list[torch.Tensor]:
    """Kaldi's compute-fbank-feats on many utterances at once: returns float32 CPU tensors (T_i, cfg.dim).

    The frames of a group of utterances are stacked into one matrix (frames are independent, so no padding is
    needed) and go through the FFT and the mel matmul in blocks of rows. On CPU, groups run in parallel on
    `threads` threads; their ops use torch's own threads, which the caller sets once (the CLI: 1, since torch's
    per-op threading stalls on a busy machine).
    Audio shorter than one frame gives a (0, dim) tensor (the caller skips it, named). `vtln_warp` (one factor, or
    one per utterance) overrides cfg.vtln_warp. Dither is reproducible from `seed` and independent of batching.
    """
    device = torch.device(device)
    warps = _per_utterance_warps(vtln_warp, cfg, len(waves))
    for i, w in enumerate(waves):
        if w.ndim != 1:
            raise UsageError(f"compute_fbank: wave {i} has shape {tuple(w.shape)}; expected 1-D samples (one channel)")
    counts = [num_frames(int(w.shape[0]), cfg) for w in waves]
    out = [torch.zeros((0, cfg.dim), dtype=torch.float32) for _ in waves]
    threads = threads if device.type == "cpu" else 1
    group_frames = max(1, min(_GROUP_FRAMES, -(-sum(counts) // threads)))
    groups: list[list[int]] = []
    for warp in sorted(set(warps)):
        _constants(_cfg_key(cfg), warp, str(device))  # build the cached window / mel matrix before any thread needs it
        group: list[int] = []
        total = 0
        for i in (i for i in range(len(waves)) if warps[i] == warp and counts[i] > 0):
            if group and total + counts[i] > group_frames:
                groups.append(group)
                group, total = [], 0
            group.append(i)
            total += counts[i]
        if group:
            groups.append(group)

    def run(group: list[int]) -> None:
        feats = _fbank_group([waves[i] for i in group], [counts[i] for i in group], warps[group[0]], cfg, device, seed)
        for i, f in zip(group, feats):
            out[i] = f

    if threads > 1 and len(groups) > 1:
        with ThreadPoolExecutor(min(threads, len(groups))) as pool:
            list(pool.map(run, groups))
    else:
        for group in groups:
            run(group)
    return out


def _fbank_group(
    waves: list[np.ndarray | torch.Tensor],
    counts: list[int],
    warp: float,
    cfg: FbankConfig,
    device: torch.device,
    seed: int,
) -> tuple[torch.Tensor, ...]:
    """Fbank of a group of utterances with the same warp, all frames stacked into one matrix: CPU float32 tensors."""
    window, mel = _constants(_cfg_key(cfg), warp, str(device))
    frames = torch.cat([_utterance_frames(_as_tensor(w, device), t, cfg) for w, t in zip(waves, counts)])
    if cfg.dither != 0.0:
        noise = torch.cat([_dither_noise(w, t, cfg, seed) for w, t in zip(waves, counts)])
        frames.add_(noise.to(device), alpha=cfg.dither)
    total = frames.shape[0]
    block = _BLOCK_FRAMES.get(device.type, _BLOCK_FRAMES["cuda"])
    feats = torch.empty((total, cfg.dim), dtype=torch.float32, device=device)
    for row in range(0, total, block):
        feats[row : row + block] = _fbank_block(frames[row : row + block], cfg, window, mel)
    return feats.cpu().split(counts)


def _as_tensor(wave: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    t = wave if isinstance(wave, torch.Tensor) else torch.from_numpy(np.asarray(wave))
    return t.to(device=device, dtype=torch.float32)


def _per_utterance_warps(vtln_warp: float | Sequence[float] | None, cfg: FbankConfig, n: int) -> list[float]:
    if vtln_warp is None:
        return [float(cfg.vtln_warp)] * n
    if isinstance(vtln_warp, (int, float)):
        return [float(vtln_warp)] * n
    warps = [float(w) for w in vtln_warp]
    if len(warps) != n:
        raise UsageError(f"compute_fbank: {len(warps)} VTLN warp factors for {n} utterances; give one per utterance")
    return warps


# ---------------------------------------------------------------------------------------------------------------------
# The pipeline shared by training and decoding

CmvnMode = Literal["speaker", "utterance", "global", "none"]
_CMVN_MODES = ("speaker", "utterance", "global", "none")


@dataclass
class FeaturePipeline:
    """Fbank config + CMVN mode + deltas: saved beside every artifact and used by training and decoding alike.

    `input` says what feats.scp holds: "fbank" (asr-bn prep), or features derived from that fbank by a GMM system
    ("fmllr <digest of its final.mat>", `asr-bn gmm fmllr-feats`) of dimension `input_dim`; a model refuses
    features of another input."""

    fbank: FbankConfig = dataclasses.field(default_factory=FbankConfig)
    cmvn: CmvnMode = "speaker"
    norm_vars: bool = False
    delta_order: int = 2
    delta_window: int = 2
    input: str = "fbank"
    input_dim: int | None = None

    def __post_init__(self) -> None:
        if self.cmvn not in _CMVN_MODES:
            raise UsageError(f"cmvn mode {self.cmvn!r} is not one of {', '.join(_CMVN_MODES)}")
        if self.delta_order < 0 or self.delta_window < 1:
            raise UsageError(f"delta_order={self.delta_order} must be >= 0 and delta_window={self.delta_window} >= 1")
        if (self.input == "fbank") != (self.input_dim is None) or (self.input_dim is not None and self.input_dim < 1):
            raise UsageError(f"input {self.input!r} with input_dim {self.input_dim}: fbank input has no input_dim, "
                             f"any other input a positive one")

    @property
    def output_dim(self) -> int:
        """Dimension of transformed features: input dim (fbank's bins unless given) × (delta_order + 1)."""
        return (self.input_dim or self.fbank.dim) * (self.delta_order + 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-safe)."""
        return {
            "fbank": self.fbank.to_dict(),
            "cmvn": self.cmvn,
            "norm_vars": self.norm_vars,
            "delta_order": self.delta_order,
            "delta_window": self.delta_window,
            **({} if self.input == "fbank" else {"input": self.input, "input_dim": self.input_dim}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeaturePipeline":
        """Inverse of to_dict; unknown keys are a UsageError."""
        d = dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(
                f"unknown feature-pipeline key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        d["fbank"] = FbankConfig.from_dict(d.get("fbank", {}))
        return cls(**d)

    def save(self, path: str | Path) -> None:
        """Write the pipeline as JSON, atomically."""
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def mismatch(self, other: "FeaturePipeline") -> str:
        """How `other` differs from this pipeline, key by key (`dither 1 (not 0)`), and the `asr-bn prep` options
        that give this one; for the error of a data dir prepared unlike a model or another data dir."""
        differ, options, extra = [], [], ""
        fbank = {f.name: f for f in dataclasses.fields(FbankConfig)}
        ours, theirs = self.to_dict(), other.to_dict()
        pairs = [(k, v, theirs["fbank"].get(k)) for k, v in ours.pop("fbank").items()]
        ours.setdefault("input", "fbank")
        theirs.setdefault("input", "fbank")
        pairs += [(k, v, theirs.get(k)) for k, v in ours.items()]
        for key, want, got in pairs:
            if want == got:
                continue
            differ.append(f"{key} {got} (not {want})")
            if key in fbank:
                flag = fbank[key].metadata["kaldi"]
                options.append(f"--{flag}" if want is True else f"--no-{flag}" if want is False else f"--{flag} {want}")
            elif key == "cmvn":
                options.append(f"--cmvn {want}")
            elif key == "norm_vars" and want:
                options.append("--norm-vars")
            elif key == "norm_vars":
                extra += " without --norm-vars"
            elif key == "input":
                maker = "asr-bn prep" if want == "fbank" else "`asr-bn gmm fmllr-feats` with the model's GMM system"
                extra += f" (input {want}: {maker} writes it)"
            elif key != "input_dim":  # input_dim differs with input, said there
                extra += f" (asr-bn prep writes {key} {want}: re-run it)"
        if any(key in fbank for key, want, got in pairs if want != got):
            extra += " (or with a --config that has these)"
        return f"{', '.join(differ)}; prepare it with `asr-bn prep … {' '.join(options)}`{extra}"

    @classmethod
    def load(cls, path: str | Path) -> "FeaturePipeline":
        """Read a pipeline saved by `save`; a missing or corrupt file is an AsrBnError naming it."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise AsrBnError(f"feature pipeline {path} is missing (it is written by `asr-bn prep`)") from e
        except (OSError, ValueError) as e:
            raise AsrBnError(f"feature pipeline {path} is unreadable or not JSON ({e}); re-run `asr-bn prep`") from e
        if not isinstance(d, dict):
            raise AsrBnError(f"feature pipeline {path} is not a JSON object; re-run `asr-bn prep`")
        try:
            return cls.from_dict(d)
        except (UsageError, TypeError) as e:
            raise AsrBnError(f"feature pipeline {path} is invalid: {e}") from e

    def transform(self, raw: torch.Tensor, cmvn_stats: np.ndarray | None) -> torch.Tensor:
        """CMVN then deltas on one utterance's raw fbank (T, fbank.dim) → (T, output_dim).

        cmvn_stats: the speaker's / utterance's / global 2×(D+1) stats; None is allowed for cmvn "none", and for
        "utterance" (the stats are then computed from `raw`).
        """
        x = self._cmvn(raw, self._stats_for(raw, cmvn_stats))
        return add_deltas(x, self.delta_order, self.delta_window)

    def _stats_for(self, raw: torch.Tensor, stats: np.ndarray | None) -> np.ndarray | None:
        if self.cmvn == "none":
            return None
        if stats is None:
            if self.cmvn == "utterance":
                return compute_cmvn_stats([raw])
            raise UsageError(f"cmvn mode {self.cmvn!r} needs CMVN stats (cmvn.scp from `asr-bn prep`), got none")
        return stats

    def _cmvn(self, raw: torch.Tensor, stats: np.ndarray | None) -> torch.Tensor:
        return raw if stats is None else apply_cmvn(raw, stats, self.norm_vars)  # type: ignore[return-value]
