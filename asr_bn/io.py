"""Crash-safe file output: atomic writes (temp name, fsync, rename), Kaldi ark/scp pairs, output-dir locks; checks
of input dirs and output paths; reading one matrix of an scp with a one-line error; the one reader of Kaldi text
tables (`key rest-of-line` per line)."""

from __future__ import annotations

import contextlib
import math
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Iterable, Iterator

import numpy as np

from asr_bn.errors import AsrBnError, UsageError

_UMASK = os.umask(0)
os.umask(_UMASK)
_TMP_SUFFIX = ".tmp"  # of atomic_path's temporary files: `.NAME.XXXXXXXX.tmp` beside NAME


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it onto `path`.

    On any exception the temporary file is removed, so `path` is either complete or untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual umask-based mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        tmp_path.unlink(missing_ok=True)
        ours = isinstance(e, OSError) and e.filename in (None, str(tmp_path), str(path))  # not an input's error
        if ours and not isinstance(e, FileNotFoundError):
            raise AsrBnError(f"could not write {path}: {e.strerror or e} (free disk space or choose another output)") from e
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file for writing that replaces `path` atomically when the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f


def file_in(path: str | Path, name: str, what: str, fix: str) -> Path:
    """`path` itself, or `path/name` when `path` is a directory (a model dir, a data dir); a missing file is one
    error line naming `what` it should be and the `fix`."""
    path = Path(path)
    found = path / name if path.is_dir() else path
    if not found.is_file():
        raise AsrBnError(f"{found}: no such {what} ({fix})")
    return found


def write_text(path: str | Path, text: str) -> None:
    """Write a whole text file atomically."""
    with atomic_open(path) as f:
        f.write(text)


def write_ark_scp(
    ark_path: str | Path,
    scp_path: str | Path | None,
    items: Iterable[tuple[str, np.ndarray]],
    compression_method: int | None = None,
    scp_ark_path: str | Path | None = None,
) -> int:
    """Write (key, array) pairs to a binary Kaldi archive and its scp index, both atomically.

    The scp names `scp_ark_path` (default `ark_path`; give the final name when writing into a staging folder)
    with Kaldi byte offsets, so Kaldi tools and kaldiio read both.
    Arrays: float32/float64 matrices or vectors, int32 vectors (alignments). Returns the number written.
    """
    import kaldiio

    ark_path = Path(ark_path)
    named = Path(scp_ark_path or ark_path).resolve()
    scp_lines: list[str] = []
    with atomic_open(ark_path, "wb") as f:
        for key, array in items:
            if not key or any(c.isspace() for c in key):
                raise AsrBnError(f"{ark_path}: key {key!r} is empty or contains whitespace (Kaldi keys cannot)")
            offset = f.tell() + len(key.encode()) + 1
            kaldiio.save_ark(f, {key: array}, compression_method=compression_method)
            scp_lines.append(f"{key} {named}:{offset}\n")
    if scp_path is not None:
        write_text(scp_path, "".join(scp_lines))
    return len(scp_lines)


