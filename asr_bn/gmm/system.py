"""A GMM system in kaldi-hmm-gmm objects (TransitionModel, tree, AmDiagGmm) and Kaldi's files for it: the HMM
topology (utils/gen_topo.pl), final.mdl (binary TransitionModel + AmDiagGmm, read and written), tree, phones.txt."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from asr_bn.alignments import HmmState, Topology, TransitionModel, read_transition_model
from asr_bn.errors import AsrBnError
from asr_bn.io import atomic_open, atomic_path, write_text
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg

__all__ = ["GmmSystem", "make_topology", "am_bytes"]




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


def am_bytes(am: "khg.AmDiagGmm") -> bytes:
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


def read_am(data: bytes, pos: int, path: Path) -> "khg.AmDiagGmm":
    """Parse a binary AmDiagGmm starting at byte `pos` of `data` (the inverse of `am_bytes`)."""
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
    """An HMM-GMM system (monophone or tree-clustered) held in kaldi-hmm-gmm objects (TransitionModel, tree, AmDiagGmm)."""

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
        return self.transition_model().to_kaldi(binary=True) + am_bytes(self.am)

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
        system.am = read_am(data, len(head), path)
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
