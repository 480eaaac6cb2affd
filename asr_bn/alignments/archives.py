"""Alignment archives: Kaldi int-vector archives (`ali.N.gz`, binary or text, gzipped or not) and the plain
`utt label label …` lines of other aligners, read as int32 labels with the file they came from."""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, TypeVar

import numpy as np

from asr_bn.alignments.transition_model import read_transition_model
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.kaldi_binary import INT, INT32_MAX, INT32_MIN, WORD, WS, show_word


class Labels(NamedTuple):
    """One utterance of an alignment archive: its labels (transition-ids or pdf-ids) and the file they came from."""

    utt: str
    values: np.ndarray  # int32, one per frame
    path: Path


T = TypeVar("T")
_NUMBERED = re.compile(r"ali\.(\d+)(\.gz)?")
_INT_ELEMENT = np.dtype([("size", "u1"), ("value", "<i4")])


def alignment_files(source: str | Path) -> list[Path]:
    """The archives of `source`: an alignment dir's `ali.N.gz` (or `ali.N`) ordered by N, or the file itself."""
    source = Path(source)
    if not source.is_dir():
        if not source.exists():
            raise AsrBnError(f"alignments {source} not found (give an ali dir with ali.*.gz, or an archive)")
        return [source]
    numbered = [(int(m.group(1)), p) for p in source.iterdir() if (m := _NUMBERED.fullmatch(p.name))]
    if not numbered:
        raise AsrBnError(f"{source} has no ali.N.gz files (is it a Kaldi alignment dir such as exp/tri4b_ali_si284?)")
    return [p for _, p in sorted(numbered)]


def alignment_model(source: str | Path, model: str | Path | None, pdf_ids: bool) -> Path | None:
    """The model of the alignments in `source`: `model`, else the ali dir's final.mdl; None for pdf-ids without
    one. Transition-ids without a model are a UsageError (prep checks this before computing features)."""
    source = Path(source)
    if model is None and source.is_dir() and (source / "final.mdl").exists():
        model = source / "final.mdl"
    if model is None and not pdf_ids:
        raise UsageError(
            f"{source}: transition-id alignments need the final.mdl they were made with (none found); "
            "give --model, or --pdf-ids for pdf-id labels"
        )
    return None if model is None else Path(model)


def read_alignments(source: str | Path) -> Iterator[Labels]:
    """Every utterance of an alignment dir (`ali.N.gz` by number) or archive, as int32 labels with their file.

    Reads Kaldi int-vector archives (`ali.*.gz`, `ali-to-pdf` output) in binary or text form, gzipped or not, and the
    plain text `utt-id label label …` of other aligners. An utterance in two files is an error naming both.
    """
    seen: dict[str, Path] = {}
    for path in alignment_files(source):
        for utt, values in _parse_int_archive(read_maybe_gzip(path), path):
            if utt in seen:
                raise AsrBnError(f"utterance {utt} appears twice: in {seen[utt]} and in {path} (remove one of them)")
            seen[utt] = path
            yield Labels(utt, values, path)


def read_maybe_gzip(path: Path, what: str = "alignments") -> bytes:
    """The bytes of an archive of `what`, gunzipped when it is gzipped."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, zlib.error) as e:
        raise AsrBnError(f"cannot read {what} {path}: {e} (truncated or corrupt gzip? write it again)") from e


def _parse_int_archive(data: bytes, path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(key, int32 vector) pairs of a Kaldi archive; each entry may be binary (`key \\0B…`) or a text line."""
    return parse_archive(data, path, "an alignment archive", "re-run the alignment", _binary_int_vector, _text_ints)


