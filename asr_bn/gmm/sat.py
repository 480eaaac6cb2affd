"""Speaker-adaptive training with fMLLR, as Kaldi's steps/train_sat.sh (gmm-est-fmllr, compose-transforms,
gmm-acc-stats-twofeats).

Each speaker gets an affine feature transform x ↦ Ax + b (fMLLR, "full" type) that raises the likelihood of its
aligned non-silence frames under the model; the model is trained on the transformed features, the transforms are
re-estimated at `fmllr_iters` and composed with the previous ones. A speaker with fewer than `fmllr_min_count`
frames keeps the identity (Kaldi's fallback), counted in the report. The exp dir adds `trans.N` (per-speaker
transforms, Kaldi matrices that transform-feats --utt2spk applies), `final.alimdl` (the speaker-independent model
for first-pass alignment and decoding) and, on LDA+MLLT features, `final.mat` and `splice_opts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from asr_bn.alignments import TransitionModel
from asr_bn.gmm.convert import read_model_alignments
from asr_bn.gmm.lda_mllt import copy_feature_transform, splice, static_cepstra
from asr_bn.gmm.train_deltas import DeltasConfig, train_tree_system
from asr_bn.gmm.align import (align_all, AlignConfig, alignment_jobs, boosted, check_inputs, compile_graphs, gmm_scorer,
                              kaldi_split, write_alignments)
from asr_bn.gmm.estimate import mle_gmm_update
from asr_bn.gmm.features import FeatureMap
from asr_bn.gmm.system import am_bytes, GmmSystem
from asr_bn.errors import AsrBnError
from asr_bn.jobs import run_jobs
from asr_bn.io import atomic_open, begin_run, error_detail, KALDIIO_READ_ERRORS, OutputLock
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg
from asr_bn.lang import Lang
from asr_bn.progress import progress_bar
from asr_bn.report import Report


@dataclass
class SatConfig(DeltasConfig):
    """train_sat.sh's options: train_deltas's (with its power 0.2), the fMLLR iterations and gmm-est-fmllr's."""

    power: float = 0.2
    fmllr_iters: tuple[int, ...] = (2, 4, 6, 12)
    silence_weight: float = 0.0
    fmllr_min_count: float = 500.0  # FmllrOptions::min_count
    fmllr_num_iters: int = 40  # FmllrOptions::num_iters

    def validate(self) -> None:
        super().validate()
        if any(not 1 <= i < self.num_iters for i in self.fmllr_iters) or self.fmllr_num_iters < 1:
            from asr_bn.errors import UsageError

            raise UsageError(f"sat: fmllr_iters {self.fmllr_iters} must lie in 1..{self.num_iters - 1} and "
                             f"fmllr_num_iters >= 1")


# Per utterance, a posterior over pdfs as parallel arrays (frame, pdf, weight): one entry per frame for an
# alignment, any number for a lattice (Kaldi's Posterior after weight-silence-post, transition-ids mapped to pdfs).
Posterior = tuple[np.ndarray, np.ndarray, np.ndarray]


def weight_silence(tm: TransitionModel, frames: np.ndarray, tids: np.ndarray, weights: np.ndarray,
                   silence: Sequence[int], silence_weight: float) -> Posterior:
    """weight-silence-post on (frame, transition-id, weight) entries: silence phones' weights scaled by
    `silence_weight`, transition-ids mapped to their pdfs, the weights of one frame's pdf summed (statistics are
    linear in them)."""
    tids = np.asarray(tids)
    scale = np.where(np.isin(tm.to_phones(tids), silence), silence_weight, 1.0)
    key = np.asarray(frames, np.int64) * tm.num_pdfs + tm.to_pdfs(tids)
    unique, inverse = np.unique(key, return_inverse=True)
    summed = np.bincount(inverse, np.asarray(weights, np.float64) * scale, len(unique))
    return unique // tm.num_pdfs, unique % tm.num_pdfs, summed


def frame_weights(tm: TransitionModel, alis: Mapping[str, Sequence[int]], silence: Sequence[int],
                  silence_weight: float) -> dict[str, Posterior]:
    """Per utterance its alignment as a posterior (each frame's pdf, weight 1): ali-to-post | weight-silence-post."""
    return {utt: weight_silence(tm, np.arange(len(ali)), np.asarray(ali), np.ones(len(ali)), silence, silence_weight)
            for utt, ali in alis.items()}