def check_output_dir(directory: str | Path, what: str = "output dir") -> Path:
    """Refuse an output dir that cannot be one: it, or its nearest existing ancestor, is not a directory. Missing
    dirs are fine (OutputLock creates them, as Kaldi's scripts `mkdir -p` theirs); call this before the work."""
    directory = Path(directory)
    existing = next((p for p in (directory, *directory.parents) if p.exists() or p.is_symlink()), None)
    if existing is not None and not existing.is_dir():
        where = "is" if existing == directory else f"is inside {existing}, which is"
        raise UsageError(f"{what} {directory} {where} a file, not a directory; choose a directory")
    return directory


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """Refuse an output file whose folder does not exist, or that is a directory (Kaldi's binaries fail on those
    too, and never create folders); call this before the work."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a directory; give a file name")
    if not path.parent.is_dir():
        kind = "is not a directory" if path.parent.exists() else "does not exist"
        raise UsageError(f"{what} {path}: its folder {path.parent} {kind}; create it first (e.g. mkdir -p)")
    return path


def require_dir(directory: str | Path, what: str, expected: str) -> Path:
    """An input directory that must exist: missing or a file is a UsageError saying which, and what was `expected`
    (e.g. "a prepared dir of `asr-bn prep`")."""
    directory = Path(directory)
    if not directory.is_dir():
        kind = "is a file, not a directory" if directory.exists() else "does not exist"
        raise UsageError(f"{what} {directory} {kind} (expected {expected})")
    return directory


def begin_run(out_dir: Path, *results: str) -> None:
    """Start (re)writing an output dir: report.json (written last, it marks a complete run) and the `results` an
    earlier run left there (e.g. final.mdl) are removed, so a run that fails midway never leaves an earlier run's
    model beside its own new tree."""
    for name in ("report.json", *results):
        (out_dir / name).unlink(missing_ok=True)


class OutputLock:
    """An exclusive lock file in an output directory, so two runs never write the same directory.

    >>> with OutputLock(out_dir):  # a second process entering here gets an AsrBnError naming the holder
    ...     ...

    The directory (and missing parents) is created on entry; on exit those this lock created are removed again
    when they are empty, so a run that fails before writing anything leaves nothing behind.
    """

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / ".asr-bn.lock"
        self._created: list[Path] = []

    def __enter__(self) -> "OutputLock":
        directory = check_output_dir(self.path.parent)
        self._created = [p for p in (directory, *directory.parents) if not p.exists()]
        directory.mkdir(parents=True, exist_ok=True)
        took_over = False
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                holder = self.path.read_text(errors="replace").strip() or "?"
                if not (holder.isdigit() and not _pid_alive(int(holder))):
                    raise AsrBnError(
                        f"{self.path.parent} is in use by another asr-bn run (pid {holder}); "
                        f"wait for it, or remove {self.path} if that run is gone"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale lock of a killed run
                took_over = True
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        if took_over:  # the killed run's unfinished atomic writes (see atomic_path); nobody else writes here now
            for leftover in self.path.parent.glob(f".*{_TMP_SUFFIX}"):
                leftover.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
        for created in self._created:  # deepest first; a dir holding anything stays
            try:
                created.rmdir()
            except OSError:
                break


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def error_detail(error: BaseException, limit: int | None = None) -> str:
    """`Type: message` of an exception on one line (kaldiio's and torch's messages may span several), cut to
    `limit` characters when given (torch lists every mismatched key)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:limit]


_CM = b"\0BCM "  # a Kaldi binary matrix in the speech-feature compression (`copy-feats --compress`, `prep --compress`)
_CM_SCALE = np.float32(1.52590218966964e-05)  # 1/65535 as the float Kaldi uses


def read_compressed(f: IO[bytes]) -> np.ndarray | None:
    """The matrix at `f`'s position if it is Kaldi-compressed with per-column headers (`\\0BCM `), expanded with
    Kaldi's own arithmetic (CompressedMatrix::CopyToMat: float, the last step in double), so every value is the bit
    Kaldi's tools read (kaldiio's float32 arithmetic differs by up to a few ulp); None, `f` where it was, for any
    other matrix. A truncated one raises ValueError."""
    start = f.tell()
    if f.read(len(_CM)) != _CM:
        f.seek(start)
        return None
    head = f.read(16)
    if len(head) != 16:
        raise ValueError("truncated compressed matrix header")
    low, span, rows, cols = struct.unpack("<ffii", head)
    size, here = cols * (8 + rows), f.tell()
    left = f.seek(0, os.SEEK_END) - here
    f.seek(here)
    if rows < 0 or cols < 0 or size > left:  # checked before reading: a corrupt header must not allocate gigabytes
        raise ValueError(f"compressed {rows} x {cols} matrix needs {size} bytes, the file has {left} left (truncated?)")
    body = f.read(size)
    # per column: the 0th, 25th, 75th, 100th percentiles as uint16 steps of the global range
    pct = np.float32(low) + np.float32(span) * _CM_SCALE * np.frombuffer(body, "<u2", 4 * cols).reshape(cols, 4)
    p0, p25, p75, p100 = (pct[:, i : i + 1] for i in range(4))

    def piece(base: np.ndarray, top: np.ndarray, steps: np.ndarray, per_step: float) -> np.ndarray:
        return base.astype(np.float64) + ((top - base) * steps).astype(np.float64) * per_step

    v = np.arange(256, dtype=np.float32)  # every byte value, expanded once per column: (cols, 256)
    table = np.where(
        v <= 64,
        piece(p0, p25, v, 1 / 64.0),
        np.where(v <= 192, piece(p25, p75, v - 64, 1 / 128.0), piece(p75, p100, v - 192, 1 / 63.0)),
    ).astype(np.float32)
    byte = np.frombuffer(body, np.uint8, offset=8 * cols).reshape(cols, rows)  # column by column
    return np.ascontiguousarray(np.take_along_axis(table, byte.astype(np.intp), axis=1).T)


