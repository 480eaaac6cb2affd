"""The GMM systems' features (Kaldi's add-feats pipeline without Kaldi): 13 cepstra = orthonormal DCT-II of the
log-mel fbank (Kaldi's MFCC without the lifter, which a diagonal GMM does not need), per-speaker mean normalization
(apply-cmvn), then Δ+ΔΔ (add-deltas). The same fbank as the network's guarantees alignments of exactly as many frames
as its features; a Kaldi data dir of make_mfcc.sh cepstra is read as it is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping

import numpy as np

from asr_bn.errors import AsrBnError
from asr_bn.io import read_matrix
from asr_bn.report import Report

if TYPE_CHECKING:
    import torch

__all__ = ["gmm_features", "GmmFeatures", "FeatureMap", "prepared_gmm_features"]




def _cepstra(utt: str, fbank: "np.ndarray | torch.Tensor", num_ceps: int) -> np.ndarray:
    """The first `num_ceps` coefficients of the orthonormal DCT-II of one utterance's log-mel fbank, float32."""
    import scipy.fft

    a = fbank.numpy() if hasattr(fbank, "numpy") else np.asarray(fbank)
    if a.ndim != 2 or a.shape[1] < num_ceps:
        raise AsrBnError(f"utterance {utt}: fbank of shape {a.shape} has fewer than {num_ceps} bins; "
                         f"use more mel bins or fewer cepstra")
    return scipy.fft.dct(a.astype(np.float64), type=2, norm="ortho", axis=1)[:, :num_ceps].astype(np.float32)


def _normalized_with_deltas(ceps: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """apply-cmvn (means) with a speaker's stats, then add-deltas: the GMM features of one utterance (numpy: the
    GMM commands never import torch)."""
    from asr_bn.cmvn import add_deltas, apply_cmvn

    return add_deltas(np.asarray(apply_cmvn(ceps, stats), np.float32))


def gmm_features(fbank: Mapping[str, "np.ndarray | torch.Tensor"], utt2spk: Mapping[str, str],
                 num_ceps: int = 13) -> dict[str, np.ndarray]:
    """MFCC-like GMM features from log-mel fbank: DCT-II (orthonormal) keeping `num_ceps`, per-speaker mean
    normalization, then Δ+ΔΔ. Returns float32 (T, 3*num_ceps) per utterance, same frames as the fbank."""
    from asr_bn.cmvn import compute_cmvn_stats

    ceps = {utt: _cepstra(utt, f, num_ceps) for utt, f in fbank.items()}
    by_spk: dict[str, list[str]] = {}
    for utt in ceps:
        if utt not in utt2spk:
            raise AsrBnError(f"utterance {utt} has features but no speaker in utt2spk; fix the data dir")
        by_spk.setdefault(utt2spk[utt], []).append(utt)
    out: dict[str, np.ndarray] = {}
    for utts in by_spk.values():
        stats = compute_cmvn_stats(ceps[u] for u in utts)
        for u in utts:
            out[u] = _normalized_with_deltas(ceps[u], stats)
    return out


class GmmFeatures(Mapping[str, np.ndarray]):
    """The GMM features (`gmm_features`) of a prepared dir, computed from its feats.scp when an utterance is asked
    for, so that a corpus of any size trains without holding its features in memory (Kaldi's steps read their
    feature pipelines the same way). Per-speaker CMVN statistics come from one pass at construction;
    `in_memory=True` keeps every computed matrix (faster for small corpora). With `num_ceps=None` feats.scp holds
    cepstra already (Kaldi's make_mfcc.sh), used as they are: no DCT, as Kaldi's apply-cmvn | add-deltas."""

    def __init__(self, scp: Path, locations: Mapping[str, str], utt2spk: Mapping[str, str],
                 num_ceps: int | None = 13, in_memory: bool = False) -> None:
        from asr_bn.cmvn import compute_cmvn_stats

        self._scp, self._locations, self._num_ceps = scp, dict(locations), num_ceps
        self._speaker = {u: utt2spk[u] for u in self._locations}
        self._cache: dict[str, np.ndarray] | None = {} if in_memory else None
        stats: dict[str, np.ndarray] = {}
        for utt in self._locations:
            one = compute_cmvn_stats([self._cepstra(utt)])
            spk = self._speaker[utt]
            stats[spk] = one if spk not in stats else stats[spk] + one
        self._stats = stats

    def _cepstra(self, utt: str) -> np.ndarray:
        mat = read_matrix(self._locations[utt], self._scp, utt)
        if self._num_ceps is None:
            if mat.ndim != 2:
                raise AsrBnError(f"{self._scp}: {utt} is not a matrix of features; re-run make_mfcc.sh")
            return mat.astype(np.float32)
        return _cepstra(utt, mat, self._num_ceps)

    def __getitem__(self, utt: str) -> np.ndarray:
        if self._cache is not None and utt in self._cache:
            return self._cache[utt]
        out = _normalized_with_deltas(self._cepstra(utt), self._stats[self._speaker[utt]])
        if self._cache is not None:
            self._cache[utt] = out
        return out

    @property
    def utt2spk(self) -> Mapping[str, str]:
        """Utterance → speaker of every utterance here: the grouping of the CMVN statistics (and of fMLLR)."""
        return self._speaker

    @property
    def num_ceps(self) -> int | None:
        """The cepstra kept of the fbank's DCT; None when feats.scp holds the cepstra already."""
        return self._num_ceps

    def __iter__(self) -> Iterator[str]:
        return iter(self._locations)

    def __len__(self) -> int:
        return len(self._locations)


class FeatureMap(Mapping[str, np.ndarray]):
    """`base` seen through `fn(utt, matrix)`, computed when an utterance is asked for (a feature transform applied
    on the fly, as Kaldi's `transform-feats` in a feature pipeline)."""

    def __init__(self, base: Mapping[str, np.ndarray], fn: Callable[[str, np.ndarray], np.ndarray]) -> None:
        self._base, self._fn = base, fn

    def __getitem__(self, utt: str) -> np.ndarray:
        return self._fn(utt, self._base[utt])

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)


