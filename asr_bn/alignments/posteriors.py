"""Soft targets: Kaldi posterior archives (`ali-to-post`, `prob-to-post` output) and the averaged posteriors of
several networks, the teacher of a network trained toward an ensemble (`asr-bn prep post`, `asr-bn train
--soft-weight`).

An utterance's posteriors are two (frames × K) arrays, pdf-ids and weights, K the most entries of any of its frames,
short frames padded with weight 0. Kaldi's binary form: `\\0B`, the frame count, then per frame its entry count and
(int32 pdf-id, float weight) pairs, each number with its size byte; the text form: `utt [ pdf w pdf w ] [ … ] …`.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Sequence

import numpy as np

from asr_bn.alignments.archives import parse_archive, read_maybe_gzip
from asr_bn.alignments.targets import read_num_frames
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import OutputLock, atomic_open, read_matrix, read_table
from asr_bn.report import Report

__all__ = [
    "Posterior", "add_scaled", "average_posteriors", "join_posteriors", "posterior_bytes", "read_posterior_table",
    "read_posteriors", "write_posteriors",
]  # fmt: skip

Posterior = tuple[np.ndarray, np.ndarray]
"""(pdf-ids int32 (T, K), weights float32 (T, K)) of one utterance; padding entries have weight 0."""

_PAIR = np.dtype([("s1", "u1"), ("pdf", "<i4"), ("s2", "u1"), ("weight", "<f4")])


def add_scaled(total: np.ndarray | None, mat: np.ndarray, scale: float) -> np.ndarray:
    """`total` + `scale`·`mat` in float with one rounding per element, as Kaldi's Matrix::AddMat (BLAS axpy, a fused
    multiply-add); `scale`·`mat` for the first matrix (None). `matrix-sum --average=true` is these steps with
    scale 1/n, so a mean made here is Kaldi's to the bit (but for the rare double rounding below)."""
    mat = np.asarray(mat, np.float32)
    if total is None:
        return np.float32(scale) * mat
    # the product is exact in double; the sum rounds once more only when it needs over 53 bits, and that second
    # rounding changes the float only on an exact float midpoint (about one element in 2^29)
    return (np.float64(np.float32(scale)) * mat.astype(np.float64) + total).astype(np.float32)


def average_posteriors(posteriors: Sequence[np.ndarray], min_post: float) -> Posterior:
    """The mean of several networks' posteriors of one utterance (each (T, S) float probabilities: `join_posteriors`
    takes them out of the log domain in double and rounds to float, where libm's expf, Kaldi's, differs by an ulp in a
    few elements in 10 000 and numpy's float exp in a third of them), entries below `min_post` dropped, as Kaldi's
    `copy-matrix --apply-exp`, `matrix-sum --average=true` and `prob-to-post --random-prune=false` compute it
    (`add_scaled` by 1/n in the given order); the kept weights are not renormalised (they sum to at most 1)."""
    if not len(posteriors):
        raise AsrBnError("no posteriors to average")
    probs = None
    for p in posteriors:
        probs = add_scaled(probs, p, 1.0 / len(posteriors))
    keep = probs >= np.float32(min_post)
    k = max(1, int(keep.sum(1).max(initial=0)))
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # each frame's kept pdfs first, in pdf order
    weights = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(probs, order, 1), np.float32(0))
    return np.where(weights > 0, order, 0).astype(np.int32), weights