# What kaldiio's parser raises on a missing, cut-off or corrupt archive (seen by fuzzing truncated and byte-flipped
# binary, compressed and text archives: FileNotFoundError and other OSErrors, ValueError and UnicodeDecodeError,
# struct.error, AssertionError from its format checks, RuntimeError "is not a digit"). A corrupt size in a header
# can also make it ask for more memory than exists (MemoryError), which callers report on its own: that message
# must not call a machine out of memory a corrupt archive.
KALDIIO_READ_ERRORS: tuple[type[Exception], ...] = (
    OSError, EOFError, ValueError, struct.error, AssertionError, RuntimeError
)


def read_matrix(location: str, table: str | Path, key: str, files: dict[str, BinaryIO] | None = None) -> np.ndarray:
    """Load one matrix an scp line points at (`file.ark:offset`), a compressed one as Kaldi expands it
    (`read_compressed`); a missing, truncated or corrupt archive is an AsrBnError naming the scp table, the
    utterance and the fix instead of kaldiio's own exception. `files` (archive → open file, the caller closes them)
    keeps archives open across the calls of one process that reads a table in turn (not across a fork: the
    children would share the file's offset)."""
    import kaldiio

    try:
        path, _, offset = location.rpartition(":")
        if path and offset.isdigit():
            f = files.get(path) if files is not None else None
            if f is None:
                f = open(path, "rb")
                if files is not None:
                    files[path] = f
            try:
                f.seek(int(offset))
                mat = read_compressed(f)
                if mat is None:
                    mat = kaldiio.load_mat(location, fd_dict={path: f})
            finally:
                if files is None:
                    f.close()
        else:
            mat = kaldiio.load_mat(location)
    except MemoryError as e:
        raise AsrBnError(out_of_memory_reading(f"{table}: {key} at {location}", e)) from e
    except KALDIIO_READ_ERRORS as e:
        raise AsrBnError(
            f"{table}: cannot read {key} at {location} ({archive_problem(location, e)}); "
            "the archive is missing, truncated or corrupt: re-run the stage that wrote it"
        ) from e
    if not isinstance(mat, np.ndarray) or mat.ndim not in (1, 2):
        raise AsrBnError(f"{table}: {key} at {location} is not a Kaldi matrix or vector; re-run the stage that wrote it")
    return mat


def archive_problem(location: str, error: BaseException) -> str:
    """What is wrong at `file:offset` (an scp entry) that kaldiio failed to read with `error`, in words: the file
    missing or ending before the offset, no Kaldi binary header there (kaldiio's bare assertions), else the error."""
    file, _, offset = location.rpartition(":")
    if offset.isdigit() and file:
        try:
            size = os.path.getsize(file)
        except OSError as e:
            return f"{file}: {e.strerror or e}"
        if int(offset) >= size:
            return f"{file} has {size} bytes, it ends before byte {offset}"
        end = _matrix_end(file, int(offset))
        if end is not None and end > size:
            return f"{file} has {size} bytes, the matrix at byte {offset} ends at byte {end}"
    if isinstance(error, AssertionError) and not str(error):
        return f"no Kaldi binary matrix header at {location}"
    return error_detail(error)


_FULL_MATRIX = {b"FM ": 4, b"DM ": 8, b"FV ": 4, b"DV ": 8}  # Kaldi binary token → bytes per element