def fmllr_stats(system: GmmSystem, feats: Sequence[np.ndarray], weights: Sequence[Posterior],
                posterior_am: "khg.AmDiagGmm | None" = None) -> tuple[float, np.ndarray, np.ndarray]:
    """FmllrDiagGmmAccs (full): β = Σγ, K = Σ γ Σ⁻¹μ x⁺ᵀ (d×(d+1)), G[j] = Σ γ/σ²_j x⁺x⁺ᵀ, with x⁺ = (x, 1) and γ
    the component posteriors of each entry's pdf times its weight (gmm-est-fmllr); with `posterior_am`, the
    posteriors come from that model's Gaussians (gmm-post-to-gpost | gmm-est-fmllr-gpost, as align_fmllr.sh)."""
    dim = feats[0].shape[1]
    x_all = np.concatenate([np.asarray(f)[frames] for f, (frames, _, _) in zip(feats, weights)]).astype(np.float64)
    pdf_all = np.concatenate([p for _, p, _ in weights])
    w_all = np.concatenate([w for _, _, w in weights])
    a, b = np.zeros((len(x_all), dim)), np.zeros((len(x_all), dim))
    for pdf in np.unique(pdf_all[w_all > 0]):
        rows = np.flatnonzero((pdf_all == pdf) & (w_all > 0))
        gmm = system.am.get_pdf(int(pdf))
        scorer = (posterior_am or system.am).get_pdf(int(pdf))
        loglikes = np.asarray(scorer.log_likelihoods_matrix(np.ascontiguousarray(x_all[rows], np.float32)), np.float64)
        post = np.exp(loglikes - loglikes.max(1, keepdims=True))
        post *= (w_all[rows] / post.sum(1))[:, None]
        a[rows] = post @ np.asarray(gmm.means_invvars, np.float64)
        b[rows] = post @ np.asarray(gmm.inv_vars, np.float64)
    used = w_all > 0
    xplus = np.concatenate([x_all[used], np.ones((used.sum(), 1))], axis=1)
    beta = float(w_all[used].sum())
    k = a[used].T @ xplus
    b = b[used]
    g = np.zeros((dim, (dim + 1) ** 2))
    for start in range(0, len(xplus), 4096):  # G as one matrix product per block of rows (bounded memory)
        x = xplus[start:start + 4096]
        g += b[start:start + 4096].T @ (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)
    return beta, k, g.reshape(dim, dim + 1, dim + 1)


def _auxf(w: np.ndarray, beta: float, k: np.ndarray, g: np.ndarray) -> float:
    """FmllrAuxFuncDiagGmm: β log|det A| + Σ_j (w_j·k_j - ½ w_j G_j w_jᵀ)."""
    dim = len(w)
    return float(beta * np.log(abs(np.linalg.det(w[:, :dim]))) + (w * k).sum()
                 - 0.5 * np.einsum("ja,jab,jb->", w, g, w))


def _identity(dim: int) -> np.ndarray:
    """The fMLLR transform that changes nothing: [I | 0], float32 (what gmm-est-fmllr starts from)."""
    return np.concatenate([np.eye(dim), np.zeros((dim, 1))], axis=1).astype(np.float32)


def estimate_fmllr(beta: float, k: np.ndarray, g: np.ndarray, num_iters: int = 40) -> np.ndarray:
    """ComputeFmllrMatrixDiagGmmFull from the identity: row by row, each row set to the maximiser of the auxiliary
    function given the others (the root of a quadratic along the cofactor), `num_iters` sweeps; the identity stays if
    the objective did not rise."""
    dim = len(k)
    w = _identity(dim).astype(np.float64)
    g_inv = np.linalg.inv(g)
    before = _auxf(w, beta, k, g)
    for _ in range(num_iters):
        for i in range(dim):
            cofactor = np.append(np.linalg.inv(w[:, :dim].T)[i], 0.0)
            c_g = g_inv[i] @ cofactor
            e1, e2 = c_g @ cofactor, c_g @ k[i]
            discr = np.sqrt(e2 * e2 + 4 * e1 * beta)
            roots = ((-e2 + discr) / (2 * e1), (-e2 - discr) / (2 * e1))
            auxf = [beta * np.log(abs(a * e1 + e2)) - 0.5 * a * a * e1 for a in roots]
            alpha = roots[0] if auxf[0] > auxf[1] else roots[1]
            w[i] = g_inv[i] @ (alpha * cofactor + k[i])
    after = _auxf(w, beta, k, g)
    if after < before and not np.isclose(after, before):
        return _identity(dim)
    return w.astype(np.float32)


