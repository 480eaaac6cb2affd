"""Speed perturbation of a Kaldi data dir, as Kaldi's utils/data/perturb_data_dir_speed_3way.sh: each factor f ≠ 1
adds a copy of every recording played f times as fast (tempo and pitch together, as sox's `speed` effect), with
`sp<f>-` before its recording, utterance and speaker ids and its segments' times divided by f; factor 1 keeps the
originals as they are; utt2uniq names the original of every utterance, utt2dur its duration. The copies are
written once as 16-bit WAV files under OUT/wav (asr-bn runs no sox), so the output is a plain data dir that Kaldi's
tools and every asr-bn command read.
"""

from __future__ import annotations

import contextlib
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from asr_bn.data import AudioError, DataDir, Utterance, load_data_dir, load_recording, write_data_dir
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import atomic_path, write_text
from asr_bn.report import Report

__all__ = ["perturb_speed", "speed_factors", "change_speed"]

_MAX_DENOMINATOR = 100  # factors are rational with a small denominator (0.9 = 9/10): a short polyphase filter


def speed_factors(text: str) -> tuple[float, ...]:
    """The factors of `--factors 0.9,1.0,1.1`: within 0.5..2, distinct, each a ratio of integers up to 100."""
    try:
        factors = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--factors {text!r}: give comma-separated speed factors, e.g. 0.9,1.0,1.1") from None
    for f in factors:
        if not 0.5 <= f <= 2.0:
            raise UsageError(f"--factors: speed factor {f:g} is outside 0.5..2 (Kaldi's recipes use 0.9 and 1.1)")
        if abs(float(Fraction(f).limit_denominator(_MAX_DENOMINATOR)) - f) > 1e-9:
            raise UsageError(f"--factors: speed factor {f:g} is not a ratio of integers up to {_MAX_DENOMINATOR}")
    if len(set(factors)) != len(factors):
        raise UsageError(f"--factors {text!r} repeats a factor")
    return factors


def change_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """`samples` played `factor` times as fast: len/factor samples at the same rate, every frequency times factor
    (sox's `speed`), by polyphase resampling with scipy's anti-aliasing filter."""
    from scipy.signal import resample_poly

    ratio = Fraction(factor).limit_denominator(_MAX_DENOMINATOR)
    if ratio == 1:
        return samples
    return resample_poly(samples.astype(np.float64), ratio.denominator, ratio.numerator).astype(np.float32)


def _prefix(factor: float) -> str:
    return f"sp{factor:g}-"


@contextlib.contextmanager
def _removed_on_failure(folder: Path, fresh: bool) -> Iterator[None]:
    """Remove `folder` when the block fails and no earlier output uses it, so a failed run leaves nothing half-made."""
    try:
        yield
    except BaseException:
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _duration(utt: Utterance, recording_seconds: float) -> float:
    """Seconds of `utt` in a recording of `recording_seconds` (its segment, or the whole recording)."""
    end = recording_seconds if utt.end is None else min(utt.end, recording_seconds)
    return end - (utt.start or 0.0)


def perturb_speed(src: str | Path, out: str | Path, factors: Sequence[float], sample_rate: int,
                  skip_bad: bool = False) -> Report:
    """Write to `out` the data dir `src` once per speed factor (see the module's docstring); recordings whose audio
    cannot be read stop the run, or with `skip_bad` are left out with their utterances, named in report.json."""
    import soundfile

    from asr_bn.progress import track

    out = Path(out)
    if Path(src).resolve() == out.resolve():
        raise UsageError(f"{out}: write the perturbed data dir elsewhere than its source")
    report = Report("data perturb-speed")
    data = load_data_dir(src, report)
    by_recording: dict[str, list[Utterance]] = {}
    for utt in data.utterances.values():
        by_recording.setdefault(utt.recording, []).append(utt)
    perturbed = [f for f in factors if f != 1.0]
    kept = 1.0 in factors
    for ids in (data.utterances, data.recordings):
        clash = {_prefix(f) + i for f in perturbed for i in ids} & set(ids) if kept else set()
        if clash:
            raise AsrBnError(f"{data.path}: {min(clash)} would name both an original and a perturbed copy; "
                             "perturb a dir whose ids carry no sp<factor>- prefix")
    wav_dir = out / "wav"
    recordings: dict[str, str] = {}
    utterances: dict[str, Utterance] = {}
    written = 0
    durations: dict[str, float] = {}  # utterance → seconds (Kaldi's utt2dur)
    uniq: dict[str, str] = {}  # utterance → the original it was made from (Kaldi's utt2uniq)
    with _removed_on_failure(wav_dir, fresh=not (out / "wav.scp").is_file()):
        for rec in track(sorted(by_recording), "perturb-speed"):
            utts = by_recording[rec]
            try:
                samples = load_recording(data, rec, sample_rate=sample_rate, utt=utts[0].id)
            except AudioError as e:
                if not skip_bad:
                    raise
                for utt in utts:
                    report.skip(utt.id, e.reason)
                continue
            for factor in factors:
                if factor == 1.0:
                    recordings[rec] = data.recordings[rec]
                    for utt in utts:
                        utterances[utt.id], uniq[utt.id] = utt, utt.id
                        durations[utt.id] = _duration(utt, len(samples) / sample_rate)
                    continue
                name = _prefix(factor) + rec
                wave = np.clip(np.rint(change_speed(samples, factor)), -32768, 32767).astype(np.int16)
                path = wav_dir / f"{name}.wav"
                with atomic_path(path) as tmp:
                    soundfile.write(tmp, wave, sample_rate, subtype="PCM_16", format="WAV")
                recordings[name] = str(path.resolve())
                written += 1
                for utt in utts:
                    start = None if utt.start is None else utt.start / factor
                    end = None if utt.end is None else utt.end / factor
                    new = Utterance(_prefix(factor) + utt.id, _prefix(factor) + utt.speaker, name, start, end, utt.text)
                    utterances[new.id], uniq[new.id] = new, utt.id
                    durations[new.id] = _duration(new, len(wave) / sample_rate)
    if not utterances:
        raise AsrBnError(f"{data.path}: no utterance left to write (the audio of every recording failed)")
    if wav_dir.is_dir():  # a rerun with other factors or data leaves no unused audio behind
        for stale in sorted(p for p in wav_dir.glob("*.wav") if str(p.resolve()) not in recordings.values()):
            stale.unlink()
    write_data_dir(DataDir(data.path, recordings, utterances, data.root, data.has_segments, data.has_text), out,
                   list(utterances), durations)
    write_text(out / "utt2uniq", "".join(f"{u} {uniq[u]}\n" for u in sorted(utterances)))
    report.counts["utterances out"] = len(utterances)
    report.counts["recordings written"] = written
    report.save(out / "report.json")
    return report