def _matrix_end(file: str, offset: int) -> int | None:
    """Where the uncompressed Kaldi binary matrix or vector at `offset` ends, from its header (bytes 0 and 'B', the
    token, then for each dimension the byte 4 and an int32); None when the bytes there are no such header."""
    with open(file, "rb") as f:
        f.seek(offset)
        head = f.read(15)
    size = _FULL_MATRIX.get(head[2:5])
    if head[:2] != b"\0B" or size is None:
        return None
    dims = 1 if head[3:4] == b"V" else 2
    if len(head) < 5 + 5 * dims or any(head[5 + 5 * i] != 4 for i in range(dims)):
        return None
    shape = [int.from_bytes(head[6 + 5 * i : 10 + 5 * i], "little", signed=True) for i in range(dims)]
    return offset + 5 + 5 * dims + size * math.prod(shape) if min(shape) >= 0 else None


def out_of_memory_reading(what: str, error: MemoryError) -> str:
    """The one line for a MemoryError while kaldiio reads `what`: either the machine is short of memory or a
    corrupt header claims a huge matrix; both are named, neither is asserted."""
    return (
        f"{what}: out of memory reading the matrix ({error_detail(error)}): free memory, or, if the matrix is not "
        "that large, its header is corrupt: re-run the stage that wrote it"
    )


# -- Kaldi text tables (scp files, utt2spk, text, utt2num_frames, lexicon.txt, symbol tables ...) -----------------


@dataclass(frozen=True)
class TableRow:
    """One non-blank line of a Kaldi text table: its 1-based line number, its first field and the rest of it."""

    line: int
    key: str
    rest: str  # stripped; "" when the key is alone on its line

    @property
    def fields(self) -> list[str]:
        """The rest of the line split on whitespace (a transcript's words, a speaker's utterances, ...)."""
        return self.rest.split()


def read_lines(path: str | Path, fix: str) -> list[tuple[int, str]]:
    """Non-blank lines of a text file, stripped, with their 1-based numbers. A missing file is one AsrBnError
    `PATH is missing; FIX`, an unreadable one `cannot read PATH (error); FIX`; a line that is not UTF-8 one naming
    the line, byte and column."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise AsrBnError(f"{path} is missing; {fix}") from e
    except OSError as e:
        raise AsrBnError(f"cannot read {path} ({error_detail(e)}); {fix}") from e
    out = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise AsrBnError(
                f"{path} line {number}: not valid UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1}); "
                f"re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
            ) from e
        if text.strip():
            out.append((number, text.strip()))
    return out


def read_rows(path: str | Path, fix: str, *, fields: tuple[int, int | None] = (1, None)) -> list[TableRow]:
    """Every non-blank line of a Kaldi text table as a TableRow, in file order, keys repeating as they may (a
    lexicon lists a word once per pronunciation). `fields` = (fewest, most or None) fields a line may have;
    outside that is one AsrBnError naming the file and line. Reading errors as in `read_lines`."""
    low, high = fields
    rows = []
    for number, line in read_lines(path, fix):
        parts = line.split(None, 1)
        key, rest = parts[0], (parts[1].strip() if len(parts) > 1 else "")
        count = 1 + len(rest.split())
        if count < low or (high is not None and count > high):
            want = str(low) if high == low else f"at least {low}" if high is None else f"{low}-{high}"
            raise AsrBnError(f"{path} line {number}: expected {want} fields, found {count}: {line[:80]!r} ({fix})")
        rows.append(TableRow(number, key, rest))
    return rows


def index_rows(path: str | Path, rows: Iterable[TableRow]) -> dict[str, TableRow]:
    """Key → row, in file order; a key on two lines is one AsrBnError naming both (a Kaldi table keys each item
    once)."""
    table: dict[str, TableRow] = {}
    for row in rows:
        if row.key in table:
            raise AsrBnError(
                f"{path}: key {row.key!r} appears twice (lines {table[row.key].line} and {row.line}); "
                "keep one of the two lines"
            )
        table[row.key] = row
    return table


def read_table(path: str | Path, fix: str, *, fields: tuple[int, int | None] = (2, 2)) -> dict[str, TableRow]:
    """A Kaldi table with one line per key (scp files, utt2spk, text, ...): key → TableRow (`.rest` the rest of
    the line as written, `.fields` its tokens). Errors as in `read_rows` and `index_rows`."""
    return index_rows(path, read_rows(path, fix, fields=fields))
