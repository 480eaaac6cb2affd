"""`asr-bn prep`: a Kaldi data dir → a prepared dir (docs/ARCHITECTURE.md): raw fbank feats.{ark,scp}, CMVN stats
cmvn.{ark,scp}, utt2num_frames, the data-dir files of the written utterances, pipeline.json and report.json.

Crash safety: everything is built in OUT_DIR/.prep.partial/ and moved into place at the end, report.json last, so
a final name always holds a complete file and report.json marks a complete run. A rerun with the same inputs and
options finds report.json and skips the work ("already done").
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from asr_bn.alignments import alignment_files, alignment_model, check_num_pdfs, join_targets
from asr_bn.cmvn import compute_cmvn_stats
from asr_bn.data import AudioError, DataDir, cut_segment, load_data_dir, load_recording, write_data_dir
from asr_bn.device import parse_device
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.features import FbankConfig, FeaturePipeline, compute_fbank
from asr_bn.io import OutputLock, check_output_dir, read_compressed, write_ark_scp, write_text
from asr_bn.progress import progress_bar
from asr_bn.report import Report

__all__ = ["PrepResult", "prepare_kaldi", "prepare_wsj", "WSJ_SETS", "WSJ_ALI_DIRS", "wsj_pipeline"]

WSJ_SETS = ("train_si284", "test_dev93", "test_eval92")
# Kaldi's tri4b alignments of each set (run.sh makes the train one; the README says how to make the dev one)
WSJ_ALI_DIRS = {"train_si284": "exp/tri4b_ali_si284", "test_dev93": "exp/tri4b_ali_dev93"}
KALDI_SPH2PIPE = "KALDI_ROOT/tools/sph2pipe_v2.5/sph2pipe"
DATA_FILES = ("wav.scp", "segments", "utt2spk", "spk2utt", "text", "utt2dur")
_OUTPUT_FILES = DATA_FILES + ("feats.ark", "feats.scp", "cmvn.ark", "cmvn.scp", "utt2num_frames", "pipeline.json")
DERIVED_FILES = ("pdf.ark", "pdf.scp", "targets_report.json")  # targets joined to the features (asr_bn.alignments)
_STAGING = ".prep.partial"
_BATCH_SAMPLES = 16000 * 200  # audio per compute_fbank call (about 200 s at 16 kHz): few calls, bounded memory


@dataclass
class PrepResult:
    """What one `prepare_kaldi` run did: the output dir, its report, and whether it was already complete."""

    out_dir: Path
    report: Report
    already_done: bool = False
    targets: Report | None = None  # alignments joined to the features (--ali-dir), see asr_bn.alignments


def prepare_kaldi(
    data_dir: str | Path,
    out_dir: str | Path,
    pipeline: FeaturePipeline,
    *,
    compress: bool = False,
    nj: int = 1,
    threads: int = 1,
    device: str = "cpu",
    skip_bad: bool = False,
    channel: int | None = None,
    sph2pipe: str | None = None,
    force: bool = False,
    ali_dir: str | Path | None = None,
    length_tolerance: int = 0,
    pdf_ids: bool = False,
    model: str | Path | None = None,
    num_pdfs: int | None = None,
) -> PrepResult:
    """Compute raw fbank and CMVN stats of a Kaldi data dir into `out_dir` (layout in docs/ARCHITECTURE.md).

    Audio is loaded by `nj` threads and fbank runs in batches on `device` (on the CPU, `threads` groups at once).
    Unreadable audio, or audio at another sample rate, is an AsrBnError unless `skip_bad` (then a named skip); audio
    shorter than one frame is always a named skip. `sph2pipe` replaces the program of wav.scp's sph2pipe pipes. With
    `force` a complete output is redone. With `ali_dir` (Kaldi ali.N.gz + final.mdl) the pdf-id targets are joined
    to the features (`join_targets`, every run): `model` replaces ALI_DIR/final.mdl; with `pdf_ids` the labels are
    pdf-ids already, bounded by `num_pdfs` or the model's pdf count when given.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if nj < 1:
        raise UsageError(f"--nj {nj}: need at least 1 job")
    device = str(parse_device(device))
    if data_dir.resolve() == out_dir.resolve():
        raise UsageError(f"OUT_DIR {out_dir} is the data dir itself; choose another output directory")
    check_output_dir(out_dir, "OUT_DIR")
    report = Report("prep")
    data = load_data_dir(data_dir, report)  # validation first: a bad data dir leaves OUT_DIR untouched
    if sph2pipe is not None:
        _use_sph2pipe(data, sph2pipe)
    _check_pipe_programs(data)
    targets = _Targets(ali_dir, length_tolerance, pdf_ids, model, num_pdfs)
    targets.check()  # a wrong --ali-dir or --model fails before the features are computed
    signature = {
        "data_dir": str(data_dir.resolve()),
        "inputs": _input_digests(data_dir),
        "pipeline": pipeline.to_dict(),
        "compress": compress,
        "channel": channel,
        "skip_bad": skip_bad,
        "sph2pipe": sph2pipe,
    }
    with OutputLock(out_dir):
        if not force and _is_done(out_dir, signature):
            return PrepResult(out_dir, _saved_report(out_dir), True, targets.join(out_dir))
        staging = out_dir / _STAGING
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
        try:
            files = _write_outputs(
                data,
                staging,
                pipeline,
                report,
                compress=compress,
                nj=nj,
                threads=threads,
                device=device,
                skip_bad=skip_bad,
                channel=channel,
            )
            _publish(staging, out_dir, files, report, signature)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        joined = targets.join(out_dir)
    return PrepResult(out_dir, report, targets=joined)


