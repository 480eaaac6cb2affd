"""Monophone HMM-GMM training and forced alignment without Kaldi binaries, through kaldi-hmm-gmm (Kaldi's own C++).

`train_mono` follows Kaldi's steps/train_mono.sh (gmm-init-mono, compile-train-graphs, align-equal-compiled, then
iterations of gmm-align-compiled + gmm-acc-stats-ali + gmm-est with Gaussians growing toward a target) and `align`
follows steps/align_si.sh. Outputs are what a Kaldi user has: `final.mdl` (TransitionModel + AmDiagGmm in Kaldi's
binary format), `tree`, `phones.txt`, and `ali.N.gz` (gzipped binary archives of transition-id vectors).

Features for the GMM (`gmm_features`): 13 cepstra = orthonormal DCT-II of the log-mel fbank (Kaldi's MFCC without
the lifter, which a diagonal GMM does not need), per-speaker mean normalization (apply-cmvn), then Δ+ΔΔ (add-deltas).
Using the same fbank as the network guarantees alignments have exactly as many frames as its features.

    >>> feats = gmm_features(fbank, utt2spk)
    >>> model, report = train_mono(feats, text, read_lang("data/lang"), "exp/mono", MonoConfig())
    >>> align(model, feats, text, read_lang("data/lang"), "exp/mono_ali")
"""

from __future__ import annotations

import dataclasses
import gzip
import heapq
import json
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from asr_bn.alignments import HmmState, Topology, TransitionModel, read_transition_model, transition_id_scores
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import OutputLock, atomic_open, atomic_path, read_matrix, write_text
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg, kaldifst
from asr_bn.lang import Lang, lexicon_fst, note_oovs
from asr_bn.progress import progress_bar
from asr_bn.report import Report

if TYPE_CHECKING:
    import torch

__all__ = [
    "MonoConfig",
    "AlignConfig",
    "GmmSystem",
    "make_topology",
    "gmm_features",
    "prepared_gmm_features",
    "train_mono",
    "align",
    "write_alignments",
]

# Kaldi's steps/train_mono.sh defaults.
REALIGN_ITERS_KALDI = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)