def apply_fmllr(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """transform-feats with an affine matrix: x ↦ Ax + b, rows of `x` are frames."""
    dim = w.shape[0]
    return (x @ w[:, :dim].T.astype(np.float64) + w[:, dim]).astype(np.float32)


def compose(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """compose-transforms --b-is-affine=true NEW OLD: the transform applying OLD then NEW."""
    dim = new.shape[0]
    a = new[:, :dim].astype(np.float64)
    return np.concatenate([a @ old[:, :dim], (a @ old[:, dim] + new[:, dim])[:, None]], axis=1).astype(np.float32)


def estimate_speaker_transforms(system: GmmSystem, feats: Mapping[str, np.ndarray],
                                weights: Mapping[str, Posterior], spk2utt: Mapping[str, list[str]],
                                cfg: SatConfig, report: Report, posterior_am: "khg.AmDiagGmm | None" = None,
                                jobs: Sequence[Sequence[str]] = ()) -> dict[str, np.ndarray]:
    """gmm-est-fmllr --spk2utt: one transform per speaker (the identity below `fmllr_min_count` frames, counted).
    With `jobs` (Kaldi's parts of the data, whole speakers), each part's speakers in a process of its own."""
    job_of = {u: j for j, part in enumerate(jobs) for u in part}
    groups: list[list[str]] = [[] for _ in range(max(len(jobs), 1))]
    for spk, utts in spk2utt.items():
        groups[min((job_of.get(u, len(groups) - 1) for u in utts), default=len(groups) - 1)].append(spk)

    def job(j: int, tick: object) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        out, too_little = {}, {}
        for spk in groups[j]:
            utts = [u for u in spk2utt[spk] if u in weights and u in feats]
            if utts:
                beta, k, g = fmllr_stats(system, [feats[u] for u in utts], [weights[u] for u in utts], posterior_am)
            else:
                beta = 0.0
            if beta > cfg.fmllr_min_count:
                out[spk] = estimate_fmllr(beta, k, g, cfg.fmllr_num_iters)
            else:
                too_little[spk] = beta
        return out, too_little

    done = run_jobs(job, len(groups))
    found = {spk: w for out, _ in done for spk, w in out.items()}
    too_little = {spk: beta for _, low in done for spk, beta in low.items()}
    out, dim = {}, None
    for spk in spk2utt:
        if spk in found:
            out[spk] = found[spk]
            continue
        dim = dim or next(iter(feats.values())).shape[1]  # computed once (features may be read on demand)
        out[spk] = _identity(dim)
        report.counts["speakers with too little data for fMLLR (identity kept)"] = (
            report.counts.get("speakers with too little data for fMLLR (identity kept)", 0) + 1)
        report.note(f"speaker {spk}: {too_little[spk]:.0f} weighted frames, below --fmllr-min-count "
                    f"{cfg.fmllr_min_count:g}: its fMLLR transform is the identity")
    return out


def speaker_independent_features(feats: Mapping[str, np.ndarray], ali_dir: Path) -> Mapping[str, np.ndarray]:
    """The features of the system in `ali_dir` (computed per utterance when asked for): its LDA+MLLT transform of
    the spliced static cepstra when it has a final.mat, else the GMM features themselves (cepstra + Δ+ΔΔ)."""
    mat_path = ali_dir / "final.mat"
    if not mat_path.is_file():
        return feats
    import kaldiio

    mat = kaldiio.load_mat(str(mat_path))

    def project(utt: str, f: np.ndarray) -> np.ndarray:
        static = static_cepstra(f)
        frames, rest = divmod(mat.shape[1], max(static.shape[1], 1))
        if rest or frames % 2 == 0:
            raise AsrBnError(f"utterance {utt}: its {static.shape[1]} static cepstra cannot be spliced to the "
                             f"{mat.shape[1]} inputs of {mat_path} (features of another kind than the system's: "
                             "prepare them as for its training, e.g. the same number of cepstra)")
        return (splice(static, (frames - 1) // 2) @ mat.T).astype(np.float32)

    return FeatureMap(feats, project)


def train_sat(feats: Mapping[str, np.ndarray], text: Mapping[str, str], utt2spk: Mapping[str, str], lang: Lang,
              ali_dir: str | Path, out_dir: str | Path, cfg: SatConfig | None = None) -> tuple[GmmSystem, Report]:
    """Train a speaker-adapted system (steps/train_sat.sh) from the alignments in `ali_dir` (e.g. of an LDA+MLLT
    system, whose final.mat it keeps) on the GMM features `feats`; `utt2spk` groups utterances by speaker."""
    cfg = cfg or SatConfig()
    cfg.validate()
    ali_dir = Path(ali_dir)
    sil = lang.silence_phone_ids
    si_feats = speaker_independent_features(feats, ali_dir)
    spk2utt = _spk2utt(si_feats, utt2spk)
    first = Report("fmllr")
    old = GmmSystem.load(ali_dir / "final.mdl")
    old.check_features(si_feats, ali_dir / "final.mdl")
    old_labels = read_model_alignments(ali_dir, ali_dir / "final.mdl")[1]
    old_alis, jobs = {labels.utt: labels.values for labels in old_labels}, alignment_jobs(old_labels)
    transforms = estimate_speaker_transforms(old, si_feats, frame_weights(old.transition_model(), old_alis, sil,
                                                                          cfg.silence_weight), spk2utt, cfg, first,
                                             jobs=jobs)
    fmllr = _Fmllr(si_feats, transforms, utt2spk, spk2utt, cfg, sil, jobs)

    def write_extra(out: Path, system: GmmSystem, alis: Mapping[str, list[int]], current: Mapping[str, np.ndarray]) -> None:
        _write_transforms(out, ali_dir, fmllr.transforms)
        with atomic_open(out / "final.alimdl", "wb", encoding=None) as f:
            f.write(_alignment_model(system, alis, current, si_feats))

    system, report = train_tree_system("train_sat", fmllr.features(), text, lang, ali_dir, out_dir, cfg,
                                       adaptation=fmllr, extra_config={"fmllr_iters": list(cfg.fmllr_iters)},
                                       write_extra=write_extra)
    for key, value in first.counts.items():
        report.counts[f"{key} (first pass)"] = value
    return system, report


class _Fmllr:
    """The rung's feature transforms: one fMLLR per speaker, re-estimated at `fmllr_iters` from the pass's
    alignments and composed with the previous one (gmm-est-fmllr + compose-transforms)."""

    def __init__(self, si_feats: Mapping[str, np.ndarray], transforms: dict[str, np.ndarray],
                 utt2spk: Mapping[str, str], spk2utt: Mapping[str, list[str]], cfg: SatConfig,
                 silence: Sequence[int], jobs: Sequence[Sequence[str]]) -> None:
        self.si_feats, self.transforms, self.utt2spk, self.spk2utt = si_feats, transforms, utt2spk, spk2utt
        self.cfg, self.silence, self.jobs = cfg, silence, jobs

    def features(self) -> Mapping[str, np.ndarray]:
        return fmllr_adapted(self.si_feats, self.transforms, self.utt2spk)  # update and restore rebind, not mutate

    def update(self, it: int, system: GmmSystem, alis: Mapping[str, list[int]]) -> bool:
        if it not in self.cfg.fmllr_iters:
            return False
        weights = frame_weights(system.transition_model(), alis, self.silence, self.cfg.silence_weight)
        new = estimate_speaker_transforms(system, self.features(), weights, self.spk2utt, self.cfg, Report("fmllr"),
                                          jobs=self.jobs)
        self.transforms = {spk: compose(new[spk], w) for spk, w in self.transforms.items()}
        return True

    def state(self) -> dict[str, np.ndarray]:
        return dict(self.transforms)

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        self.transforms = dict(state)


def _alignment_model(system: GmmSystem, alis: Mapping[str, list[int]], adapted: Mapping[str, np.ndarray],
                     si_feats: Mapping[str, np.ndarray]) -> bytes:
    """final.alimdl (gmm-acc-stats-twofeats + gmm-est --remove-low-count-gaussians=false): the model re-estimated on
    the speaker-independent features with the adapted model's posteriors, for first-pass alignment and decoding."""
    tid2pdf = np.asarray(system.trans_model.transition_id_to_pdf_array(), dtype=np.int64)
    acc = khg.AccumAmDiagGmm()
    acc.init(system.am, int(khg.GmmUpdateFlags.kGmmAll))
    for utt, ali in alis.items():
        for x1, x2, pdf in zip(adapted[utt], si_feats[utt], tid2pdf[np.asarray(ali)].tolist()):
            acc.accumulate_for_gmm_two_feats(system.am, x1, x2, pdf, 1.0)
    am = khg.AmDiagGmm()
    am.copy_from_am_diag_gmm(system.am)
    for pdf in range(am.num_pdfs):
        stats = acc.get_acc(pdf)
        mle_gmm_update(am.get_pdf(pdf), *(np.asarray(x, np.float64) for x in
                                          (stats.occupancy, stats.mean_accumulator, stats.variance_accumulator)),
                       remove_low_count=False)
    return system.transition_model().to_kaldi(binary=True) + am_bytes(am)


def _spk2utt(utts: Mapping[str, object], utt2spk: Mapping[str, str]) -> dict[str, list[str]]:
    """Speaker → its utterances (sorted); an utterance without a speaker is its own speaker."""
    out: dict[str, list[str]] = {}
    for utt in sorted(utts):
        out.setdefault(utt2spk.get(utt, utt), []).append(utt)
    return out


def write_transforms(path: Path, transforms: Mapping[str, np.ndarray]) -> None:
    """Per-speaker fMLLR matrices as a Kaldi archive (trans.N, what transform-feats --utt2spk reads)."""
    import kaldiio

    with atomic_open(path, "wb", encoding=None) as f:
        kaldiio.save_ark(f, {s: transforms[s] for s in sorted(transforms)})


def speaker_adapted_features(feats: Mapping[str, np.ndarray], transform_dir: str | Path,
                             utt2spk: Mapping[str, str]) -> Mapping[str, np.ndarray]:
    """`feats` through each speaker's fMLLR from `transform_dir`'s trans.* (a decode-fmllr or align-fmllr dir, or
    Kaldi's: decode.sh --transform-dir); a speaker without one, or a transform of another dimension, is one error."""
    import kaldiio

    transform_dir = Path(transform_dir)
    paths = sorted(p for p in transform_dir.glob("trans.*") if p.suffix[1:].isdigit())
    if not paths:
        raise AsrBnError(f"{transform_dir}: no trans.N files (give the dir of `asr-bn gmm decode-fmllr` or "
                         f"`align-fmllr` on these utterances)")
    transforms: dict[str, np.ndarray] = {}
    for path in paths:
        try:
            transforms.update(kaldiio.load_ark(str(path)))
        except KALDIIO_READ_ERRORS as e:
            raise AsrBnError(f"{path}: not a Kaldi archive of matrices ({error_detail(e)}); write it again") from e
    missing = sorted({utt2spk.get(u, u) for u in feats} - set(transforms))
    if missing:
        raise AsrBnError(f"{transform_dir}: no fMLLR transform for speaker(s) {' '.join(missing[:5])}; its transforms "
                         f"are of other data: adapt these utterances with decode-fmllr or align-fmllr first")
    dim = next(iter(feats.values())).shape[1] if feats else 0
    shapes = {m.shape for m in transforms.values()}
    if feats and shapes != {(dim, dim + 1)}:
        raise AsrBnError(f"{transform_dir}: fMLLR matrices of shape {sorted(shapes)} for features of dimension {dim} "
                         f"(transforms of another system)")
    return fmllr_adapted(feats, transforms, utt2spk)


def fmllr_adapted(feats: Mapping[str, np.ndarray], transforms: Mapping[str, np.ndarray],
                  utt2spk: Mapping[str, str]) -> Mapping[str, np.ndarray]:
    """`feats` under each speaker's fMLLR transform (transform-feats --utt2spk), computed per utterance when asked
    for; an utterance without a speaker is its own speaker."""
    return FeatureMap(feats, lambda u, x: apply_fmllr(transforms[utt2spk.get(u, u)], x))


def _write_transforms(out: Path, src: Path, transforms: Mapping[str, np.ndarray]) -> None:
    """trans.1 and the source system's final.mat and splice_opts."""
    write_transforms(out / "trans.1", transforms)
    copy_feature_transform(src, out)


def align_fmllr(src_dir: str | Path, feats: Mapping[str, np.ndarray], text: Mapping[str, str],
                utt2spk: Mapping[str, str], lang: Lang, out_dir: str | Path, cfg: AlignConfig | None = None,
                sat: SatConfig | None = None) -> Report:
    """Kaldi's steps/align_fmllr.sh with a speaker-adapted system in `src_dir`: align with final.alimdl on the
    speaker-independent features, estimate each speaker's fMLLR from that alignment (the identity, counted, for a
    speaker with too little of it), align every utterance again with final.mdl on the adapted features. Writes
    ali.N.gz, num_jobs, trans.1, final.mdl, tree, final.mat, report.json (last)."""
    cfg, sat = cfg or AlignConfig(), sat or SatConfig()
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    report = Report("align_fmllr")
    system = GmmSystem.load(src_dir / "final.mdl")
    alimdl = GmmSystem.load(src_dir / "final.alimdl") if (src_dir / "final.alimdl").is_file() else system
    sil = lang.silence_phone_ids
    si_feats = speaker_independent_features(feats, src_dir)
    system.check_features(si_feats, src_dir / "final.mdl")
    utts = check_inputs(si_feats, text, report)
    jobs = kaldi_split(sorted(feats), cfg.num_jobs, utt2spk)
    with OutputLock(out_dir):
        begin_run(out_dir)
        graphs = compile_graphs(system, lang, text, utts, cfg.sil_prob, report, cfg.oov_policy)
        with progress_bar() as bar:  # both passes: the speaker-independent one, then the adapted one
            task = bar.add_task("align-fmllr", total=2 * len(graphs), info="speaker-independent pass")
            scorer = gmm_scorer(alimdl, boosted(alimdl, sil, cfg.boost_silence), si_feats, cfg.acoustic_scale)
            first, _, _, _ = align_all(alimdl, scorer, graphs, cfg.beam, cfg.retry_beam, cfg,
                                       lambda n: bar.advance(task, n), jobs)
            bar.update(task, completed=len(graphs), info="fMLLR transforms")
            weights = frame_weights(alimdl.transition_model(), first, sil, sat.silence_weight)
            spk2utt = _spk2utt(graphs, utt2spk)  # every speaker, as gmm-est-fmllr: identity for those without data
            transforms = estimate_speaker_transforms(
                system, si_feats, weights, spk2utt, sat, report, jobs=jobs,
                posterior_am=alimdl.am if alimdl is not system else None)
            adapted = fmllr_adapted(si_feats, transforms, utt2spk)
            scorer = gmm_scorer(system, boosted(system, sil, cfg.boost_silence), adapted, cfg.acoustic_scale)
            bar.update(task, info="adapted pass")
            alis, failed, tot_like, frames = align_all(system, scorer, graphs, cfg.beam, cfg.retry_beam,
                                                        cfg, lambda n: bar.advance(task, n), jobs)
            bar.update(task, completed=2 * len(graphs), info="")
        for utt in failed:  # the adapted pass aligns every utterance, as align_fmllr.sh's last gmm-align-compiled
            report.skip(utt, "no alignment within the retry beam")
        report.counts.update({"utterances": len(utts), "aligned": len(alis), "speakers": len(spk2utt),
                              "frames": sum(len(a) for a in alis.values())})
        if frames:
            report.note(f"log-likelihood per frame as gmm-align-compiled reports it: {tot_like / frames:.4f}")
        system.save(out_dir, lang.phones)
        write_alignments(out_dir, alis, jobs)
        _write_transforms(out_dir, src_dir, transforms)
        report.save(out_dir / "report.json")
    return report