@dataclass
class _Targets:
    """The --ali-dir options of one prep run: what `join_targets` joins to the features after every run."""

    ali_dir: str | Path | None
    length_tolerance: int
    pdf_ids: bool
    model: str | Path | None
    num_pdfs: int | None

    def check(self) -> None:
        """Refuse options without their --ali-dir, and a missing alignment source or model, before any work."""
        if self.ali_dir is None:
            given = [flag for flag, on in (("--pdf-ids", self.pdf_ids), ("--model", self.model is not None),
                                           ("--num-pdfs", self.num_pdfs is not None)) if on]  # fmt: skip
            if given:
                raise UsageError(f"{', '.join(given)}: options of the alignments of --ali-dir; give --ali-dir too")
            return
        check_num_pdfs(self.pdf_ids, self.num_pdfs)
        alignment_files(self.ali_dir)
        alignment_model(self.ali_dir, self.model, self.pdf_ids)
        if self.model is not None and not Path(self.model).is_file():
            raise UsageError(f"--model {self.model}: no such file (give the final.mdl the alignments were made with)")

    def join(self, out_dir: Path) -> Report | None:
        """The pdf-id targets joined to the prepared features (pdf.ark/.scp), or None without --ali-dir."""
        if self.ali_dir is None:
            return None
        return join_targets(
            out_dir, self.ali_dir, model=self.model, pdf_ids=self.pdf_ids, num_pdfs=self.num_pdfs,
            length_tolerance=self.length_tolerance,
        )  # fmt: skip


def wsj_pipeline(fbank: FbankConfig | None = None, cmvn: str = "speaker", norm_vars: bool = False) -> FeaturePipeline:
    """The paper's features for WSJ: 40 log-mel fbank at 16 kHz (Kaldi's other defaults), Δ+ΔΔ, speaker CMVN."""
    fbank = fbank or FbankConfig(sample_frequency=16000.0, num_mel_bins=40)
    return FeaturePipeline(fbank, cmvn=cmvn, norm_vars=norm_vars)  # type: ignore[arg-type]


