"""`asr-bn forward`: a trained model's log-likelihoods for every utterance of a prepared dir, as Kaldi matrices.

Kaldi's hybrid convention (nnet-forward --class-frame-counts): log p(x|s) ∝ log p(s|x) − prior_scale · log p(s),
with the priors of the training targets (`priors.vec` in the model dir, else the counts final.pt keeps). The
matrices (T × num_pdfs, float32) go to a Kaldi archive + scp, or to stdout (`ark:-`) in the data dir's order, so that

    asr-bn forward exp/blstm data/test ark:- | latgen-faster-mapped --acoustic-scale=0.1 … final.mdl HCLG.fst ark:- …

works as Kaldi's own `nnet-forward` pipe does. Batches are sorted by length inside windows of consecutive
utterances (little padding, bounded memory); batch norm is folded into the weights for inference; the GPU is used
when present. `score_frames` runs the same loop against the dir's alignments (frame CE and FER, the paper's table).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator

import numpy as np

from asr_bn.config import ForwardConfig
from asr_bn.device import parse_device
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import file_in
from asr_bn.report import Report

if TYPE_CHECKING:
    import torch

    from asr_bn.batching import UtteranceDataset
    from asr_bn.score import FrameScores

__all__ = ["ForwardConfig", "AcousticModel", "load_acoustic_model", "forward_batches", "forward", "score_frames"]


@dataclass
class AcousticModel:
    """A trained model ready for inference: BN folded, on its device, with its feature pipeline and log-priors."""

    net: "torch.nn.Module"
    device: "torch.device"
    pipeline_path: Path
    log_priors: np.ndarray  # (num_pdfs,) float32; huge for floored pdfs
    num_pdfs: int
    notes: list[str] = field(default_factory=list)  # for the forward report: where the priors came from, floors


def _model_file(model: str | Path) -> Path:
    """final.pt itself, or the model dir holding it."""
    return file_in(model, "final.pt", "model", "give a model dir of `asr-bn train`, with final.pt, or a .pt file")


def load_acoustic_model(model: str | Path, config: ForwardConfig) -> AcousticModel:
    """Load final.pt (BN folded into the weights, eval mode) and the log-priors of its training targets: the model
    dir's priors.vec, else the counts final.pt keeps (noted); the two disagreeing is an error naming both."""
    from asr_bn.alignments import log_priors
    from asr_bn.train import load_model

    device = parse_device(config.device)  # a usage error before any file is read
    path = _model_file(model)
    net, ckpt = load_model(path)
    if getattr(net, "cfg", None) is not None and net.cfg.bn != "none":
        net = net.fold_bn()
    net = net.to(device).eval()
    num_pdfs = int(ckpt["model_config"]["num_pdfs"])
    counts, notes = _prior_counts(path, np.asarray(ckpt["priors"], dtype=np.float64), num_pdfs)
    logp, floored = log_priors(counts, config.prior_floor)
    if len(floored) and not config.posteriors:
        unseen = "never seen in training" if (counts[floored] == 0).all() else "rarer than --prior-floor in training"
        ids = " ".join(map(str, floored[:20])) + (" …" if len(floored) > 20 else "")
        notes.append(f"{len(floored)} pdfs {unseen} (ids {ids}): their log-prior is floored")
    return AcousticModel(net, device, path.parent / "pipeline.json", logp, num_pdfs, notes)


def _prior_counts(path: Path, saved: np.ndarray, num_pdfs: int) -> tuple[np.ndarray, list[str]]:
    """The pdf counts of the training targets: priors.vec beside `path`, checked against the counts `path` keeps,
    or those when priors.vec is absent (with a note saying so)."""
    from asr_bn.alignments import read_counts

    priors_path = path.parent / "priors.vec"
    if not priors_path.is_file():
        if len(saved) != num_pdfs:
            raise AsrBnError(f"{path} keeps {len(saved)} pdf counts for {num_pdfs} outputs (corrupt? train again)")
        return saved, [f"{priors_path} is absent: using the pdf counts kept in {path}"]
    counts = read_counts(priors_path)
    if len(counts) != num_pdfs:
        raise AsrBnError(
            f"{priors_path} has {len(counts)} pdf counts but {path} has {num_pdfs} outputs "
            "(use the model dir's own priors.vec)"
        )
    if not np.array_equal(counts, saved):  # False for other lengths too
        differ = len(counts) if len(saved) != len(counts) else int((counts != saved).sum())
        raise AsrBnError(
            f"{priors_path} disagrees with the pdf counts kept in {path} ({differ} of {len(counts)} pdfs differ); "
            "put back the priors.vec `asr-bn train` wrote with this model, or delete it to use the model's"
        )
    return counts, []