def join_posteriors(data_dir: str | Path, sources: Sequence[str | Path], min_post: float = 0.01) -> Report:
    """Soft targets for a prepared dir: `post.ark/.scp`, the mean posteriors (`average_posteriors`) of the networks
    whose log-posteriors the .scp files `sources` hold (`asr-bn forward --posteriors`), for every utterance of the
    dir. Each source must hold every utterance, with the dir's frame count and one pdf count; log-likelihoods
    (forward without --posteriors) are refused by their rows, which do not sum to one."""
    data_dir = Path(data_dir)
    if not 0 < min_post <= 1:
        raise UsageError(f"--min-post {min_post}: must be in (0, 1]")
    if not sources:
        raise UsageError("give at least one .scp of log-posteriors (asr-bn forward --posteriors)")
    frames = read_num_frames(data_dir / "utt2num_frames")
    fix = "give the .scp that `asr-bn forward MODEL DATA ark,scp:X.ark,X.scp --posteriors` wrote for this data dir"
    tables = [(Path(s), read_table(s, fix)) for s in sources]
    for path, table in tables:
        missing = [u for u in frames if u not in table]
        if missing:
            raise AsrBnError(f"{path} has no log-posteriors for utterance {missing[0]} of {data_dir} "
                             f"({len(missing)} missing); {fix}")
    files: dict[str, BinaryIO] = {}
    dims: dict[int, Path] = {}  # the pdf count of the first source, and where it came from

    def averaged() -> Iterator[tuple[str, Posterior]]:
        from asr_bn.progress import track

        for utt, n in track(frames.items(), "averaging posteriors"):
            mats = []
            for path, table in tables:
                mat = read_matrix(table[utt].rest, path, utt, files)
                if mat.ndim != 2 or len(mat) != n:
                    raise AsrBnError(f"{path}: utterance {utt} has {len(mat)} frames, {data_dir} has {n}; {fix}")
                if not dims:
                    dims[mat.shape[1]] = path
                elif mat.shape[1] not in dims:
                    (dim, first), = dims.items()
                    raise AsrBnError(f"{path} has {mat.shape[1]} pdfs, {first} has {dim}: networks of different "
                                     "trees cannot be averaged")
                probs = np.exp(np.asarray(mat, np.float32).astype(np.float64))  # once: checked, then averaged
                total = probs.sum(1)
                if len(total) and np.abs(total - 1).max() > 1e-3:
                    raise AsrBnError(f"{path}: utterance {utt}: the rows are not log-posteriors (exp sums to "
                                     f"{total[np.abs(total - 1).argmax()]:.4g}); {fix}")
                mats.append(probs.astype(np.float32))
            yield utt, average_posteriors(mats, min_post)

    report = Report("soft targets")
    try:
        with OutputLock(data_dir):
            written = write_posteriors(data_dir / "post.ark", data_dir / "post.scp", averaged())
    finally:
        for f in files.values():
            f.close()
    report.counts = {"utterances": written, "networks": len(sources), "pdfs": next(iter(dims), 0)}
    return report


def read_posterior_table(scp: str | Path, utts: Sequence[str]) -> dict[str, Posterior]:
    """The posteriors of `utts` from a Kaldi .scp of posteriors (e.g. a prepared dir's post.scp), each archive it
    points to read whole."""
    scp = Path(scp)
    table = read_table(scp, "write it with `asr-bn prep post` (or Kaldi's prob-to-post / ali-to-post)")
    missing = [u for u in utts if u not in table]
    if missing:
        raise AsrBnError(f"{scp} has no posteriors for {missing[0]} ({len(missing)} utterances); run asr-bn prep post")
    wanted = set(utts)
    out: dict[str, Posterior] = {}
    for ark in dict.fromkeys(table[u].rest.rsplit(":", 1)[0] for u in utts):
        for utt, post in read_posteriors(ark):
            if utt in wanted:
                out[utt] = post
    lost = [u for u in utts if u not in out]
    if lost:
        raise AsrBnError(f"{scp}: {lost[0]} is not in the archive it points to ({table[lost[0]].rest}); "
                         "run asr-bn prep post again")
    return out


def posterior_bytes(post: Posterior) -> bytes:
    """Kaldi's binary form of one utterance's posteriors (after its key and space): `\\0B`, the frame count, each
    frame's entries; a frame's entries are its leading ones of non-zero weight (the padding left out)."""
    pdfs, weights = post
    frames, k = weights.shape
    valid = np.cumprod(weights != 0, axis=1).astype(bool)
    counts = valid.sum(1)
    sizes = 5 + 10 * counts
    starts = np.cumsum(sizes) - sizes
    body = np.zeros(int(sizes.sum()), np.uint8)
    body[starts] = 4
    body[starts[:, None] + 1 + np.arange(4)] = counts.astype("<i4").view(np.uint8).reshape(-1, 4)
    pairs = np.empty(int(counts.sum()), _PAIR)
    pairs["s1"], pairs["s2"], pairs["pdf"], pairs["weight"] = 4, 4, pdfs[valid], weights[valid]
    at = (starts[:, None] + 5 + 10 * np.arange(k))[valid]
    body[at[:, None] + np.arange(10)] = pairs.view(np.uint8).reshape(-1, 10)
    return b"\0B\x04" + struct.pack("<i", frames) + body.tobytes()