def prepared_gmm_features(prep_dir: str | Path, num_ceps: int = 13,
                          in_memory: bool = False) -> tuple[GmmFeatures, dict[str, str], Report]:
    """GMM features (`GmmFeatures`: computed from the dir's raw fbank when asked for, or kept with `in_memory`) and
    transcripts of an `asr-bn prep` output dir, or of a Kaldi data dir whose feats.scp holds cepstra already
    (make_mfcc.sh's: no pipeline.json), whose features are used as they are (speaker CMVN, Δ+ΔΔ as Kaldi's steps).

    Returns (features, text, report); `text` is empty when the dir has no transcripts (enough for likelihoods).
    """
    from asr_bn.data import load_data_dir

    prep_dir = Path(prep_dir)
    report = Report("gmm features")
    scp = prep_dir / "feats.scp"
    if not scp.is_file():
        raise AsrBnError(f"{scp} not found; run `asr-bn prep kaldi DATA_DIR {prep_dir}` first (or Kaldi's "
                         "make_mfcc.sh)")
    if not (prep_dir / "pipeline.json").is_file():  # not asr-bn prep's fbank: Kaldi's own features, as they are
        num_ceps = None
        report.note(f"{prep_dir} has no pipeline.json: its feats.scp is used as it is (cepstra such as Kaldi's "
                    "make_mfcc.sh writes, no DCT), with per-speaker mean normalisation and Δ+ΔΔ")
    data = load_data_dir(prep_dir, report)
    locations = {}
    for line in scp.read_text(encoding="utf-8").splitlines():
        utt, _, location = line.partition(" ")
        if utt in data.utterances:
            locations[utt] = location.strip()
    for utt in data.utterances:
        if utt not in locations:
            report.skip(utt, "no features in feats.scp")
    feats = GmmFeatures(scp, locations, {u: data.utterances[u].speaker for u in locations}, num_ceps, in_memory)
    text = {u: data.utterances[u].text or "" for u in locations} if data.has_text else {}
    report.counts["utterances"] = len(feats)
    return feats, text, report
