"""Per-frame pdf-id targets joined to a prepared data dir (pdf.ark/.scp, targets_report.json), from alignments of
transition-ids (through their model) or of pdf-ids, frame counts checked against the features."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from asr_bn.alignments.archives import alignment_model, read_alignments
from asr_bn.alignments.transition_model import TransitionModel, read_transition_model
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import read_table, write_ark_scp
from asr_bn.kaldi_binary import INT32_MAX
from asr_bn.report import Report

TARGETS_REPORT = "targets_report.json"


def read_num_frames(path: Path) -> dict[str, int]:
    """A prepared dir's utt2num_frames: utterance → frame count."""
    frames: dict[str, int] = {}
    for utt, row in read_table(path, "run `asr-bn prep` on this data dir first").items():
        if not row.rest.isdigit():
            raise AsrBnError(f"{path} line {row.line}: {row.rest!r} is not a frame count (re-run asr-bn prep)")
        frames[utt] = int(row.rest)
    return frames


def join_targets(
    data_dir: str | Path,
    source: str | Path,
    *,
    model: str | Path | None = None,
    pdf_ids: bool = False,
    num_pdfs: int | None = None,
    length_tolerance: int = 0,
) -> Report:
    """Write per-frame pdf-id targets (`pdf.ark/.scp`, int32) for a prepared data dir, and `targets_report.json`.

    `source` is a Kaldi alignment dir (`ali.N.gz` of transition-ids, with its `final.mdl` unless `model` is given)
    or an archive; `pdf_ids=True` means its labels are pdf-ids already (`ali-to-pdf` output or another aligner),
    checked against `num_pdfs`, else against the pdf count of the model when there is one, else only for being
    negative (an id outside is an error naming the file and the utterance). Frame counts must equal
    `utt2num_frames`; an utterance off by at most `length_tolerance` frames is trimmed or padded by repeating its
    last label, one further off is dropped. Drops and utterances with features but no alignment (or the reverse)
    are named in the report. The caller holds the data dir's OutputLock.
    """
    data_dir, source = Path(data_dir), Path(source)
    if length_tolerance < 0:
        raise UsageError(f"--length-tolerance must be 0 or more, not {length_tolerance}")
    frames = read_num_frames(data_dir / "utt2num_frames")
    model = alignment_model(source, model, pdf_ids)
    check_num_pdfs(pdf_ids, num_pdfs)
    tm = read_transition_model(model) if model is not None else None
    if num_pdfs is not None and tm is not None and tm.num_pdfs != num_pdfs:
        raise UsageError(f"--num-pdfs {num_pdfs} disagrees with the {tm.num_pdfs} pdfs of {model}; give one of them")
    limit, bound = _pdf_bound(num_pdfs, tm, model)
    report = Report("targets")
    targets: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    adjusted = 0
    for utt, values, path in read_alignments(source):
        seen.add(utt)
        where = f"{path}, utterance {utt}"
        pdfs = values if pdf_ids else tm.to_pdfs(values, where)  # type: ignore[union-attr]
        if pdf_ids and values.size and (values.min() < 0 or values.max() >= limit):
            bad = int(values[(values < 0) | (values >= limit)][0])
            raise AsrBnError(
                f"{where}: pdf-id {bad} is outside 0..{limit - 1} of {bound} "
                "(targets of another model, or transition-ids? give the model they were made with, or drop --pdf-ids)"
            )
        if utt not in frames:
            report.skip(utt, "alignment but no features")
            continue
        diff = len(pdfs) - frames[utt]
        if diff and (abs(diff) > length_tolerance or not len(pdfs)):
            report.skip(utt, f"alignment length differs from the feature frames by more than {length_tolerance}")
            if len(report.notes) < 5:
                report.note(f"{utt}: {len(pdfs)} alignment frames vs {frames[utt]} feature frames")
            continue
        if diff:
            adjusted += 1
            pdfs = pdfs[: frames[utt]] if diff > 0 else np.concatenate([pdfs, np.repeat(pdfs[-1:], -diff)])
        targets[utt] = np.ascontiguousarray(pdfs, dtype=np.int32)
    for utt in frames:
        if utt not in seen:
            report.skip(utt, "features but no alignment")
    report.counts = {
        "features": len(frames), "alignments": len(seen), "written": len(targets), "trimmed_or_padded": adjusted,
    }
    if limit != INT32_MAX:
        report.counts["num_pdfs"] = limit
    if not targets:
        raise AsrBnError(
            f"no utterance of {data_dir} got targets from {source}: "
            + "; ".join(x.strip() for x in report.lines()[1:3])
            + " (same utterance ids? same frame shift? try --length-tolerance 2)"
        )
    write_ark_scp(data_dir / "pdf.ark", data_dir / "pdf.scp", ((u, targets[u]) for u in sorted(targets)))
    report.save(data_dir / TARGETS_REPORT)
    return report


def check_num_pdfs(pdf_ids: bool, num_pdfs: int | None) -> None:
    """Refuse a `num_pdfs` bound that cannot apply (a UsageError before any work): it needs pdf-id labels and >= 1."""
    if num_pdfs is not None and (not pdf_ids or num_pdfs < 1):
        raise UsageError(f"--num-pdfs {num_pdfs} bounds pdf-id targets: give a count >= 1, with --pdf-ids")


def _pdf_bound(num_pdfs: int | None, tm: TransitionModel | None, model: str | Path | None) -> tuple[int, str]:
    """The pdf count pdf-id targets must stay below, and where it comes from (for the out-of-range error)."""
    if num_pdfs is not None:
        return num_pdfs, f"--num-pdfs {num_pdfs}"
    if tm is not None:
        return tm.num_pdfs, f"model {model}"
    return INT32_MAX, "int32 (no model or --num-pdfs to bound them)"