def _check_pipeline(model: AcousticModel, data_dir: Path) -> None:
    from asr_bn.features import FeaturePipeline

    ours, theirs = FeaturePipeline.load(model.pipeline_path), FeaturePipeline.load(data_dir / "pipeline.json")
    if ours != theirs:
        raise AsrBnError(
            f"{data_dir}/pipeline.json differs from the model's {model.pipeline_path} in {ours.mismatch(theirs)}"
        )


def _batches(lengths: np.ndarray, max_frames: int, window: int) -> list[list[int]]:
    """Index batches, window by window in input order; longest first inside a window, each batch at most
    `max_frames` padded frames (B × T_max; a longer utterance goes alone)."""
    out: list[list[int]] = []
    for start in range(0, len(lengths), window):
        idx = sorted(range(start, min(start + window, len(lengths))), key=lambda i: -int(lengths[i]))
        batch: list[int] = []
        for i in idx:
            if batch and (len(batch) + 1) * int(lengths[batch[0]]) > max_frames:
                out.append(batch)
                batch = []
            batch.append(i)
        if batch:
            out.append(batch)
    return out


def _dataset(model: AcousticModel, data_dir: Path, targets: bool) -> "UtteranceDataset":
    """The prepared dir's utterances (with alignments only, when `targets`), after checking its feature pipeline."""
    from asr_bn.batching import UtteranceDataset

    _check_pipeline(model, data_dir)
    dataset = UtteranceDataset(data_dir, model.num_pdfs, targets=targets)
    if not len(dataset):
        raise AsrBnError(f"{data_dir}: no utterances to forward" + (" with targets (pdf.scp)" if targets else ""))
    return dataset


def forward_batches(
    model: AcousticModel, dataset: "UtteranceDataset", config: ForwardConfig
) -> Iterator[tuple[list[str], "torch.Tensor", "torch.Tensor", "torch.Tensor"]]:
    """Run the network over a dataset: (utts, log-posteriors (B, T, P) on the device, targets, lengths) per batch,
    batches in window order (see `_batches`)."""
    import torch

    from asr_bn.batching import make_loader

    batches = _batches(dataset.lengths, config.max_frames, config.window)
    loader = make_loader(dataset, batches, config.num_workers, pin_memory=model.device.type == "cuda")
    with torch.inference_mode():
        for batch in loader:
            batch = batch.check()
            feats = batch.feats.to(model.device, non_blocking=True)
            try:
                log_probs = model.net(feats, batch.lengths)  # (B, T, P)
            except RuntimeError as e:
                oom = batch.out_of_memory(e, model.device, f"lower --max-frames (now {config.max_frames})")
                if oom is None:
                    raise
                raise oom from e
            yield batch.utts, log_probs, batch.targets, batch.lengths


def _in_order(
    model: AcousticModel, dataset: "UtteranceDataset", config: ForwardConfig, report: Report
) -> Iterator[tuple[str, np.ndarray]]:
    """(utt, (T, P) float32 matrix) in the data dir's order: log-posteriors or prior-scaled log-likelihoods."""
    import torch

    offset = None if config.posteriors else torch.from_numpy(config.prior_scale * model.log_priors).to(model.device)
    pending: dict[str, np.ndarray] = {}
    done = frames = 0
    for utts, log_probs, _, lengths in forward_batches(model, dataset, config):
        out = (log_probs if offset is None else log_probs - offset).float().cpu().numpy()
        for i, utt in enumerate(utts):
            pending[utt] = np.ascontiguousarray(out[i, : int(lengths[i])])
        while done < len(dataset.utts) and dataset.utts[done] in pending:  # a window is finished: emit it in order
            mat = pending.pop(dataset.utts[done])
            frames += len(mat)
            yield dataset.utts[done], mat
            done += 1
    report.counts = {"utterances": done, "frames": frames}