def prepare_wsj(
    s5_dir: str | Path,
    out_dir: str | Path,
    pipeline: FeaturePipeline | None = None,
    *,
    sets: Sequence[str] = WSJ_SETS,
    on_set: Callable[[str, PrepResult], None] | None = None,
    ali_dirs: Mapping[str, str | Path] | None = None,
    pdf_ids: bool = False,
    num_pdfs: int | None = None,
    **options: object,
) -> list[PrepResult]:
    """`prepare_kaldi` on each WSJ set of a Kaldi egs/wsj/s5 tree (s5/data/<set> → out_dir/<set>).

    `pipeline` defaults to `wsj_pipeline()`; `options` are prepare_kaldi's; `on_set` is called after each set
    (e.g. to print its report). `ali_dirs` maps sets to the alignment dirs joined to them; by default the
    `WSJ_ALI_DIRS` of s5 that exist; `pdf_ids` and `num_pdfs` (prepare_kaldi's) apply to each of them.
    """
    s5_dir, out_dir = Path(s5_dir), check_output_dir(out_dir, "OUT_DIR")
    pipeline = pipeline or wsj_pipeline()
    if not sets:
        raise UsageError("--sets is empty; name at least one data set, e.g. --sets train_si284,test_dev93")
    if not (s5_dir / "data").is_dir():
        raise UsageError(
            f"{s5_dir} has no data/ folder; give the Kaldi egs/wsj/s5 directory after its data prep "
            f"(local/wsj_data_prep.sh, local/wsj_format_data.sh)"
        )
    missing = [s for s in sets if not (s5_dir / "data" / s).is_dir()]
    if missing:
        raise AsrBnError(
            f"{s5_dir / 'data'} has no {', '.join(missing)}; "
            f"run Kaldi's WSJ data prep, or choose other sets with --sets"
        )
    if ali_dirs is None:
        ali_dirs = {name: s5_dir / d for name, d in WSJ_ALI_DIRS.items() if name in sets and (s5_dir / d).is_dir()}
    if set(ali_dirs) - set(sets):
        unknown = ", ".join(sorted(set(ali_dirs) - set(sets)))
        raise UsageError(f"--ali-dir for {unknown}, which is not among --sets {','.join(sets)}")
    if (pdf_ids or num_pdfs is not None) and not ali_dirs:
        raise UsageError(
            f"--pdf-ids and --num-pdfs describe alignments, but no set has any ({s5_dir / 'exp'} has none of "
            f"{', '.join(WSJ_ALI_DIRS.values())}); give --ali-dir SET=DIR"
        )
    results = []
    with OutputLock(out_dir):
        for name in sets:
            ali_dir = ali_dirs.get(name)
            targets = {"ali_dir": ali_dir, "pdf_ids": pdf_ids, "num_pdfs": num_pdfs} if ali_dir is not None else {}
            result = prepare_kaldi(
                s5_dir / "data" / name, out_dir / name, pipeline, **targets, **options  # type: ignore[arg-type]
            )
            if on_set is not None:
                on_set(name, result)
            results.append(result)
    return results


# ----------------------------------------------------------------------------------------------------------------
# Pipes of wav.scp


def _pipe_tokens(entry: str) -> list[str] | None:
    """The words of a `cmd |` wav.scp entry, or None for a file / ark entry."""
    if not entry.endswith("|"):
        return None
    try:
        return shlex.split(entry[:-1])
    except ValueError:
        return None


def _is_sph2pipe(program: str) -> bool:
    return Path(program).name.startswith("sph2pipe")


def _use_sph2pipe(data: DataDir, sph2pipe: str) -> None:
    """Replace the program of every sph2pipe pipe in `data.recordings` by `sph2pipe` (the --sph2pipe option)."""
    path = Path(sph2pipe)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise UsageError(f"--sph2pipe {sph2pipe} is not an executable file (Kaldi builds it at {KALDI_SPH2PIPE})")
    for rec, entry in data.recordings.items():
        tokens = _pipe_tokens(entry)
        if tokens and _is_sph2pipe(tokens[0]):
            rest = entry[len(entry.split(None, 1)[0]) :]  # the arguments and the final |, as written
            data.recordings[rec] = f"{shlex.quote(str(path.resolve()))}{rest}"


def _check_pipe_programs(data: DataDir) -> None:
    """Fail early, once, when a program the wav.scp pipes run by path (as Kaldi writes sph2pipe), or sph2pipe
    itself, does not exist, rather than once per utterance. Other bare names may be shell builtins: a failing one
    shows up as a failing pipe."""
    seen: set[str] = set()
    for rec, entry in data.recordings.items():
        tokens = _pipe_tokens(entry)
        if not tokens or tokens[0] in seen:
            continue
        program = tokens[0]
        seen.add(program)
        if "/" in program:
            if (data.root / program).is_file() and os.access(data.root / program, os.X_OK):
                continue
        elif not _is_sph2pipe(program) or shutil.which(program) is not None:
            continue
        if _is_sph2pipe(program):
            raise AsrBnError(
                f"sph2pipe not found at {program} (run by the wav.scp pipes of {data.path}, e.g. recording {rec}); "
                f"Kaldi builds it at {KALDI_SPH2PIPE} (cd KALDI_ROOT/tools && make), or pass --sph2pipe PATH"
            )
        raise AsrBnError(
            f"program {program} of the wav.scp pipes of {data.path} (e.g. recording {rec}) is not found; "
            f"install it or fix wav.scp"
        )