def write_posteriors(ark: Path, scp: Path, items: Iterable[tuple[str, Posterior]]) -> int:
    """Write a Kaldi posterior archive and its scp (`utt ark:offset`), each atomically; returns the count."""
    lines, n = [], 0
    with atomic_open(ark, "wb", encoding=None) as f:
        for utt, post in items:
            f.write(utt.encode() + b" ")
            lines.append(f"{utt} {ark}:{f.tell()}\n")
            f.write(posterior_bytes(post))
            n += 1
    with atomic_open(scp, "w") as f:
        f.write("".join(lines))
    return n


def read_posteriors(path: str | Path) -> Iterator[tuple[str, Posterior]]:
    """Every utterance of a Kaldi posterior archive (binary or text, gzipped or not), in file order."""
    path = Path(path)
    return parse_archive(read_maybe_gzip(path, "posteriors"), path, "a posterior archive", "write it again",
                         _binary_posterior, _text_posterior)


def _int(data: bytes, pos: int, path: Path, utt: str) -> int:
    if data[pos : pos + 1] != b"\x04" or pos + 5 > len(data):
        raise AsrBnError(f"{path}: byte {pos} (utterance {utt}): expected a binary int32 (truncated file, or not a "
                         "posterior archive?)")
    return int.from_bytes(data[pos + 1 : pos + 5], "little", signed=True)


def _binary_posterior(data: bytes, pos: int, path: Path, utt: str) -> tuple[Posterior, int]:
    frames = _int(data, pos, path, utt)
    pos += 5
    starts, counts = np.empty(max(frames, 0), np.int64), np.empty(max(frames, 0), np.int64)
    for t in range(frames):  # entry counts in sequence; the pairs are then gathered at once
        n = _int(data, pos, path, utt)
        if n < 0:
            raise AsrBnError(f"{path}: byte {pos} (utterance {utt}): negative entry count {n} (corrupt archive)")
        starts[t], counts[t] = pos + 5, n
        pos += 5 + 10 * n
    if pos > len(data):
        raise AsrBnError(f"{path}: utterance {utt} does not fit in the file (truncated archive?)")
    k = max(1, int(counts.max(initial=0)))
    valid = np.arange(k) < counts[:, None]
    offsets = (starts[:, None] + 10 * np.arange(k))[valid]
    raw = np.frombuffer(data, np.uint8)
    pairs = raw[offsets[:, None] + np.arange(10)].copy().view(_PAIR).ravel()
    if ((pairs["s1"] != 4) | (pairs["s2"] != 4)).any():
        raise AsrBnError(f"{path}: utterance {utt}: expected (int32, float) pairs (not a posterior archive?)")
    pdfs, weights = np.zeros((frames, k), np.int32), np.zeros((frames, k), np.float32)
    pdfs[valid], weights[valid] = pairs["pdf"], pairs["weight"]
    return (pdfs, weights), pos


def _text_posterior(line: bytes, path: Path, pos: int, utt: str) -> Posterior:
    frames = []
    words = line.split()
    i = 0
    try:
        while i < len(words):
            if words[i] != b"[":
                raise ValueError
            end = words.index(b"]", i)
            inner = words[i + 1 : end]
            if len(inner) % 2:
                raise ValueError
            frames.append([(int(inner[j]), float(inner[j + 1])) for j in range(0, len(inner), 2)])
            i = end + 1
    except ValueError:
        raise AsrBnError(f"{path}: byte {pos} (utterance {utt}): expected frames `[ pdf weight … ]` (a Kaldi "
                         "posterior archive, e.g. from ali-to-post or prob-to-post)") from None
    k = max([1] + [len(f) for f in frames])
    pdfs, weights = np.zeros((len(frames), k), np.int32), np.zeros((len(frames), k), np.float32)
    for t, entries in enumerate(frames):
        for j, (pdf, w) in enumerate(entries):
            pdfs[t, j], weights[t, j] = pdf, w
    return pdfs, weights