@dataclass
class MonoConfig:
    """Options of Kaldi's steps/train_mono.sh (same names and defaults)."""

    num_iters: int = 40  # number of gmm-est updates
    max_iter_inc: int = 30  # Gaussians grow until this iteration
    total_gauss: int = 1000  # target number of Gaussians
    realign_iters: tuple[int, ...] = REALIGN_ITERS_KALDI
    boost_silence: float = 1.0  # factor on silence likelihoods while aligning
    power: float = 0.25  # exponent for allocating Gaussians to states by occupancy
    first_beam: float = 6.0  # alignment beam of the first realignment (later: `beam`)
    beam: float = 10.0
    retry_beam_factor: float = 4.0  # retry beam = beam * this (train_mono.sh) when the first beam fails
    sil_prob: float = 0.5  # optional-silence probability between words in the training graphs
    min_gaussian_occupancy_first: float = 3.0  # gmm-est option for the first update only (later: Kaldi's 10)
    seed: int = 0  # for equal alignment and the perturbation of split Gaussians
    oov_policy: str = "map"  # words outside the lexicon: map (to the lang's oov.txt word) or skip the utterance

    def validate(self) -> None:
        """Raise UsageError for inconsistent options."""
        _check_oov_policy(self.oov_policy)
        if self.num_iters < 1 or self.max_iter_inc < 0 or self.total_gauss < 1:
            raise UsageError(f"MonoConfig: num_iters={self.num_iters} must be >= 1, max_iter_inc >= 0, total_gauss >= 1")
        if any(i < 1 or i >= self.num_iters for i in self.realign_iters):
            raise UsageError(f"MonoConfig: realign_iters {self.realign_iters} must lie in 1..{self.num_iters - 1}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-safe)."""
        return {**dataclasses.asdict(self), "realign_iters": list(self.realign_iters)}


# --fast (CI): a quarter of Kaldi's iterations and Gaussians; alignments are still usable, only rougher.
FAST_MONO = MonoConfig(num_iters=10, max_iter_inc=8, total_gauss=300, realign_iters=(1, 2, 3, 4, 5, 6, 8))


@dataclass
class AlignConfig:
    """Options of Kaldi's steps/align_si.sh (gmm-align-compiled with its scales)."""

    beam: float = 10.0
    retry_beam: float = 40.0
    boost_silence: float = 1.0
    sil_prob: float = 0.5
    num_jobs: int = 1  # number of ali.N.gz archives written (Kaldi's nj)
    transition_scale: float = 1.0
    acoustic_scale: float = 0.1
    self_loop_scale: float = 0.1
    oov_policy: str = "map"  # as MonoConfig.oov_policy


def _check_oov_policy(policy: str) -> None:
    if policy not in ("map", "skip"):
        raise UsageError(f"--oov-policy {policy!r} is not map or skip")


# ---------------------------------------------------------------------------------------------------------------------
# HMM topology (Kaldi's utils/gen_topo.pl)


def make_topology(nonsil_phones: Sequence[int], sil_phones: Sequence[int], num_nonsil_states: int = 3,
                  num_sil_states: int = 5) -> Topology:
    """Kaldi's utils/gen_topo.pl: left-to-right 3-state phones; silence with an ergodic middle (5 states)."""
    def state(pdf_class: int, transitions: list[tuple[int, float]]) -> HmmState:
        return HmmState(pdf_class, pdf_class, tuple(transitions))

    n = num_nonsil_states
    nonsil = [state(s, [(s, 0.75), (s + 1, 0.25)]) for s in range(n)] + [state(-1, [])]
    n = num_sil_states
    if n == 1:
        sil = [state(0, [(0, 0.75), (1, 0.25)]), state(-1, [])]
    else:
        sil = [state(0, [(d, 1.0 / (n - 1)) for d in range(n - 1)])]
        sil += [state(s, [(d, 1.0 / (n - 1)) for d in range(1, n)]) for s in range(1, n - 1)]
        sil += [state(n - 1, [(n - 1, 0.75), (n, 0.25)]), state(-1, [])]
    groups = [(sorted(g), tuple(e)) for g, e in ((nonsil_phones, nonsil), (sil_phones, sil)) if g]
    phones = sorted(p for g, _ in groups for p in g)
    phone2entry = [-1] * (max(phones) + 1)
    for i, (g, _) in enumerate(groups):
        for p in g:
            phone2entry[p] = i
    return Topology(tuple(phones), tuple(phone2entry), tuple(e for _, e in groups))


def _monophone_tuples(topology: Topology, tree: "khg.ContextDependency") -> list[tuple[int, int, int, int]]:
    """Transition-state tuples (phone, hmm_state, pdf, pdf) as Kaldi's TransitionModel computes them, sorted."""
    phones = list(topology.phones)
    num_classes = [-1] * (max(phones) + 1)
    for p in phones:
        num_classes[p] = 1 + max(s.forward_pdf_class for s in topology.entry(p))
    tuples = []
    for pdf, pairs in enumerate(tree.get_pdf_info(phones, num_classes)):
        for phone, pdf_class in pairs:
            for hmm_state, st in enumerate(topology.entry(phone)):
                if st.forward_pdf_class == pdf_class:
                    tuples.append((phone, hmm_state, pdf, pdf))
    return sorted(tuples)


# ---------------------------------------------------------------------------------------------------------------------
# Kaldi's binary AmDiagGmm (what follows the TransitionModel in a GMM final.mdl)


def _am_bytes(am: "khg.AmDiagGmm") -> bytes:
    """AmDiagGmm::Write in binary: <DIMENSION>, <NUMPDFS>, then each DiagGmm's gconsts, weights, means·invvars, invvars."""
    def token(t: str) -> bytes:
        return t.encode() + b" "

    def int32(v: int) -> bytes:
        return b"\x04" + struct.pack("<i", v)

    def vector(v: np.ndarray) -> bytes:
        return token("FV") + int32(len(v)) + np.asarray(v, "<f4").tobytes()

    def matrix(m: np.ndarray) -> bytes:
        m = np.asarray(m, "<f4")
        return token("FM") + int32(m.shape[0]) + int32(m.shape[1]) + m.tobytes()

    parts = [token("<DIMENSION>"), int32(am.dim if am.num_pdfs else 0), token("<NUMPDFS>"), int32(am.num_pdfs)]
    for pdf in range(am.num_pdfs):
        g = am.get_pdf(pdf)
        parts += [token("<DiagGMM>"), token("<GCONSTS>"), vector(g.gconsts), token("<WEIGHTS>"), vector(g.weights),
                  token("<MEANS_INVVARS>"), matrix(g.means_invvars), token("<INV_VARS>"), matrix(g.inv_vars),
                  token("</DiagGMM>")]
    return b"".join(parts)


def _read_am(data: bytes, pos: int, path: Path) -> "khg.AmDiagGmm":
    """Parse a binary AmDiagGmm starting at byte `pos` of `data` (the inverse of `_am_bytes`)."""
    def fail(what: str) -> AsrBnError:
        return AsrBnError(f"{path}: expected {what} at byte {pos}; the file is truncated or corrupt, or not a binary "
                          f"Kaldi diagonal-GMM model (convert one with gmm-copy --binary=true)")

    def token() -> str:
        nonlocal pos
        end = data.find(b" ", pos, pos + 64)
        if end < 0:
            raise fail("a token")
        tok, pos = data[pos:end].decode("latin-1"), end + 1
        return tok

    def expect(t: str) -> None:
        if token() != t:
            raise fail(t)

    def int32() -> int:
        nonlocal pos
        if data[pos:pos + 1] != b"\x04" or pos + 5 > len(data):
            raise fail("a 4-byte integer")
        pos += 5
        return struct.unpack("<i", data[pos - 4:pos])[0]

    def floats(n: int) -> np.ndarray:
        nonlocal pos
        if n < 0 or pos + 4 * n > len(data):
            raise fail(f"{n} floats")
        pos += 4 * n
        return np.frombuffer(data[pos - 4 * n:pos], "<f4").astype(np.float32)

    def vector() -> np.ndarray:
        expect("FV")
        return floats(int32())

    def matrix() -> np.ndarray:
        expect("FM")
        rows, cols = int32(), int32()
        if rows < 0 or cols < 0:
            raise fail("a matrix size")
        return floats(rows * cols).reshape(rows, cols)

    expect("<DIMENSION>")
    dim = int32()
    expect("<NUMPDFS>")
    am = khg.AmDiagGmm()
    for _ in range(int32()):
        expect("<DiagGMM>")
        g: dict[str, np.ndarray] = {}
        while (tok := token()) != "</DiagGMM>":
            if tok in ("<GCONSTS>", "<WEIGHTS>"):
                g[tok] = vector()
            elif tok in ("<MEANS_INVVARS>", "<INV_VARS>"):
                g[tok] = matrix()
            else:
                raise fail("<GCONSTS>, <WEIGHTS>, <MEANS_INVVARS>, <INV_VARS> or </DiagGMM>")
        if len(g) != 4:
            raise fail("all four parts of a <DiagGMM>")
        inv_vars, weights = g["<INV_VARS>"], g["<WEIGHTS>"]
        if not (len(weights) >= 1 and inv_vars.shape == g["<MEANS_INVVARS>"].shape == (len(weights), dim)):
            raise fail(f"{len(weights)} components of dimension {dim} (sizes of the <DiagGMM> disagree)")
        if not (np.isfinite(inv_vars).all() and np.isfinite(g["<MEANS_INVVARS>"]).all() and (inv_vars > 0).all()
                and np.isfinite(weights).all() and (weights >= 0).all()):
            raise fail("finite GMM parameters with positive inverse variances")
        gmm = khg.DiagGmm(len(weights), dim)
        gmm.set_weights(weights)
        gmm.set_invvars_and_means(inv_vars, g["<MEANS_INVVARS>"] / inv_vars)
        gmm.compute_gconsts()
        am.add_pdf(gmm)
    return am


# ---------------------------------------------------------------------------------------------------------------------
# The model in kaldi-hmm-gmm objects


@dataclass
class GmmSystem:
    """A monophone HMM-GMM system held in kaldi-hmm-gmm objects (TransitionModel, tree, AmDiagGmm)."""

    topology: Topology
    tree: "khg.ContextDependency"
    trans_model: "khg.TransitionModel"
    am: "khg.AmDiagGmm"

    @classmethod
    def _build(cls, topology: Topology, tree: "khg.ContextDependency | None" = None,
               shared: Sequence[Sequence[int]] | None = None) -> "GmmSystem":
        """kaldi-hmm-gmm TransitionModel (probabilities from the topology) for `topology` and `tree` (default: the
        monophone tree, each set of `shared` phones sharing one phone's pdfs as gmm-init-mono --shared-phones), as
        Kaldi's TransitionModel(ctx_dep, topo) builds it; no GMMs yet."""
        if tree is None:
            num_classes = [-1] * (max(topology.phones) + 1)
            for p in topology.phones:
                num_classes[p] = 1 + max(s.forward_pdf_class for s in topology.entry(p))
            if shared:
                tree = khg.monophone_context_dependency_shared([sorted(s) for s in shared], num_classes)
            else:
                tree = khg.monophone_context_dependency(list(topology.phones), num_classes)
        tuples = _monophone_tuples(topology, tree)
        initial = TransitionModel(topology, tuples, np.zeros(1 + sum(
            len(topology.entry(phone)[state].transitions) for phone, state, _, _ in tuples)))
        hmm_topo = khg.HmmTopology()
        hmm_topo.read(initial.topology_text())
        system = cls(topology, tree, khg.TransitionModel(tree, hmm_topo), khg.AmDiagGmm())
        tm = system.trans_model
        if tm.num_transition_states != len(tuples) or any(
            tm.transition_id_to_pdf(tm.state2id[s + 1]) != t[2] or tm.transition_id_to_phone(tm.state2id[s + 1]) != t[0]
            for s, t in enumerate(tuples)
        ):
            raise AsrBnError("internal: transition states disagree with kaldi-hmm-gmm's TransitionModel")
        return system

    @classmethod
    def init_mono(cls, topology: Topology, feats: Iterable[np.ndarray],
                  shared: Sequence[Sequence[int]] | None = None) -> "GmmSystem":
        """Kaldi's gmm-init-mono (--shared-phones `shared`): one Gaussian per pdf with the global mean and variance
        of `feats` (read once, one matrix at a time)."""
        system = cls._build(topology, shared=shared)
        count, total, squares = 0, 0.0, 0.0
        for f in feats:
            count += f.shape[0]
            total = total + f.sum(axis=0, dtype=np.float64)
            squares = squares + np.square(f, dtype=np.float64).sum(axis=0)
        mean = total / count
        var = squares / count - mean * mean
        if np.any(var <= 0):
            raise AsrBnError("features have a dimension with zero variance; the GMM cannot be initialized "
                             "(are all utterances silent or identical?)")
        for _ in range(system.tree.num_pdfs):
            gmm = khg.DiagGmm(1, mean.shape[0])
            gmm.set_weights(np.ones(1, np.float32))
            gmm.set_invvars_and_means((1.0 / var)[None].astype(np.float32), mean[None].astype(np.float32))
            gmm.compute_gconsts()
            system.am.add_pdf(gmm)
        return system

    def check_features(self, feats: Mapping[str, np.ndarray], model: str | Path) -> None:
        """Raise a one-line AsrBnError when `feats` are not of the dimension the model's Gaussians have (e.g. an LDA
        system's alignments without its final.mat). The first utterance speaks for all: a prepared dir's features
        share one pipeline, and computing every one here would be a pass over the corpus."""
        dims = {next(iter(feats.values())).shape[1]} if len(feats) else set()
        if self.am.num_pdfs and dims and dims != {self.am.dim}:
            raise AsrBnError(f"features of dimension {sorted(dims)} but {model} models {self.am.dim}: the system's "
                             f"feature transform (final.mat) must be in its dir, beside final.mdl")

    def log_likelihoods(self, feats: np.ndarray) -> np.ndarray:
        """Per-frame log-likelihood of every pdf, (T, num_pdfs) float32 (Kaldi's gmm-compute-likes), e.g. to
        decode with the GMM through the same decoder as the network's outputs."""
        x = np.ascontiguousarray(feats, dtype=np.float32)
        out = np.empty((x.shape[0], self.am.num_pdfs), dtype=np.float32)
        for pdf in range(self.am.num_pdfs):
            comp = np.asarray(self.am.get_pdf(pdf).log_likelihoods_matrix(x), dtype=np.float64)  # (T, M)
            top = comp.max(axis=1)
            out[:, pdf] = top + np.log(np.exp(comp - top[:, None]).sum(axis=1))
        return out

    def transition_model(self) -> TransitionModel:
        """The TransitionModel as plain data (asr_bn.alignments), with the current probabilities."""
        return TransitionModel(self.topology, _monophone_tuples(self.topology, self.tree), self.trans_model.log_probs)

    def model_bytes(self) -> bytes:
        """final.mdl as Kaldi's gmm-est writes it (binary TransitionModel, then AmDiagGmm)."""
        return self.transition_model().to_kaldi(binary=True) + _am_bytes(self.am)

    @classmethod
    def load(cls, model_path: str | Path) -> "GmmSystem":
        """Load a Kaldi GMM final.mdl (Kaldi's or ours, binary) into kaldi-hmm-gmm objects, e.g. to realign.

        Transition probabilities are restored through Kaldi's own MLE update fed with the model's probabilities.
        The `tree` beside the model gives its pdfs (context-dependent systems, or position-dependent phones sharing
        a monophone's pdfs); without one, the monophone tree.
        """
        from asr_bn.mkgraph import read_tree

        path = Path(model_path)
        tm = read_transition_model(path)
        head = tm.to_kaldi(binary=True)
        data = path.read_bytes()
        if not data.startswith(head):
            raise AsrBnError(f"{path} is not a binary Kaldi GMM model; convert it with gmm-copy --binary=true")
        tree_path = path.parent / "tree"
        system = cls._build(tm.topology, tree=read_tree(tree_path) if tree_path.is_file() else None)
        if _monophone_tuples(tm.topology, system.tree) != tm.tuples:
            which = "the tree beside it" if tree_path.is_file() else "a monophone tree (no tree file beside it)"
            raise AsrBnError(f"{path}: its transition states do not follow {which}; give an exp dir's own final.mdl "
                             f"and tree")
        if not (np.isfinite(tm.log_probs).all() and (tm.log_probs <= 1e-4).all()):
            raise AsrBnError(f"{path}: transition log-probabilities are not finite log-probabilities; the file is corrupt")
        cfg = khg.MleTransitionUpdateConfig()
        cfg.floor, cfg.mincount = 1e-30, 0.0
        system.trans_model.mle_update(np.exp(tm.log_probs.astype(np.float64)) * 1e6, cfg)
        system.am = _read_am(data, len(head), path)
        if system.am.num_pdfs != tm.num_pdfs:
            raise AsrBnError(f"{path}: {system.am.num_pdfs} GMMs for {tm.num_pdfs} pdfs; the file is inconsistent")
        return system

    def save(self, out_dir: str | Path, phones_txt: Mapping[str, int], name: str = "final.mdl") -> None:
        """Write `name` (Kaldi binary model), `tree`, `phones.txt` and `topo` into `out_dir`, as Kaldi's exp dirs."""
        out_dir = Path(out_dir)
        with atomic_open(out_dir / name, "wb") as f:
            f.write(self.model_bytes())
        with atomic_path(out_dir / "tree") as tmp:
            self.tree.write(True, str(tmp))
        write_text(out_dir / "phones.txt", "".join(f"{p} {i}\n" for p, i in phones_txt.items()))
        write_text(out_dir / "topo", self.transition_model().topology_text())


# ---------------------------------------------------------------------------------------------------------------------
# Features


def _cepstra(utt: str, fbank: "np.ndarray | torch.Tensor", num_ceps: int) -> np.ndarray:
    """The first `num_ceps` coefficients of the orthonormal DCT-II of one utterance's log-mel fbank, float32."""
    import scipy.fft

    a = fbank.numpy() if hasattr(fbank, "numpy") else np.asarray(fbank)
    if a.ndim != 2 or a.shape[1] < num_ceps:
        raise AsrBnError(f"utterance {utt}: fbank of shape {a.shape} has fewer than {num_ceps} bins; "
                         f"use more mel bins or fewer cepstra")
    return scipy.fft.dct(a.astype(np.float64), type=2, norm="ortho", axis=1)[:, :num_ceps].astype(np.float32)


def _normalized_with_deltas(ceps: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """apply-cmvn (means) with a speaker's stats, then add-deltas: the GMM features of one utterance."""
    import torch

    from asr_bn.features import add_deltas, apply_cmvn

    return add_deltas(torch.from_numpy(np.asarray(apply_cmvn(ceps, stats)))).numpy().astype(np.float32)


def gmm_features(fbank: Mapping[str, "np.ndarray | torch.Tensor"], utt2spk: Mapping[str, str],
                 num_ceps: int = 13) -> dict[str, np.ndarray]:
    """MFCC-like GMM features from log-mel fbank: DCT-II (orthonormal) keeping `num_ceps`, per-speaker mean
    normalization, then Δ+ΔΔ. Returns float32 (T, 3*num_ceps) per utterance, same frames as the fbank."""
    from asr_bn.features import compute_cmvn_stats

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
        from asr_bn.features import compute_cmvn_stats

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


# ---------------------------------------------------------------------------------------------------------------------
# Training graphs, alignment, accumulation


def _compile_graphs(system: GmmSystem, lang: Lang, text: Mapping[str, str], utts: Sequence[str], sil_prob: float,
                    report: Report, oov_policy: str = "map") -> dict[str, "kaldifst.StdVectorFst"]:
    """Kaldi's compile-train-graphs (transition/self-loop scales 0: probabilities are added when aligning).

    Words outside the lexicon map to the lang's OOV word (oov.txt, e.g. <UNK> pronounced SPN), as Kaldi's
    sym2int.pl --map-oov, counted per word in `report`; with `oov_policy` "skip" (or a lang without an OOV word) the
    utterance is skipped instead, named with its words."""
    compiler = khg.TrainingGraphCompiler(
        trans_model=system.trans_model, ctx_dep=system.tree, lex_fst=lexicon_fst(lang, sil_prob),
        disambig_syms=lang.disambig_phone_ids,
        opts=khg.TrainingGraphCompilerOptions(transition_scale=0.0, self_loop_scale=0.0, reorder=True))
    graphs = {}
    mapped: Counter[str] = Counter()
    for utt in utts:
        words = text[utt].split()
        oov = sorted({w for w in words if w not in lang.words})
        if oov and (oov_policy == "skip" or lang.oov is None):
            report.skip(utt, "words not in the lexicon")
            report.note(f"{utt}: words {' '.join(oov)} are not in the lexicon")
            continue
        if not words:
            report.skip(utt, "empty transcript")
            continue
        mapped.update(w for w in words if w not in lang.words)
        graph = compiler.compile_graph_from_text([lang.words.get(w, lang.words.get(str(lang.oov), 0)) for w in words])
        if graph.num_states == 0:
            report.skip(utt, "empty training graph")
            continue
        graphs[utt] = graph
    note_oovs(report, lang.oov, mapped)
    return graphs


def _equal_align(graph: "kaldifst.StdVectorFst", num_frames: int, seed: int) -> list[int] | None:
    """Kaldi's align-equal-compiled for one utterance: a random path of exactly `num_frames` frames, or None."""
    ok, path = kaldifst.equal_align(graph, num_frames, seed, 10)
    if not ok:
        return None
    ok, ilabels, _, _ = kaldifst.get_linear_symbol_sequence(path)
    return list(ilabels) if ok and len(ilabels) == num_frames else None


def _boosted(system: GmmSystem, silence_phones: Sequence[int], boost: float) -> "khg.AmDiagGmm":
    """Kaldi's gmm-boost-silence: a copy of the model with silence-pdf weights scaled by `boost`."""
    if boost == 1.0:
        return system.am
    am = khg.AmDiagGmm()
    am.copy_from_am_diag_gmm(system.am)
    _, pdfs = khg.get_pdfs_for_phones(system.trans_model, sorted(silence_phones))
    for pdf in pdfs:
        gmm = am.get_pdf(pdf)
        gmm.set_weights(np.asarray(gmm.weights, np.float32) * boost)
        gmm.compute_gconsts()
    return am


def _gmm_scorer(system: GmmSystem, am: "khg.AmDiagGmm", feats: Mapping[str, np.ndarray],
                acoustic_scale: float) -> Callable[[str], "khg.DecodableInterface"]:
    """Frame scores of an utterance from the GMM `am` (gmm-align-compiled); features of another dimension than the
    model's are one error naming the utterance (Kaldi's decodable would abort)."""
    def scorer(utt: str) -> "khg.DecodableInterface":
        x = feats[utt]
        if x.shape[1] != am.dim:
            raise AsrBnError(f"utterance {utt}: features of dimension {x.shape[1]} but the model's are {am.dim} "
                             f"(its feats.scp mixes dimensions: prepare the data dir again)")
        return khg.DecodableAmDiagGmmScaled(am, system.trans_model, x, acoustic_scale)

    return scorer


def _network_scorer(system: GmmSystem, loglikes: Mapping[str, np.ndarray],
                    acoustic_scale: float) -> Callable[[str], "khg.DecodableInterface"]:
    """Frame scores of an utterance from a network's pdf log-likelihoods (align-compiled-mapped)."""
    tid2pdf = np.asarray(system.trans_model.transition_id_to_pdf_array(), dtype=np.int64)
    return lambda utt: khg.DecodableCtc(transition_id_scores(loglikes[utt], tid2pdf, acoustic_scale))


def _align_all(system: GmmSystem, scorer: Callable[[str], "khg.DecodableInterface"],
               graphs: Mapping[str, "kaldifst.StdVectorFst"], feats: Mapping[str, np.ndarray], beam: float,
               retry_beam: float, scales: AlignConfig,
               on_done: Any = None) -> tuple[dict[str, list[int]], list[str], float, int]:
    """Kaldi's (gmm-)align-compiled over all utterances, frame scores from `scorer`: (alignments, failed
    utterances, total like, frames)."""
    config = khg.AlignConfig(beam=beam, retry_beam=retry_beam, careful=False)
    alis: dict[str, list[int]] = {}
    failed: list[str] = []
    num_done = num_error = num_retried = frames = 0
    tot_like = 0.0
    for utt, graph in graphs.items():
        fst = graph.copy()
        khg.add_transition_probs(system.trans_model, [], scales.transition_scale, scales.self_loop_scale, fst)
        decodable = scorer(utt)
        before = num_error
        num_done, num_error, num_retried, tot_like, frames, ali, _ = khg.align_utterance_wrapper(
            config, utt, scales.acoustic_scale, fst, decodable, num_done, num_error, num_retried, tot_like, frames)
        if num_error > before or len(ali) != feats[utt].shape[0]:
            failed.append(utt)
        else:
            alis[utt] = list(ali)
        if on_done is not None:
            on_done()
    return alis, failed, tot_like, frames


class _Stats:
    """Accumulated GMM and transition statistics of one pass (Kaldi's gmm-acc-stats-ali, frame by frame in C++)."""

    def __init__(self, system: GmmSystem, feats: Mapping[str, np.ndarray], alis: Mapping[str, Sequence[int]]) -> None:
        tm, am = system.trans_model, system.am
        tid2pdf = np.asarray(tm.transition_id_to_pdf_array(), dtype=np.int64)
        self.trans = np.zeros(tm.num_transition_ids + 1, dtype=np.float64)
        self.gmm = khg.AccumAmDiagGmm()
        self.gmm.init(am, int(khg.GmmUpdateFlags.kGmmAll))
        self.frames, self.tot_like = 0, 0.0
        accumulate = self.gmm.accumulate_for_gmm
        for utt, ali in alis.items():
            tids = np.asarray(ali, dtype=np.int64)
            self.trans += np.bincount(tids, minlength=len(self.trans))  # TransitionModel::Accumulate, prob 1
            self.frames += len(tids)
            for frame, pdf in zip(feats[utt], tid2pdf[tids].tolist()):
                self.tot_like += accumulate(am, frame, pdf, 1.0)
        self.pdf_occs = np.array([self.gmm.get_acc(p).occupancy.sum() for p in range(am.num_pdfs)], dtype=np.float32)

    def update(self, system: GmmSystem, min_gaussian_occupancy: float, mixup: int, power: float,
               rng: np.random.Generator) -> None:
        """Kaldi's gmm-est: MLE transition update, MLE GMM update ("mvw"), then split Gaussians toward `mixup`."""
        system.trans_model.mle_update(self.trans, khg.MleTransitionUpdateConfig())
        opts = khg.MleDiagGmmOptions()
        opts.min_gaussian_occupancy = min_gaussian_occupancy
        khg.mle_am_diag_gmm_update(opts, self.gmm, int(khg.str_to_gmm_flags("mvw")), system.am)
        if mixup > 0:  # as gmm-est --mix-up: every pass, also at the target (a pdf whose share grew still splits)
            _split_by_count(system.am, self.pdf_occs, mixup, 0.01, power, 20.0, rng)


def _split_targets(occs: np.ndarray, target: int, power: float, min_count: float) -> list[int]:
    """Kaldi's GetSplitTargets: Gaussians per pdf, given one at a time to the pdf with the most occ^power per
    Gaussian, never giving a pdf more Gaussians than occupancy / min_count."""
    heap = [(-float(occ) ** power, pdf, 1) for pdf, occ in enumerate(occs)]  # (-occ^power / n, pdf, n)
    heapq.heapify(heap)
    targets = [1] * len(occs)
    total = len(occs)
    while total < target and heap:
        _, pdf, n = heapq.heappop(heap)
        if (n + 1) * min_count >= occs[pdf]:
            continue  # min-count reached: this pdf splits no more
        n += 1
        total += 1
        targets[pdf] = n
        heapq.heappush(heap, (-float(occs[pdf]) ** power / n, pdf, n))
    return targets


def _split_by_count(am: "khg.AmDiagGmm", occs: np.ndarray, target: int, perturb_factor: float, power: float,
                    min_count: float, rng: np.random.Generator) -> None:
    """Kaldi's AmDiagGmm::SplitByCount with DiagGmm::Split (split the heaviest component, means moved apart by
    ± perturb_factor standard deviations along a random direction), drawing from `rng` so training is
    reproducible (kaldi-hmm-gmm's own split draws from an unseeded generator)."""
    for pdf, n in enumerate(_split_targets(occs, target, power, min_count)):
        gmm = am.get_pdf(pdf)
        if n <= gmm.num_gauss:
            continue
        weights = np.asarray(gmm.weights, np.float64).tolist()
        inv_vars = [row for row in np.asarray(gmm.inv_vars, np.float64)]
        means_invvars = [row for row in np.asarray(gmm.means_invvars, np.float64)]
        while len(weights) < n:
            k = int(np.argmax(weights))
            weights[k] /= 2
            weights.append(weights[k])
            step = perturb_factor * rng.standard_normal(len(inv_vars[k])) * np.sqrt(inv_vars[k])
            inv_vars.append(inv_vars[k].copy())
            means_invvars.append(means_invvars[k] + step)
            means_invvars[k] = means_invvars[k] - step
        inv = np.asarray(inv_vars, np.float32)
        new = khg.DiagGmm(n, inv.shape[1])
        new.set_weights(np.asarray(weights, np.float32))
        new.set_invvars_and_means(inv, (np.asarray(means_invvars) / np.asarray(inv_vars)).astype(np.float32))
        new.compute_gconsts()
        gmm.copy_from_diag_gmm(new)


def _equal_alignments(graphs: Mapping[str, "kaldifst.StdVectorFst"], feats: Mapping[str, np.ndarray], seed: int,
                      report: Report) -> dict[str, list[int]]:
    alis = {}
    for utt, graph in graphs.items():
        ali = _equal_align(graph, feats[utt].shape[0], (seed + zlib.crc32(utt.encode())) & 0x7FFFFFFF)
        if ali is None:
            report.skip(utt, "too few frames for its transcript")
        else:
            alis[utt] = ali
    return alis


def _check_inputs(feats: Mapping[str, np.ndarray], text: Mapping[str, str], report: Report) -> list[str]:
    """Utterances with both features and a transcript (the others are skipped, named)."""
    utts = []
    for utt in sorted(set(feats) | set(text)):
        if utt not in text:
            report.skip(utt, "no transcript")
        elif utt not in feats:
            report.skip(utt, "no features")
        elif feats[utt].shape[0] == 0:
            report.skip(utt, "no feature frames")
        else:
            utts.append(utt)
    return utts


def _check_loglikes(loglikes: Mapping[str, np.ndarray], utts: list[str], num_pdfs: int, report: Report) -> list[str]:
    """Utterances whose log-likelihood matrix can be aligned: a matrix of another width than the model's pdfs is an
    error (another model's network), NaN/Inf rows are a named skip."""
    kept = []
    for utt in utts:
        m = loglikes[utt]
        if m.ndim != 2 or m.shape[1] != num_pdfs:
            raise AsrBnError(f"utterance {utt}: log-likelihoods have shape {tuple(m.shape)} but the model has "
                             f"{num_pdfs} pdfs (use a network trained on this model's alignments)")
        if np.isfinite(m).all():
            kept.append(utt)
        else:
            report.skip(utt, "NaN or infinite log-likelihoods")
    return kept


def train_mono(feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang, out_dir: str | Path,
               cfg: MonoConfig | None = None, feature_info: Mapping[str, Any] | None = None) -> tuple[GmmSystem, Report]:
    """Train a monophone HMM-GMM as Kaldi's steps/train_mono.sh and write out_dir/{final.mdl, tree, phones.txt,
    topo, iterations.jsonl, config.json, report.json}. Returns the system and the report (failed utterances named).

    `feats` are the GMM features (e.g. from `gmm_features`), `text` the word transcripts.
    """
    cfg = cfg or MonoConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    with OutputLock(out_dir):
        (out_dir / "report.json").unlink(missing_ok=True)  # written last: it marks a complete run
        system, report, history = _train_mono(feats, text, lang, cfg)
        system.save(out_dir, lang.phones)
        write_text(out_dir / "iterations.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        write_text(out_dir / "config.json", json.dumps({"mono": cfg.to_dict(), "features": dict(feature_info or {})},
                                                       indent=2) + "\n")
        report.save(out_dir / "report.json")
    return system, report


def _train_mono(feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang,
                cfg: MonoConfig) -> tuple[GmmSystem, Report, list[dict[str, Any]]]:
    report = Report("train_mono")
    utts = _check_inputs(feats, text, report)
    if not utts:
        raise AsrBnError("no utterance has both features and a transcript; nothing to train on")
    sil = lang.silence_phone_ids
    topology = make_topology([p for p in lang.real_phone_ids if p not in sil], sil)
    system = GmmSystem.init_mono(topology, (feats[u] for u in utts), lang.shared_phone_sets)
    num_gauss = system.am.num_gauss
    inc_gauss = (cfg.total_gauss - num_gauss) // max(cfg.max_iter_inc, 1)
    history: list[dict[str, Any]] = []
    rng = np.random.default_rng(cfg.seed)
    with progress_bar() as bar:
        task = bar.add_task("compile graphs", total=len(utts), info="")
        graphs = _compile_graphs(system, lang, text, utts, cfg.sil_prob, report, cfg.oov_policy)
        bar.update(task, completed=len(utts))
        alis = _equal_alignments(graphs, feats, cfg.seed, report)
        if not alis:
            raise AsrBnError("no utterance could be equally aligned (all too short for their transcripts, or not in "
                             "the lexicon); check the transcripts and the audio")
        bar.update(task, description="train mono", total=cfg.num_iters, completed=0)
        failed: list[str] = []
        for it in range(cfg.num_iters):
            start = time.monotonic()
            realigned = it in cfg.realign_iters
            if realigned:
                beam = cfg.first_beam if it == 1 else cfg.beam
                bar.update(task, info=f"iter {it}: aligning")
                scales = AlignConfig()
                scorer = _gmm_scorer(system, _boosted(system, sil, cfg.boost_silence), feats, scales.acoustic_scale)
                alis, failed, _, _ = _align_all(system, scorer, graphs, feats, beam, beam * cfg.retry_beam_factor,
                                                scales)
            stats = _Stats(system, feats, alis)
            stats.update(system, cfg.min_gaussian_occupancy_first if it == 0 else 10.0, num_gauss, cfg.power, rng)
            history.append({"iter": it, "avg_like": stats.tot_like / max(stats.frames, 1), "frames": stats.frames,
                            "utterances": len(alis), "failed": len(failed), "realigned": realigned,
                            "num_gauss": system.am.num_gauss, "seconds": round(time.monotonic() - start, 2)})
            if 1 <= it <= cfg.max_iter_inc:  # as train_mono.sh: numgauss grows after each of these updates
                num_gauss += inc_gauss
            bar.update(task, advance=1, info=f"like/frame {history[-1]['avg_like']:.3f}, {system.am.num_gauss} Gaussians")
    for utt in failed:
        report.skip(utt, "no alignment within the retry beam (last realignment)")
    report.counts.update({"utterances": len(utts), "aligned": len(alis), "frames": history[-1]["frames"],
                          "gaussians": system.am.num_gauss, "pdfs": system.am.num_pdfs})
    return system, report, history


def align(system: GmmSystem, feats: Mapping[str, np.ndarray], text: Mapping[str, str], lang: Lang,
          out_dir: str | Path, cfg: AlignConfig | None = None, network: bool = False) -> Report:
    """Forced alignment as Kaldi's steps/align_si.sh: writes out_dir/{ali.1.gz … ali.N.gz, num_jobs, final.mdl,
    tree, phones.txt, report.json}. Utterances that cannot be aligned are skipped, named in the report.

    With `network=True`, `feats` are a network's per-frame pdf log-likelihoods (`asr-bn forward` output) and score
    the frames instead of the GMM, as Kaldi's steps/nnet/align.sh; the system's HMM (final.mdl) is written as is.
    """
    cfg = cfg or AlignConfig()
    _check_oov_policy(cfg.oov_policy)
    if cfg.num_jobs < 1:
        raise UsageError(f"num_jobs={cfg.num_jobs} must be at least 1")
    out_dir = Path(out_dir)
    report = Report("align")
    utts = _check_inputs(feats, text, report)
    sil = lang.silence_phone_ids
    if network:
        utts = _check_loglikes(feats, utts, system.trans_model.num_pdfs, report)
        scorer = _network_scorer(system, feats, cfg.acoustic_scale)
    else:
        scorer = _gmm_scorer(system, _boosted(system, sil, cfg.boost_silence), feats, cfg.acoustic_scale)
    with OutputLock(out_dir):
        (out_dir / "report.json").unlink(missing_ok=True)  # written last: it marks a complete run
        graphs = _compile_graphs(system, lang, text, utts, cfg.sil_prob, report, cfg.oov_policy)
        with progress_bar() as bar:
            task = bar.add_task("align", total=len(graphs), info="")
            alis, failed, tot_like, frames = _align_all(
                system, scorer, graphs, feats, cfg.beam, cfg.retry_beam, cfg, on_done=lambda: bar.advance(task))
        for utt in failed:
            report.skip(utt, "no alignment within the retry beam")
        report.counts.update({"utterances": len(utts), "aligned": len(alis),
                              "frames": sum(len(a) for a in alis.values())})
        if frames:
            tool = "align-compiled-mapped" if network else "gmm-align-compiled"
            report.note(f"log-likelihood per frame as {tool} reports it: {tot_like / frames:.4f}")
        system.save(out_dir, lang.phones)
        write_alignments(out_dir, alis, cfg.num_jobs)
        report.save(out_dir / "report.json")
    return report


def write_alignments(out_dir: str | Path, alis: Mapping[str, Sequence[int]], num_jobs: int = 1) -> None:
    """Write ali.1.gz … ali.N.gz (gzipped binary Kaldi int32-vector archives, utterances sorted and split into N
    contiguous parts) and the `num_jobs` file, as steps/align_si.sh leaves them."""
    import kaldiio

    out_dir = Path(out_dir)
    keys = sorted(alis)
    parts = np.array_split(np.arange(len(keys)), num_jobs)
    for job, idx in enumerate(parts, 1):
        with atomic_open(out_dir / f"ali.{job}.gz", "wb") as f:
            with gzip.GzipFile(filename="", fileobj=f, mode="wb", mtime=0) as gz:  # no temp name in the header
                for i in idx:
                    kaldiio.save_ark(gz, {keys[i]: np.asarray(alis[keys[i]], dtype=np.int32)})
    for stale in out_dir.glob("ali.*.gz"):
        suffix = stale.name[4:-3]
        if suffix.isdigit() and int(suffix) > num_jobs:
            stale.unlink()
    write_text(out_dir / "num_jobs", f"{num_jobs}\n")