# ----------------------------------------------------------------------------------------------------------------
# Idempotency


def _input_digests(data_dir: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
        for name in DATA_FILES
        if (data_dir / name).is_file()
    }


def _is_done(out_dir: Path, signature: dict) -> bool:
    """True when out_dir holds a complete prep with the same signature (report.json is written last)."""
    try:
        saved = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(saved, dict) or saved.get("signature") != signature:
        return False
    return all((out_dir / name).is_file() for name in saved.get("files", []))


def _saved_report(out_dir: Path) -> Report:
    """The Report of a complete earlier run, from its report.json."""
    saved = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    report = Report(saved["stage"], dict(saved["counts"]), notes=list(saved["notes"]))
    for reason, utts in saved["skipped"].items():
        report.skipped[reason].extend(utts)
    return report


def _publish(staging: Path, out_dir: Path, files: list[str], report: Report, signature: dict) -> None:
    """Move the staged files onto their final names; report.json (the completion marker) goes last."""
    (out_dir / "report.json").unlink(missing_ok=True)
    for name in _OUTPUT_FILES + DERIVED_FILES:
        if name not in files and (out_dir / name).exists():
            (out_dir / name).unlink()  # from an earlier run: other options, or targets joined to the old features
            if name in DERIVED_FILES:
                report.note(
                    f"removed {name} of the earlier run (it belonged to the old features; join the alignments again)"
                )
    for name in files:
        os.replace(staging / name, out_dir / name)
    write_text(
        out_dir / "report.json",
        json.dumps({**report.to_dict(), "files": files, "signature": signature}, indent=2) + "\n",
    )


# ----------------------------------------------------------------------------------------------------------------
# The work


def _write_outputs(
    data: DataDir,
    staging: Path,
    pipeline: FeaturePipeline,
    report: Report,
    *,
    compress: bool,
    nj: int,
    threads: int,
    device: str,
    skip_bad: bool,
    channel: int | None,
) -> list[str]:
    """Write every output file into `staging`; returns their names."""
    cfg = pipeline.fbank
    method = 2 if compress else None
    num_frames: dict[str, int] = {}
    durations: dict[str, float] = {}
    stats: dict[str, np.ndarray] = {}

    def features() -> Iterator[tuple[str, np.ndarray]]:
        with progress_bar() as bar:
            task = bar.add_task(f"prep {data.path.name}", total=len(data.utterances), info="")
            for batch in _batches(
                _waves(data, cfg, nj, skip_bad, channel, report, lambda: bar.advance(task)), _BATCH_SAMPLES
            ):
                feats = compute_fbank([w for _, w in batch], cfg, device=device, threads=threads)
                for (utt, wave), f in zip(batch, feats):
                    bar.advance(task)
                    mat = f.numpy()
                    if mat.shape[0] == 0:
                        report.skip(utt, "shorter than one frame")
                        continue
                    if not np.isfinite(mat).all():
                        raise AsrBnError(
                            f"utterance {utt}: NaN or infinity in its fbank features; "
                            f"check its audio ({data.recordings[data.utterances[utt].recording]})"
                        )
                    stats[utt] = compute_cmvn_stats([_as_stored(mat, method)])
                    num_frames[utt] = mat.shape[0]
                    durations[utt] = len(wave) / cfg.sample_frequency
                    yield utt, mat
                bar.update(task, info=f"skipped {report.num_skipped}" if report.num_skipped else "")

    write_ark_scp(
        staging / "feats.ark",
        staging / "feats.scp",
        features(),
        compression_method=method,
        scp_ark_path=staging.parent / "feats.ark",
    )
    written = sorted(num_frames)
    if not written:
        reasons = "; ".join(f"{reason}: {len(utts)}" for reason, utts in report.skipped.items())
        raise AsrBnError(
            f"no utterance of {data.path} could be prepared ({reasons or 'the data dir is empty'}); fix the data dir"
        )
    files = ["feats.ark", "feats.scp"]
    if pipeline.cmvn != "none":
        write_ark_scp(
            staging / "cmvn.ark",
            staging / "cmvn.scp",
            _cmvn_stats(pipeline.cmvn, data, written, stats).items(),
            scp_ark_path=staging.parent / "cmvn.ark",
        )
        files += ["cmvn.ark", "cmvn.scp"]
    write_text(staging / "utt2num_frames", "".join(f"{u} {num_frames[u]}\n" for u in written))
    write_data_dir(data, staging, written, durations)
    pipeline.save(staging / "pipeline.json")
    files += [n for n in DATA_FILES if (staging / n).is_file()] + ["utt2num_frames", "pipeline.json"]
    report.counts.update({"written": len(written), "skipped": report.num_skipped, "frames": sum(num_frames.values())})
    return files