def parse_archive(
    data: bytes,
    path: Path,
    what: str,
    fix: str,
    binary: Callable[[bytes, int, Path, str], tuple[T, int]],
    text: Callable[[bytes, Path, int, str], T],
) -> Iterator[tuple[str, T]]:
    """(key, value) pairs of a Kaldi archive of `what` (e.g. "an alignment archive"), each entry binary (`key
    \\0B…`: `binary(data, offset after \\0B, path, key)` gives the value and the next offset) or a text line
    (`text(line, path, offset, key)`).

    A text line must end with a newline, as every writer ends it: without one the file was cut off (a truncated
    copy, a full disk), and reading on would give its utterance fewer frames without a word; the error says `fix`.
    """
    pos, end = 0, len(data)
    last = None  # the last complete utterance, for the error of a cut-off file
    while (m := WORD.match(data, pos)) is not None:
        start, pos = m.start(1), m.end()
        if pos < end and data[pos] not in WS:
            raise AsrBnError(f"{path}: byte {start}: utterance id longer than 4096 bytes (not {what}?)")
        try:
            utt = m.group(1).decode("utf-8")
        except UnicodeDecodeError:
            raise AsrBnError(f"{path}: byte {start}: utterance id is not UTF-8 (not {what}?)") from None
        if data.startswith(b" \0B", pos):
            value, pos = binary(data, pos + 3, path, utt)
        else:
            eol = data.find(b"\n", pos)
            if eol < 0:
                after = f" (the last complete one is {last})" if last is not None else ""
                raise AsrBnError(
                    f"{path}: byte {start}: the file ends inside the line of utterance {utt}{after}, without its "
                    f"newline: the archive is cut off; {fix} (or end the file with a newline if the line is whole)"
                )
            value = text(data[pos:eol], path, pos, utt)
            pos = eol + 1
        last = utt
        yield utt, value


def _binary_int_vector(data: bytes, pos: int, path: Path, utt: str) -> tuple[np.ndarray, int]:
    where = f"{path}: byte {pos} (utterance {utt})"
    if data[pos : pos + 1] != b"\x04" or pos + 5 > len(data):
        raise AsrBnError(f"{where}: expected a binary int32 vector (truncated file, or features, not alignments?)")
    n = int.from_bytes(data[pos + 1 : pos + 5], "little", signed=True)
    pos += 5
    if n < 0 or pos + 5 * n > len(data):
        raise AsrBnError(f"{where}: vector of {n} integers does not fit in the file (truncated file?)")
    items = np.frombuffer(data, _INT_ELEMENT, count=n, offset=pos)
    if (items["size"] != 4).any():
        raise AsrBnError(f"{where}: expected 4-byte integers in the vector (not an alignment archive?)")
    return items["value"].astype(np.int32), pos + 5 * n


def _text_ints(line: bytes, path: Path, pos: int, utt: str) -> np.ndarray:
    words = line.split()
    try:
        values = np.array(words, dtype=np.int64) if words else np.zeros(0, np.int64)
    except (ValueError, OverflowError):
        bad = next((w for w in words if not INT.fullmatch(w)), words[0])
        raise AsrBnError(
            f"{path}: byte {pos} (utterance {utt}): expected integer labels, found {show_word(bad)} "
            f"(alignments are lines `utt-id label label …` or a Kaldi int-vector archive)"
        ) from None
    if values.size and (values.min() < INT32_MIN or values.max() > INT32_MAX):
        raise AsrBnError(f"{path}: byte {pos} (utterance {utt}): a label does not fit in 32 bits")
    return values.astype(np.int32)


def describe_alignments(
    model: str | Path,
    alignments: str | Path,
    utt: str | None = None,
    phones: str | Path | None = None,
    frame_shift_ms: float = 10.0,
) -> Iterator[str]:
    """Lines `utt start end phone` (seconds) of each phone instance, for `asr-bn ali show`.

    Phones are named from `phones` (a Kaldi phones.txt) when given, else printed as ids. With `utt`, only that
    utterance; an `utt` absent from the archives is an error.
    """
    from asr_bn.lang import read_symbol_table

    tm = read_transition_model(model)
    names = {i: name for name, i in read_symbol_table(phones).items()} if phones is not None else {}
    shift = frame_shift_ms / 1000.0
    found = False
    for entry in read_alignments(alignments):
        if utt is not None and entry.utt != utt:
            continue
        found = True
        for phone, start, end in tm.phone_segments(entry.values, f"{entry.path}, utterance {entry.utt}"):
            yield f"{entry.utt} {start * shift:.3f} {end * shift:.3f} {names.get(phone, phone)}"
        if utt is not None:
            return
    if utt is not None and not found:
        raise AsrBnError(f"utterance {utt} is not in {alignments} (check the id; without UTT, ali show lists all)")

