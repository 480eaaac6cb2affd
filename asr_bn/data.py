"""Kaldi data dirs: read and validate them (in the spirit of utils/validate_data_dir.sh) and load their audio.

A data dir holds `wav.scp` (recording → plain path, `cmd |` pipe, or `file.ark:offset`), optional `segments`,
`utt2spk` and/or `spk2utt` (the missing one is derived), optional `text` and `utt2dur`.

Relative paths in `wav.scp` (and in the file arguments of its pipes) are resolved the way Kaldi resolves them:
against the current directory, which in a Kaldi recipe is the recipe root holding `data/`. When they do not
exist there, asr-bn tries the ancestors of the data dir, nearest first (so `yesno/data/train_yesno` with paths
like `waves_yesno/x.wav` works from anywhere); the directory chosen is `DataDir.root`, noted in the report when
it is not the current directory, and pipes run with it as their working directory.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Mapping

import numpy as np

from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import TableRow, index_rows, read_rows, require_dir, write_text
from asr_bn.report import Report

__all__ = [
    "AudioError",
    "DataDir",
    "Utterance",
    "load_data_dir",
    "load_audio",
    "load_recording",
    "read_speakers",
    "read_utt2spk",
    "write_data_dir",
    "hold_out_speakers",
    "normalize_text",
    "copy_data_dir",
]

_ARK_OFFSET = re.compile(r"^.+:\d+$")  # file.ark:byte-offset
_AUDIO_SUFFIXES = {".wav", ".flac", ".sph", ".wv1", ".wv2", ".nist", ".ark"}
MAX_SEGMENT_OVERSHOOT_S = 0.5  # Kaldi extract-segments --max-overshoot: a segment may end this far past the audio


@dataclass
class Utterance:
    """One utterance: its speaker, the recording it comes from, and (with `segments`) its span in seconds."""

    id: str
    speaker: str
    recording: str
    start: float | None = None  # seconds; None: the whole recording
    end: float | None = None  # seconds; None or -1 in Kaldi: to the end of the recording
    text: str | None = None


@dataclass
class DataDir:
    """A validated Kaldi data dir: recordings (wav.scp entries as written) and utterances sorted in C-locale order."""

    path: Path
    recordings: dict[str, str]
    utterances: dict[str, Utterance]
    root: Path = field(default_factory=Path.cwd)  # directory relative wav.scp paths are resolved against
    has_segments: bool = False
    has_text: bool = False

    @property
    def spk2utt(self) -> dict[str, list[str]]:
        """Speaker → its utterances, both sorted (Kaldi's spk2utt)."""
        out: dict[str, list[str]] = {}
        for utt in self.utterances.values():
            out.setdefault(utt.speaker, []).append(utt.id)
        return {spk: out[spk] for spk in sorted(out)}


class AudioError(AsrBnError):
    """Audio of one recording could not be used (missing, corrupt, truncated, failing pipe, another sample rate).

    `prep --skip-bad` turns it into a named skip with `reason`; multi-channel audio without a channel is a
    configuration error and always stops the run.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# ----------------------------------------------------------------------------------------------------------------
# Reading the text files


_FIX = "check the data dir with Kaldi's utils/validate_data_dir.sh"


def _data_table(path: Path, report: Report, *, fields: tuple[int, int | None] = (2, 2)) -> dict[str, TableRow]:
    """Key → row of a data dir file (io.read_table's rules), with a note when it is not sorted."""
    return _indexed(path, read_rows(path, _FIX, fields=fields), report)


def _indexed(path: Path, rows: list[TableRow], report: Report) -> dict[str, TableRow]:
    """io.index_rows (a duplicate key is an error naming both lines), noting keys out of C-locale order."""
    table = index_rows(path, rows)
    if any(b.key < a.key for a, b in zip(rows, rows[1:])):
        report.note(f"{path.name} was not sorted in C-locale order; sorted it (Kaldi tools expect LC_ALL=C sort)")
    return table


def read_utt2spk(path: str | Path, utt_ids: Collection[str], report: Report) -> dict[str, str]:
    """utt2spk as utterance → speaker. A file written reversed (`<spk> <utt>`, as in some tutorials) is
    recognized when that reading is unambiguous (every second field one of `utt_ids`, no first field one), and
    noted in `report`. Malformed lines and duplicate utterances are errors naming the file and line."""
    path, utt_ids = Path(path), set(utt_ids)
    rows = read_rows(path, _FIX, fields=(2, 2))
    firsts = [row.key for row in rows]
    if (
        len(set(firsts)) < len(firsts)
        and all(row.rest in utt_ids for row in rows)
        and not any(f in utt_ids for f in firsts)
    ):
        report.note(
            f"{path.name} is written `<speaker> <utterance>` (reversed); read it that way (fix the file for Kaldi)"
        )
        rows = [TableRow(row.line, row.rest, row.key) for row in rows]
    return {utt: row.rest for utt, row in _indexed(path, rows, report).items()}


def read_speakers(data_dir: str | Path, utt_ids: Collection[str], report: Report) -> dict[str, str]:
    """Utterance → speaker of a Kaldi data dir: its utt2spk (see `read_utt2spk`), checked against spk2utt when both
    exist, or spk2utt alone (noted); neither: each utterance its own speaker (noted); the two disagreeing is an
    error naming the files and the fix."""
    path = Path(data_dir)
    utt2spk_path, spk2utt_path = path / "utt2spk", path / "spk2utt"
    if utt2spk_path.is_file():
        utt2spk = read_utt2spk(utt2spk_path, utt_ids, report)
        if spk2utt_path.is_file():
            for utt, spk in _read_spk2utt(spk2utt_path, report).items():
                if utt in utt2spk and utt2spk[utt] != spk:
                    raise AsrBnError(
                        f"{spk2utt_path} puts utterance {utt} under speaker {spk} but {utt2spk_path} says "
                        f"{utt2spk[utt]}; delete spk2utt (asr-bn derives it from utt2spk) or fix one of them"
                    )
        return utt2spk
    if spk2utt_path.is_file():
        utt2spk = _read_spk2utt(spk2utt_path, report)
        report.note("no utt2spk: derived it from spk2utt")
        return utt2spk
    # Kaldi's convention when speakers are unknown: each utterance is its own speaker, said so
    report.note(f"{path} has neither utt2spk nor spk2utt: each utterance is its own speaker (per-speaker CMVN "
                "becomes per-utterance); write utt2spk (`<utt> <speaker>` per line) to group them")
    return {utt: utt for utt in utt_ids}


def _read_spk2utt(path: Path, report: Report) -> dict[str, str]:
    """spk2utt inverted to utterance → speaker; an utterance listed twice is an error naming both lines."""
    utt2spk: dict[str, tuple[int, str]] = {}
    for spk, row in _data_table(path, report, fields=(2, None)).items():
        number = row.line
        for utt in row.fields:
            if utt in utt2spk:
                raise AsrBnError(
                    f"{path}: utterance {utt!r} is listed twice (lines {utt2spk[utt][0]} and {number}); "
                    f"each utterance belongs to one speaker"
                )
            utt2spk[utt] = (number, spk)
    return {utt: spk for utt, (_, spk) in utt2spk.items()}


def _parse_float(path: Path, number: int, value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise AsrBnError(f"{path} line {number}: {what} {value!r} is not a number") from None


# ----------------------------------------------------------------------------------------------------------------
# Loading and validating a data dir


def load_data_dir(path: str | Path, report: Report) -> DataDir:
    """Read and validate a Kaldi data dir; utterances missing from some of its files are skipped, named in `report`.

    Errors (AsrBnError, one line naming file and line): missing wav.scp, no utt2spk nor spk2utt, duplicate keys,
    malformed lines, non-UTF-8 bytes, utt2spk and spk2utt disagreeing; UsageError when `path` is no directory.
    """
    path = require_dir(path, "data dir", "a Kaldi data dir holding wav.scp, utt2spk, text")
    wav_scp = path / "wav.scp"
    if not wav_scp.is_file():
        raise AsrBnError(f"no {wav_scp}: a Kaldi data dir needs wav.scp (`<recording> <path or cmd |>` per line)")
    recordings = {rec: row.rest for rec, row in sorted(_data_table(wav_scp, report, fields=(2, None)).items())}

    # Utterance → (recording, start, end), from segments or one utterance per recording.
    spans: dict[str, tuple[str, float | None, float | None]] = {}
    segments = path / "segments"
    if segments.is_file():
        for utt, row in _data_table(segments, report, fields=(4, 4)).items():
            number = row.line
            rec, start, end = row.fields
            s, e = _parse_float(segments, number, start, "start"), _parse_float(segments, number, end, "end")
            if s < 0 or (e != -1 and e <= s):
                raise AsrBnError(
                    f"{segments} line {number}: segment {utt} has start {start} and end {end}; "
                    f"need 0 <= start < end (or end -1)"
                )
            spans[utt] = (rec, s, None if e == -1 else e)
        used = {rec for rec, _, _ in spans.values()}
        unused = [rec for rec in recordings if rec not in used]
        if unused:
            report.note(f"{len(unused)} recordings of wav.scp have no segment: {' '.join(unused[:5])}")
    else:
        spans = {rec: (rec, None, None) for rec in recordings}

    utt2spk = read_speakers(path, spans, report)
    text: dict[str, str] | None = None
    if (path / "text").is_file():
        text = {utt: row.rest for utt, row in _data_table(path / "text", report, fields=(1, None)).items()}
    durations: dict[str, float] | None = None
    if (path / "utt2dur").is_file():
        durations = {
            utt: _parse_float(path / "utt2dur", row.line, row.rest, "duration")
            for utt, row in _data_table(path / "utt2dur", report).items()
        }

    # Consistent sets: every utterance must be in wav.scp (via segments), utt2spk, and text/utt2dur when present.
    source = "segments" if segments.is_file() else "wav.scp"
    keep: list[str] = []
    for utt in sorted(spans):
        rec = spans[utt][0]
        if rec not in recordings:
            report.skip(utt, "recording not in wav.scp")
        elif utt not in utt2spk:
            report.skip(utt, "missing from utt2spk")
        elif text is not None and utt not in text:
            report.skip(utt, "missing from text")
        elif durations is not None and utt not in durations:
            report.skip(utt, "missing from utt2dur")
        else:
            keep.append(utt)
    extra: set[str] = set()
    for name, table in (("utt2spk", utt2spk), ("text", text or {}), ("utt2dur", durations or {})):
        for utt in sorted(u for u in table if u not in spans and u not in extra):
            report.skip(utt, f"in {name} but not in {source}")
            extra.add(utt)

    utterances = {
        utt: Utterance(
            utt, utt2spk[utt], spans[utt][0], spans[utt][1], spans[utt][2], None if text is None else text[utt]
        )
        for utt in keep
    }
    report.counts["utterances in"] = len(set(spans).union(utt2spk, text or (), durations or ()))
    data = DataDir(path, recordings, utterances, has_segments=segments.is_file(), has_text=text is not None)
    data.root = _find_root(data)
    if data.root != Path.cwd():
        report.note(f"relative paths in wav.scp resolved against {data.root}")
    return data


def _relative_files(entry: str) -> list[str]:
    """The relative file paths a wav.scp entry refers to (plain path, ark file, or the file-like pipe arguments)."""
    kind, value = _classify(entry)
    if kind == "pipe":
        try:
            tokens = shlex.split(value)
        except ValueError:
            return []
        program, args = tokens[:1], tokens[1:]
        return [t for t in program if "/" in t and not os.path.isabs(t)] + [
            t
            for t in args
            if not t.startswith("-")
            and not os.path.isabs(t)
            and ("/" in t or Path(t).suffix.lower() in _AUDIO_SUFFIXES)
        ]
    path = value if kind == "file" else value.rsplit(":", 1)[0]
    return [] if os.path.isabs(path) else [path]


def _find_root(data: DataDir, probes: int = 10) -> Path:
    """The directory relative wav.scp paths live under: the current one (Kaldi's rule), else the nearest
    ancestor of the data dir where the first few referenced files exist."""
    rel = [p for entry in list(data.recordings.values())[:probes] for p in _relative_files(entry)]
    if not rel:
        return Path.cwd()
    for base in [Path.cwd(), *data.path.resolve().parents]:
        if any((base / p).exists() for p in rel):
            return base
    return Path.cwd()


def _classify(entry: str) -> tuple[str, str]:
    """('pipe', command) | ('ark', 'file:offset') | ('file', path) for one wav.scp value."""
    if entry.endswith("|"):
        return "pipe", entry[:-1].strip()
    m = _ARK_OFFSET.match(entry)
    if m and not Path(entry).exists():
        return "ark", entry
    return "file", entry


# ----------------------------------------------------------------------------------------------------------------
# Audio


def load_recording(
    data: DataDir, rec_id: str, *, sample_rate: int, channel: int | None = None, utt: str | None = None
) -> np.ndarray:
    """The samples of one recording as float32 in the int16 range (as Kaldi's wave reader gives them).

    `utt` only names the utterance in error messages. Raises AudioError for missing/corrupt/truncated audio, a
    failing pipe or another sample rate (never resampled), AsrBnError for multi-channel audio without `channel`.
    """
    entry = data.recordings[rec_id]
    who = f"utterance {utt or rec_id}" + (f" (recording {rec_id})" if utt and utt != rec_id else "")
    kind, value = _classify(entry)
    if kind == "pipe":
        raw, source = _run_pipe(value, data.root, who), f"pipe `{value} |`"
        samples, rate = _decode(raw, source, who)
    elif kind == "ark":
        samples, rate, source = _read_ark(value, data.root, who)
    else:
        file = data.root / value
        source = str(file)
        if not file.is_file():
            raise AudioError(
                f"{who}: audio file {file} does not exist (from {data.path / 'wav.scp'}); "
                f"fix the path or pass --skip-bad to skip it",
                "audio file missing",
            )
        try:
            raw = file.read_bytes()
        except OSError as e:
            raise AudioError(f"{who}: cannot read {file}: {e.strerror or e}", "audio unreadable") from e
        samples, rate = _decode(raw, source, who)
    if rate != sample_rate:
        raise AudioError(
            f"{who}: {source} is sampled at {rate} Hz but the feature config says {sample_rate} Hz; "
            f"pass --sample-frequency {rate} (asr-bn never resamples), or --skip-bad to skip such audio",
            "sampled at another rate than --sample-frequency",
        )
    if samples.ndim == 2 and samples.shape[1] == 1:
        samples = samples[:, 0]
    if samples.ndim == 2:
        n = samples.shape[1]
        if channel is None:
            raise AsrBnError(
                f"{who}: {source} has {n} channels; choose one with --channel 0..{n - 1} (as Kaldi's --channel)"
            )
        if not 0 <= channel < n:
            raise AsrBnError(f"{who}: {source} has {n} channels, so --channel {channel} does not exist; use 0..{n - 1}")
        samples = samples[:, channel]
    elif channel is not None and channel != 0:
        raise AsrBnError(f"{who}: {source} is mono, so --channel {channel} does not exist; use 0 or leave it out")
    return np.ascontiguousarray(samples, dtype=np.float32)


def load_audio(data: DataDir, utt_id: str, *, sample_rate: int, channel: int | None = None) -> np.ndarray:
    """The samples of one utterance (its segment of the recording) as float32 in the int16 range."""
    utt = data.utterances[utt_id]
    wave = load_recording(data, utt.recording, sample_rate=sample_rate, channel=channel, utt=utt_id)
    return cut_segment(wave, utt, sample_rate, data.path)


def cut_segment(wave: np.ndarray, utt: Utterance, sample_rate: int, where: Path | str = "segments") -> np.ndarray:
    """The utterance's span of its recording's samples, as Kaldi's extract-segments cuts it (rounded sample
    indices; an end up to 0.5 s past the audio is trimmed, further is an error)."""
    if utt.start is None:
        return wave
    first = int(round(utt.start * sample_rate))
    last = len(wave) if utt.end is None else int(round(utt.end * sample_rate))
    if last > len(wave):
        if last - len(wave) > MAX_SEGMENT_OVERSHOOT_S * sample_rate:
            raise AudioError(
                f"utterance {utt.id}: segment ends at {utt.end} s but recording {utt.recording} lasts "
                f"{len(wave) / sample_rate:.3f} s (from {where}); fix segments or pass --skip-bad",
                "segment past end of audio",
            )
        last = len(wave)
    return wave[first:last]


def _run_pipe(command: str, cwd: Path, who: str) -> bytes:
    try:
        proc = subprocess.run(command, shell=True, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise AudioError(f"{who}: cannot run `{command}`: {e.strerror or e}", "pipe failed") from e
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:])[-300:]
        raise AudioError(
            f"{who}: pipe `{command} |` exited with status {proc.returncode}: {tail or '(no stderr)'}; "
            f"fix the command in wav.scp or pass --skip-bad",
            "pipe failed",
        )
    return proc.stdout


def _read_ark(value: str, root: Path, who: str) -> tuple[np.ndarray, int, str]:
    import kaldiio

    file, offset = value.rsplit(":", 1)
    path = root / file
    source = f"{path}:{offset}"
    if not path.is_file():
        raise AudioError(
            f"{who}: archive {path} does not exist (wav.scp entry {value}); fix the path or pass --skip-bad",
            "audio file missing",
        )
    try:
        obj = kaldiio.load_mat(f"{path}:{offset}")
    except Exception as e:  # kaldiio raises assorted types on bad bytes
        raise AudioError(
            f"{who}: cannot read audio at {source}: {e}; the archive is corrupt or the offset wrong", "audio unreadable"
        ) from e
    if not isinstance(obj, tuple):
        raise AudioError(
            f"{who}: {source} holds a matrix, not audio (wav.scp must point at wav data)", "audio unreadable"
        )
    rate, samples = obj
    return _to_int16_range(np.asarray(samples)), int(rate), source


def _decode(raw: bytes, source: str, who: str) -> tuple[np.ndarray, int]:
    """Decode wav/flac/NIST bytes with soundfile, rejecting empty and truncated (header longer than data) files."""
    import soundfile as sf

    if not raw:
        raise AudioError(f"{who}: {source} is empty (0 bytes); re-create it or pass --skip-bad", "audio unreadable")
    missing = _truncated_bytes(raw)
    if missing:
        raise AudioError(
            f"{who}: {source} is truncated ({missing} bytes of audio missing that its header declares); "
            f"re-create it or pass --skip-bad",
            "audio truncated",
        )
    try:
        info = sf.info(io.BytesIO(raw))
        samples, rate = sf.read(
            io.BytesIO(raw), dtype="int16" if info.subtype == "PCM_16" else "float64", always_2d=False
        )
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        detail = getattr(e, "error_string", None) or str(e)  # libsndfile's words, without "Error opening <BytesIO …>"
        raise AudioError(
            f"{who}: {source} is not readable audio (libsndfile: {detail.rstrip('.')}); re-create it or pass "
            "--skip-bad",
            "audio unreadable",
        ) from e
    return _to_int16_range(samples), int(rate)


def _to_int16_range(samples: np.ndarray) -> np.ndarray:
    """float32 samples on Kaldi's scale: 16-bit PCM values as they are, float audio times 32768."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32)
    if np.issubdtype(samples.dtype, np.integer):
        return (samples.astype(np.float64) * (32768.0 / 2.0 ** (8 * samples.dtype.itemsize - 1))).astype(np.float32)
    return (samples * 32768.0).astype(np.float32)


def _truncated_bytes(raw: bytes) -> int:
    """How many audio bytes a RIFF or NIST header declares beyond the end of `raw` (0 when complete/unknown)."""
    if raw[:4] == b"RIFF" and raw[8:12] == b"WAVE":
        pos = 12
        while pos + 8 <= len(raw):
            chunk, size = raw[pos : pos + 4], struct.unpack("<I", raw[pos + 4 : pos + 8])[0]
            if chunk == b"data":
                if size in (0, 0xFFFFFFFF):  # streamed wav: size unknown, read to the end (as Kaldi does)
                    return 0
                return max(0, pos + 8 + size - len(raw))
            pos += 8 + size + (size & 1)
        return 0
    if raw[:8] == b"NIST_1A\n":
        try:
            header_size = int(raw[8:16])
            fields = dict(
                (m.group(1), m.group(2))
                for m in re.finditer(rb"^(\w+) -[irs]\d* (\S+)", raw[:header_size], re.MULTILINE)
            )
            if fields.get(b"sample_coding", b"pcm") not in (b"pcm",):
                return 0
            n = int(fields[b"sample_count"]) * int(fields.get(b"channel_count", 1)) * int(fields[b"sample_n_bytes"])
        except (ValueError, KeyError):
            return 0
        return max(0, header_size + n - len(raw))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Writing


def write_data_dir(
    data: DataDir, out_dir: str | Path, utts: list[str], durations: dict[str, float] | None = None
) -> None:
    """Write the Kaldi files of `data` restricted to `utts` (sorted), each atomically.

    Plain and ark paths in wav.scp are written absolute so the copy works from any directory; pipes are kept as
    written. `durations` (seconds, e.g. measured from the audio) become utt2dur.
    """
    out_dir = Path(out_dir)
    utts = sorted(utts)
    chosen = [data.utterances[u] for u in utts]
    recs = sorted({u.recording for u in chosen})
    write_text(out_dir / "wav.scp", "".join(f"{r} {_absolute_entry(data.recordings[r], data.root)}\n" for r in recs))
    if data.has_segments:
        write_text(
            out_dir / "segments",
            "".join(f"{u.id} {u.recording} {u.start:g} {-1 if u.end is None else u.end:g}\n" for u in chosen),
        )
    write_text(out_dir / "utt2spk", "".join(f"{u.id} {u.speaker}\n" for u in chosen))
    spk2utt: dict[str, list[str]] = {}
    for u in chosen:
        spk2utt.setdefault(u.speaker, []).append(u.id)
    write_text(out_dir / "spk2utt", "".join(f"{s} {' '.join(spk2utt[s])}\n" for s in sorted(spk2utt)))
    if data.has_text:
        write_text(out_dir / "text", "".join(f"{u.id} {u.text}\n".replace(" \n", "\n") for u in chosen))
    if durations is not None:
        write_text(out_dir / "utt2dur", "".join(f"{u} {durations[u]:.4f}\n" for u in utts))


def hold_out_speakers(utts: Mapping[str, Utterance], num_speakers: int) -> tuple[list[str], list[str]]:
    """(kept, held-out) utterance ids, `num_speakers` speakers held out evenly spaced in sorted order (so a corpus
    whose speaker ids start with a gender letter, as AN4's, gives both genders): a dev set from training data."""
    speakers = sorted({u.speaker for u in utts.values()})
    if not 0 <= num_speakers < len(speakers):
        raise AsrBnError(f"cannot hold out {num_speakers} speakers: the data has {len(speakers)}; choose fewer")
    stride = len(speakers) // num_speakers if num_speakers else 1
    held = set(speakers[::stride][:num_speakers]) if num_speakers else set()
    return ([u for u, x in utts.items() if x.speaker not in held], [u for u, x in utts.items() if x.speaker in held])


PUNCTUATION = '.,;:!?"()'


def normalize_text(utts: Mapping[str, Utterance], case: str, strip_punctuation: bool, report: Report) -> None:
    """Normalise transcripts in place as told (`case`: keep, upper, lower; punctuation stripped or kept): each
    change counted, the utterances named, so nothing changes silently."""
    if case not in ("keep", "upper", "lower"):
        raise UsageError(f"case {case!r} is not keep, upper or lower")
    removed: dict[str, int] = {}
    changed: list[str] = []
    for utt in utts.values():
        if utt.text is None:
            continue
        text = utt.text
        if strip_punctuation:
            for ch in PUNCTUATION:
                if ch in text:
                    removed[ch] = removed.get(ch, 0) + text.count(ch)
                    text = text.replace(ch, " ")
        text = {"upper": text.upper(), "lower": text.lower()}.get(case, text)
        text = " ".join(text.split())
        if text != utt.text:
            changed.append(utt.id)
            utt.text = text
    if changed:
        report.counts["transcripts normalised"] = len(changed)
        report.note(f"transcripts changed by --case {case}"
                    f"{' and --strip-punctuation' if strip_punctuation else ''}: {' '.join(changed[:5])}"
                    f"{' …' if len(changed) > 5 else ''}")
    if removed:
        report.note("punctuation removed (count): " + ", ".join(f"{c!r} ({n})" for c, n in sorted(removed.items())))
    mixed = sorted({w for u in utts.values() for w in (u.text or "").split() if w != w.upper() and w != w.lower()})
    if case == "keep" and mixed:
        report.note(f"{len(mixed)} words mix upper and lower case ({' '.join(mixed[:5])}); they must be in the "
                    "lexicon as written, or use --case upper/lower")


def copy_data_dir(src: str | Path, out: str | Path, held_out: str | Path | None = None, num_held_out: int = 0,
                  case: str = "keep", strip_punctuation: bool = False) -> Report:
    """Check a data dir and write it to `out` (transcripts normalised as told; `num_held_out` speakers, evenly
    spaced, to `held_out` instead); report.json in each output names what changed and what was skipped."""
    report = Report("data copy")
    data = load_data_dir(src, report)
    normalize_text(data.utterances, case, strip_punctuation, report)
    keep, held = hold_out_speakers(data.utterances, num_held_out) if num_held_out else (list(data.utterances), [])
    for path, ids in ((out, keep), (held_out, held)):
        if path is not None:
            write_data_dir(data, path, ids)
            report.counts[f"utterances in {path}"] = len(ids)
            report.counts[f"speakers in {path}"] = len({data.utterances[u].speaker for u in ids})
    for path in (out, held_out):
        if path is not None:
            report.save(Path(path) / "report.json")
    return report


def _absolute_entry(entry: str, root: Path) -> str:
    kind, value = _classify(entry)
    if kind == "file":
        return str((root / value).resolve()) if not os.path.isabs(value) else value
    if kind == "ark":
        file, offset = value.rsplit(":", 1)
        return f"{(root / file).resolve()}:{offset}" if not os.path.isabs(file) else value
    return entry
