"""A speaker-adapted GMM system's features for a network, as Kaldi's steps/nnet/make_fmllr_feats.sh: the prepared
fbank's cepstra through the system's LDA+MLLT (final.mat) and each speaker's fMLLR (trans.* of an align-fmllr or
decode-fmllr dir), written as a prepared dir that `asr-bn train` and `asr-bn forward` read like fbank (Kaldi nnet1's
recipes train on these features; the paper's network on fbank)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from asr_bn.alignments import join_targets
from asr_bn.errors import UsageError
from asr_bn.features import FeaturePipeline
from asr_bn.gmm.sat import speaker_adapted_features, speaker_independent_features
from asr_bn.gmm.features import prepared_gmm_features
from asr_bn.gmm.system import GmmSystem
from asr_bn.io import OutputLock, check_output_dir, write_ark_scp, write_text
from asr_bn.prep import DATA_FILES, DERIVED_FILES
from asr_bn.progress import track
from asr_bn.report import Report

_STAGING = ".fmllr_feats.staging"


def fmllr_input(system_dir: str | Path, append_fbank: bool = False) -> str:
    """The pipeline's `input` of features adapted with `system_dir`'s LDA+MLLT: "fmllr" (or "fmllr+fbank" with the
    fbank appended) and a digest of its final.mat, so that a network trained on them refuses other features."""
    kind = "fmllr+fbank" if append_fbank else "fmllr"
    return f"{kind} " + hashlib.sha256((Path(system_dir) / "final.mat").read_bytes()).hexdigest()[:12]


def write_fmllr_feats(prep_dir: str | Path, system_dir: str | Path, transform_dir: str | Path, out_dir: str | Path,
                      *, delta_order: int = 0, ali_dir: str | Path | None = None, append_fbank: bool = False,
                      ) -> tuple[Report, Report | None]:
    """Write `prep_dir`'s utterances as `system_dir`'s speaker-adapted features into `out_dir` (feats.ark/.scp,
    utt2num_frames, the data files, pipeline.json: input "fmllr …", no CMVN, `delta_order` deltas; report.json
    last), the speakers' transforms from `transform_dir`. A speaker without a transform is one error. With
    `append_fbank` each frame also carries `prep_dir`'s own fbank after its CMVN, without Δ (Kaldi's paste-feats
    of the two; input "fmllr+fbank …"). With `ali_dir` the pdf-id targets of its alignments are joined (pdf.scp,
    as `asr-bn prep --ali-dir`): returns the features' report and the targets' (None without `ali_dir`)."""
    prep_dir, system_dir, out_dir = Path(prep_dir), Path(system_dir), Path(out_dir)
    if not (prep_dir / "pipeline.json").is_file():
        raise UsageError(f"{prep_dir} has no pipeline.json: fmllr-feats reads an `asr-bn prep` dir (for Kaldi's own "
                         f"features use Kaldi's steps/nnet/make_fmllr_feats.sh)")
    if not (system_dir / "final.mat").is_file() or not (system_dir / "final.mdl").is_file():
        raise UsageError(f"{system_dir} has no final.mat and final.mdl: give an LDA+MLLT SAT system (asr-bn gmm sat)")
    if out_dir.resolve() == prep_dir.resolve():
        raise UsageError(f"OUT_DIR {out_dir} is the prepared dir itself; choose another output directory")
    check_output_dir(out_dir, "OUT_DIR")
    feats, _, report = prepared_gmm_features(prep_dir)
    si = speaker_independent_features(feats, system_dir)
    system = GmmSystem.load(system_dir / "final.mdl")
    system.check_features(si, system_dir / "final.mdl")
    adapted = speaker_adapted_features(si, transform_dir, feats.utt2spk)
    dim = system.am.dim  # the features' too (check_features)
    fbank = None
    if append_fbank:
        from asr_bn.batching import UtteranceDataset

        fbank = UtteranceDataset(prep_dir, 1, utts=list(feats), targets=False, delta_order=0)
    pipeline = dataclasses.replace(FeaturePipeline.load(prep_dir / "pipeline.json"), cmvn="none", norm_vars=False,
                                   delta_order=delta_order, input=fmllr_input(system_dir, append_fbank),
                                   input_dim=dim + (fbank.pipeline.output_dim if fbank is not None else 0))
    with OutputLock(out_dir):
        staging = out_dir / _STAGING
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
        staging.mkdir()
        try:
            frames: list[str] = []

            def matrices():  # noqa: ANN202 - (utt, matrix) pairs, counted into utt2num_frames
                for i, utt in enumerate(track(feats, "fMLLR features")):
                    mat = adapted[utt]
                    if fbank is not None:  # the same fbank's frames: as many
                        mat = np.concatenate([mat, fbank[i][0].numpy()], axis=1)
                    frames.append(f"{utt} {mat.shape[0]}\n")
                    yield utt, mat

            write_ark_scp(staging / "feats.ark", staging / "feats.scp", matrices(), scp_ark_path=out_dir / "feats.ark")
            write_text(staging / "utt2num_frames", "".join(frames))
            pipeline.save(staging / "pipeline.json")
            files = ["feats.ark", "feats.scp", "utt2num_frames", "pipeline.json"]
            for name in DATA_FILES:
                if (prep_dir / name).is_file():
                    shutil.copyfile(prep_dir / name, staging / name)
                    files.append(name)
            for name in ("report.json",) + DERIVED_FILES:  # the completion marker, and targets of older features
                (out_dir / name).unlink(missing_ok=True)
            for name in files:
                os.replace(staging / name, out_dir / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        report.counts["utterances"] = len(frames)
        appended = f" + {pipeline.input_dim - dim} of {prep_dir}'s fbank" if fbank is not None else ""
        report.note(f"features of {system_dir} (LDA+MLLT, fMLLR of {transform_dir}), dimension {dim}{appended}")
        report.save(out_dir / "report.json")
        targets = None if ali_dir is None else join_targets(out_dir, ali_dir)
    return report, targets