def _as_stored(mat: np.ndarray, compression_method: int | None) -> np.ndarray:
    """The matrix as a reader of the archive will see it (after Kaldi compression, expanded as Kaldi and
    `read_matrix` do), so CMVN stats match Kaldi's compute-cmvn-stats run on feats.scp."""
    if compression_method is None:
        return mat
    import kaldiio

    buf = io.BytesIO()
    kaldiio.save_ark(buf, {"x": mat}, compression_method=compression_method)
    buf.seek(2)  # past the key "x "
    stored = read_compressed(buf)
    if stored is None:
        raise AsrBnError(f"internal: compression method {compression_method} did not write Kaldi's `CM` format")
    return stored


def _cmvn_stats(mode: str, data: DataDir, written: list[str], stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-utterance stats summed per speaker (spk2utt of the written utterances), kept per utterance, or summed."""
    if mode == "utterance":
        return {u: stats[u] for u in written}
    if mode == "global":
        return {"global": sum(stats[u] for u in written)}  # type: ignore[dict-item]
    per_speaker: dict[str, np.ndarray] = {}
    for u in written:
        spk = data.utterances[u].speaker
        per_speaker[spk] = per_speaker[spk] + stats[u] if spk in per_speaker else stats[u].copy()
    return dict(sorted(per_speaker.items()))


def _waves(
    data: DataDir,
    cfg: FbankConfig,
    nj: int,
    skip_bad: bool,
    channel: int | None,
    report: Report,
    on_skip: Callable[[], None],
) -> Iterator[tuple[str, np.ndarray]]:
    """(utterance, samples) in sorted order, loaded by `nj` threads a few recordings ahead; bad audio is raised, or
    skipped by name with `skip_bad` (`on_skip` is called per skipped utterance, for the progress bar)."""
    rate = int(cfg.sample_frequency)
    if rate != cfg.sample_frequency:
        raise UsageError(f"sample_frequency {cfg.sample_frequency} is not a whole number of Hz")
    # Consecutive utterances of one recording (segments) share one load.
    groups = [(rec, list(utts)) for rec, utts in groupby(data.utterances, key=lambda u: data.utterances[u].recording)]

    def load(rec: str, utts: list[str]) -> list[tuple[str, np.ndarray | AudioError]]:
        try:
            wave = load_recording(data, rec, sample_rate=rate, channel=channel, utt=utts[0])
        except AudioError as e:
            return [(u, e) for u in utts]
        out: list[tuple[str, np.ndarray | AudioError]] = []
        for u in utts:
            try:
                out.append((u, cut_segment(wave, data.utterances[u], rate, data.path / "segments")))
            except AudioError as e:
                out.append((u, e))
        return out

    with ThreadPoolExecutor(max_workers=nj) as pool:
        pending: deque[Future] = deque()
        todo = iter(groups)
        try:
            for _ in range(2 * nj):
                if (g := next(todo, None)) is not None:
                    pending.append(pool.submit(load, *g))
            while pending:
                results = pending.popleft().result()
                if (g := next(todo, None)) is not None:
                    pending.append(pool.submit(load, *g))
                for utt, wave in results:
                    if isinstance(wave, AudioError):
                        if not skip_bad:
                            raise wave
                        report.skip(utt, wave.reason)
                        on_skip()
                    else:
                        yield utt, wave
        finally:
            for f in pending:
                f.cancel()


def _batches(waves: Iterator[tuple[str, np.ndarray]], max_samples: int) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Group (utterance, samples) pairs into lists of about `max_samples` samples for one compute_fbank call."""
    batch: list[tuple[str, np.ndarray]] = []
    size = 0
    for item in waves:
        batch.append(item)
        size += len(item[1])
        if size >= max_samples:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