def _parse_wspecifier(wspecifier: str) -> tuple[str | None, str | None]:
    """(ark path or '-', scp path or None) of `ark:X`, `ark,scp:X.ark,X.scp`, `scp,ark:X.scp,X.ark`."""
    kinds, sep, paths = wspecifier.partition(":")
    names = [k for k in kinds.split(",") if k not in ("b", "f", "nf", "cs", "ncs")]
    files = paths.split(",") if paths else []
    if sep and names == ["ark"] and len(files) == 1:
        return files[0], None
    if sep and sorted(names) == ["ark", "scp"] and len(files) == 2 and "-" not in files:
        where = dict(zip(names, files))
        return where["ark"], where["scp"]
    raise UsageError(
        f"wspecifier {wspecifier!r}: use ark:-, ark:FILE.ark or ark,scp:FILE.ark,FILE.scp (binary, as Kaldi tools read)"
    )


def _stream(items: Iterator[tuple[str, np.ndarray]], out: BinaryIO) -> None:
    """Write each matrix to `out` as soon as it is ready, in Kaldi's binary archive format (kaldiio's writer)."""
    import kaldiio

    try:
        for utt, mat in items:
            kaldiio.save_ark(out, {utt: mat})
            out.flush()
    except BrokenPipeError as e:
        raise AsrBnError(
            "the program reading the archive on stdout exited early (check the command after the |)"
        ) from e


def forward(
    model: str | Path, data_dir: str | Path, wspecifier: str, config: ForwardConfig | None = None
) -> Report:
    """Write the model's log-likelihoods (or log-posteriors) for every utterance of `data_dir` to `wspecifier`
    (`ark:-` streams binary matrices to stdout; file archives are written atomically), in the dir's order."""
    from asr_bn.batching import prepared_dir
    from asr_bn.io import check_output_file, write_ark_scp
    from asr_bn.progress import progress_bar

    config = config or ForwardConfig()
    config.check()
    ark, scp = _parse_wspecifier(wspecifier)
    for path in (ark, scp) if ark != "-" else ():
        if path is not None:
            check_output_file(path, "wspecifier file")
    data_dir = prepared_dir(data_dir, "DATA_DIR")
    acoustic = load_acoustic_model(model, config)
    report = Report("forward")
    for note in acoustic.notes:
        report.note(note)
    dataset = _dataset(acoustic, data_dir, targets=False)
    with progress_bar() as bar:
        items = _in_order(acoustic, dataset, config, report)
        task = bar.add_task(f"forward {data_dir.name}", total=len(dataset.utts), info=str(acoustic.device))

        def counted() -> Iterator[tuple[str, np.ndarray]]:
            for item in items:
                yield item
                bar.advance(task)

        if ark == "-":
            _stream(counted(), sys.stdout.buffer)
        else:
            write_ark_scp(ark, scp, counted())
    kind = "log-posteriors" if config.posteriors else f"log-likelihoods (prior scale {config.prior_scale})"
    report.note(f"{kind} of {acoustic.num_pdfs} pdfs, device {acoustic.device}")
    return report


def score_frames(
    model: str | Path | AcousticModel, data_dir: str | Path, config: ForwardConfig | None = None
) -> "FrameScores":
    """Frame cross-entropy and frame error rate of the model (a model dir / .pt file, or one already loaded) on a
    prepared dir with alignments (pdf.scp), masked and micro-averaged over all frames (the paper's table)."""
    from asr_bn.batching import prepared_dir
    from asr_bn.score import FrameScores, frame_scores

    config = config or ForwardConfig()
    config.check()
    data_dir = prepared_dir(data_dir, "DATA_DIR")
    acoustic = model if isinstance(model, AcousticModel) else load_acoustic_model(model, config)
    total = FrameScores()
    dataset = _dataset(acoustic, data_dir, targets=True)
    for _, log_probs, targets, lengths in forward_batches(acoustic, dataset, config):
        total = total + frame_scores(log_probs.float(), targets.to(log_probs.device), lengths)
    return total
