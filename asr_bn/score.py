"""Scoring: frame cross-entropy and frame error rate against alignments, and WER/SER in Kaldi's format.

`frame_scores` is the metric of the paper's table (and of training's dev pass); `score_wer` is Kaldi's
`compute-wer` (same Levenshtein tie-breaking, same `%WER` / `%SER` lines) with `score.sh`'s choice of the best of
several hypothesis files (one per LM weight) and its per-utterance / per-speaker details; `bootstrap_wer` is
Kaldi's `compute-wer-bootci` (Bisani & Ney's bootstrap over utterances: a 95 % interval of each WER and the
probability that one system makes fewer errors than another), seeded so that it prints the same on every machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from asr_bn.config import SCORE_MODES
from asr_bn.data import read_speakers, read_utt2spk
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import check_output_dir, read_rows, read_table, write_text
from asr_bn.report import Report

__all__ = [
    "FrameScores",
    "frame_scores",
    "ErrorCounts",
    "UttAlignment",
    "WerResult",
    "align_words",
    "read_text",
    "score_wer",
    "score_hyps",
    "best_of",
    "hyp_files",
    "write_details",
    "read_per_utt",
    "WerInterval",
    "Bootstrap",
    "bootstrap_wer",
]

EPS = "***"  # the filler Kaldi's per-utterance details print for a missing word


# --------------------------------------------------------------------------------------------------------------
# Frame cross-entropy / frame error rate


@dataclass
class FrameScores:
    """Summed frame cross-entropy (nats), frame errors and frame count; add them up over batches, then read
    `ce` and `fer` (micro-averaged over frames, as in the paper's table)."""

    ce_sum: float = 0.0
    errors: int = 0
    frames: int = 0

    @property
    def ce(self) -> float:
        """Mean negative log-probability of the target pdf per frame (nats)."""
        return self.ce_sum / self.frames if self.frames else float("nan")

    @property
    def fer(self) -> float:
        """Fraction of frames whose arg-max pdf is not the target (0..1)."""
        return self.errors / self.frames if self.frames else float("nan")

    def __add__(self, other: "FrameScores") -> "FrameScores":
        return FrameScores(self.ce_sum + other.ce_sum, self.errors + other.errors, self.frames + other.frames)


def frame_scores(log_probs, targets, lengths) -> FrameScores:  # noqa: ANN001 - torch tensors, imported lazily
    """Frame CE and errors of a padded batch, counting only real frames.

    :param log_probs: (B, T, S) log-softmax outputs.
    :param targets: (B, T) int pdf-ids; padding may hold anything (negative targets are also ignored).
    :param lengths: (B,) number of real frames of each sequence.
    :return: `FrameScores` sums for the batch (add them up across batches).
    """
    import torch

    if log_probs.dim() != 3 or targets.shape != log_probs.shape[:2] or lengths.shape != log_probs.shape[:1]:
        raise ValueError(
            f"frame_scores: shapes log_probs {tuple(log_probs.shape)}, targets {tuple(targets.shape)}, "
            f"lengths {tuple(lengths.shape)} do not fit (B, T, S), (B, T), (B,)"
        )
    with torch.no_grad():
        B, T, S = log_probs.shape
        mask = torch.arange(T, device=log_probs.device)[None, :] < lengths.to(log_probs.device)[:, None]  # (B, T)
        mask &= targets >= 0
        tgt = torch.where(mask, targets, torch.zeros_like(targets)).long()
        if mask.any() and int(tgt[mask].max()) >= S:
            raise ValueError(f"frame_scores: target pdf-id {int(tgt[mask].max())} >= number of outputs {S}")
        nll = -log_probs.gather(2, tgt.unsqueeze(2)).squeeze(2)  # (B, T)
        wrong = log_probs.argmax(dim=2) != tgt  # (B, T)
        return FrameScores(
            ce_sum=float(nll[mask].double().sum()),
            errors=int(wrong[mask].sum()),
            frames=int(mask.sum()),
        )


# --------------------------------------------------------------------------------------------------------------
# Word error rate


@dataclass
class ErrorCounts:
    """Kaldi `compute-wer` counts: reference words, insertions, deletions, substitutions, sentences."""

    words: int = 0
    ins: int = 0
    dels: int = 0
    subs: int = 0
    sentences: int = 0
    sentence_errors: int = 0

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def wer(self) -> float:
        """Word error rate in percent."""
        return 100.0 * self.errors / self.words if self.words else float("nan")

    @property
    def ser(self) -> float:
        """Sentence error rate in percent."""
        return 100.0 * self.sentence_errors / self.sentences if self.sentences else float("nan")

    def wer_line(self) -> str:
        """`%WER 6.05 [ 498 / 8234, 61 ins, 75 del, 362 sub ]`, exactly as Kaldi prints it."""
        return (
            f"%WER {self.wer:.2f} [ {self.errors} / {self.words}, "
            f"{self.ins} ins, {self.dels} del, {self.subs} sub ]"
        )

    def ser_line(self) -> str:
        """`%SER 33.33 [ 1 / 3 ]`, exactly as Kaldi prints it."""
        return f"%SER {self.ser:.2f} [ {self.sentence_errors} / {self.sentences} ]"

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(
            self.words + other.words,
            self.ins + other.ins,
            self.dels + other.dels,
            self.subs + other.subs,
            self.sentences + other.sentences,
            self.sentence_errors + other.sentence_errors,
        )


@dataclass
class UttAlignment:
    """One utterance's word alignment: pairs (ref word or None, hyp word or None) and its counts."""

    pairs: list[tuple[str | None, str | None]]
    counts: ErrorCounts

    def ops(self) -> list[str]:
        """Kaldi's op codes per aligned pair: C(orrect), S(ubstitution), I(nsertion), D(eletion)."""
        return [
            "I" if r is None else "D" if h is None else "C" if r == h else "S"
            for r, h in self.pairs
        ]


def align_words(ref: Sequence[str], hyp: Sequence[str]) -> UttAlignment:
    """Levenshtein alignment with Kaldi's tie-breaking (util/edit-distance-inl.h): substitution only when strictly
    cheaper, else deletion when cheaper than insertion, else insertion — so the counts equal `compute-wer`'s.
    """
    R, H = len(ref), len(hyp)
    # cost[h][r]: edit distance of hyp[:h] vs ref[:r]; back[h][r]: 0 sub/match, 1 del, 2 ins.
    cost = [list(range(R + 1))]
    back = [[1] * (R + 1)]
    for h in range(1, H + 1):
        prev = cost[h - 1]
        row = [h] + [0] * R
        brow = [2] + [0] * R
        word = hyp[h - 1]
        for r in range(1, R + 1):
            ins_err = prev[r] + 1
            del_err = row[r - 1] + 1
            sub_err = prev[r - 1] + (word != ref[r - 1])
            if sub_err < ins_err and sub_err < del_err:
                row[r], brow[r] = sub_err, 0
            elif del_err < ins_err:
                row[r], brow[r] = del_err, 1
            else:
                row[r], brow[r] = ins_err, 2
        cost.append(row)
        back.append(brow)
    pairs: list[tuple[str | None, str | None]] = []
    counts = ErrorCounts(words=R, sentences=1)
    h, r = H, R
    while h > 0 or r > 0:
        step = back[h][r] if h > 0 and r > 0 else (1 if h == 0 else 2)
        if step == 0:
            pairs.append((ref[r - 1], hyp[h - 1]))
            counts.subs += ref[r - 1] != hyp[h - 1]
            h, r = h - 1, r - 1
        elif step == 1:
            pairs.append((ref[r - 1], None))
            counts.dels += 1
            r -= 1
        else:
            pairs.append((None, hyp[h - 1]))
            counts.ins += 1
            h -= 1
    pairs.reverse()
    counts.sentence_errors = int(counts.errors > 0)
    return UttAlignment(pairs, counts)


def read_text(path: str | Path, what: str = "transcripts") -> dict[str, list[str]]:
    """Read a Kaldi `text` file (`utt-id word word …` per line; an id alone is an empty transcript)."""
    fix = f"give a Kaldi `text` file of {what}: `utt-id word …` per line, one line per utterance"
    return {utt: row.fields for utt, row in read_table(path, fix, fields=(1, None)).items()}


@dataclass
class WerResult:
    """WER of one hypothesis file against the reference: totals, per-utterance alignments, what was missing."""

    hyp_path: Path
    counts: ErrorCounts
    utts: dict[str, UttAlignment]
    missing: list[str] = field(default_factory=list)  # reference utterances without a hypothesis
    extra: list[str] = field(default_factory=list)  # hypotheses without a reference (not scored)

    def wer_line(self) -> str:
        """compute-wer's `%WER` line: the counts, then `[PARTIAL]` when a reference utterance has no hypothesis
        (in any mode)."""
        return self.counts.wer_line() + (" [PARTIAL]" if self.missing else "")

    def lines(self) -> list[str]:
        """Kaldi's three summary lines (`%WER`, `%SER`, `Scored …`), the first tagged with the hypothesis file."""
        return [
            f"{self.wer_line()} {self.hyp_path}",
            self.counts.ser_line(),
            f"Scored {self.counts.sentences} sentences, {len(self.missing)} not present in hyp.",
        ]

    def per_utt(self) -> dict[str, ErrorCounts]:
        """Counts per scored utterance (what `bootstrap_wer` resamples)."""
        return {utt: ali.counts for utt, ali in self.utts.items()}


def score_wer(
    ref: dict[str, list[str]],
    hyp_path: str | Path,
    ignore: Iterable[str] = (),
    mode: str = "all",
) -> WerResult:
    """Score one Kaldi `text` file of hypotheses against reference transcripts, as `compute-wer --text`.

    :param ignore: non-scored words (e.g. `<NOISE>`, `<SIL>`), removed from both sides before alignment.
    :param mode: `all` (a missing hypothesis counts as empty), `present` (score only utterances with a hypothesis),
        `strict` (a missing hypothesis is an error) — Kaldi's `--mode`.
    """
    if mode not in SCORE_MODES:
        raise UsageError(f"--mode {mode!r}: use one of {', '.join(SCORE_MODES)}")
    hyp_path = Path(hyp_path)
    hyp = read_text(hyp_path, "hypotheses")
    ignored = set(ignore)
    missing = [u for u in ref if u not in hyp]
    if missing and mode == "strict":
        raise AsrBnError(
            f"{hyp_path}: no hypothesis for {len(missing)} reference utterance(s), e.g. {missing[0]} "
            "(decode them, or use --mode all / present)"
        )
    total = ErrorCounts()
    utts: dict[str, UttAlignment] = {}
    for utt, ref_words in ref.items():
        if utt not in hyp and mode == "present":
            continue
        r = [w for w in ref_words if w not in ignored]
        h = [w for w in hyp.get(utt, []) if w not in ignored]
        utts[utt] = align_words(r, h)
        total += utts[utt].counts
    if total.words == 0:
        raise AsrBnError(
            f"{hyp_path}: no reference words to score (the reference is empty, or every word is --ignore'd, "
            "or no hypothesis matches a reference utterance id)"
        )
    extra = [u for u in hyp if u not in ref]
    return WerResult(hyp_path, total, utts, missing, extra)


def hyp_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand hypothesis arguments: a file stays; a directory gives its `hyp_*` files (one per LM weight, numeric
    order), or its `text` when it has none (what `asr-bn decode` writes)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("hyp_*"), key=_weight_key)
            if not found and (p / "text").is_file():
                found = [p / "text"]
            if not found:
                raise AsrBnError(f"{p}: no hyp_* or text files inside (give a decode directory or text files)")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise AsrBnError(f"{p}: no such file or directory (give hypothesis text files or a decode directory)")
    return out


def _weight_key(path: Path) -> tuple[float, str]:
    m = re.search(r"(\d+(?:\.\d+)?)$", path.name)
    return (float(m.group(1)) if m else float("inf"), path.name)


def score_hyps(
    ref_path: str | Path,
    hyps: Sequence[str | Path],
    ignore: Iterable[str] = (),
    mode: str = "all",
) -> tuple[list[WerResult], WerResult]:
    """Score each hypothesis file (see `hyp_files`) against one reference; return all results and the best
    (lowest WER, as Kaldi's `utils/best_wer.sh` picks over LM weights).

    `ref_path` is a Kaldi `text` file or a data directory containing one.
    """
    ref_path = Path(ref_path)
    ref = read_text(ref_path / "text" if ref_path.is_dir() else ref_path, "reference transcripts")
    ignore = list(ignore)
    results = [score_wer(ref, h, ignore, mode) for h in hyp_files(hyps)]
    return results, best_of(results)


def best_of(results: Sequence[WerResult]) -> WerResult:
    """The result with the lowest WER (then SER), as Kaldi's `utils/best_wer.sh` picks over LM weights."""
    return min(results, key=lambda res: (res.counts.wer, res.counts.ser))


_SPK_FILES = ("utt2spk", "spk2utt")


def write_details(
    result: WerResult, out_dir: str | Path, utt2spk: str | Path | None = None, report: Report | None = None
) -> list[Path]:
    """Write Kaldi's `per_utt` (ref / hyp / op / #csid rows per utterance) and `per_spk` (speaker table) files
    for one result into `out_dir` (created, as score.sh's wer_details). Speakers come from `utt2spk`: a file, or a
    data dir (its utt2spk or spk2utt), read as `asr-bn prep` reads them (a reversed utt2spk is recognised and
    noted in `report`); without it all utterances count as speaker `all`. Returns the two paths."""
    out_dir = check_output_dir(out_dir, "--details")
    report = report if report is not None else Report("score")
    spk_of: dict[str, str] = {}
    if utt2spk is not None and Path(utt2spk).is_dir() and not any(Path(utt2spk, n).is_file() for n in _SPK_FILES):
        report.note(f"{utt2spk} has neither utt2spk nor spk2utt: all utterances count as speaker `all`")
        utt2spk = None
    if utt2spk is not None:
        read = read_speakers if Path(utt2spk).is_dir() else read_utt2spk
        spk_of = read(utt2spk, result.utts, report)
        unknown = [utt for utt in result.utts if utt not in spk_of]
        if unknown:
            report.note(f"{len(unknown)} scored utterances have no speaker in {utt2spk} (e.g. {unknown[0]}): "
                        "counted under speaker `unknown`")
    rows = []
    for utt, ali in result.utts.items():
        ops = ali.ops()
        refs = [r if r is not None else EPS for r, _ in ali.pairs]
        hyps = [h if h is not None else EPS for _, h in ali.pairs]
        widths = [max(len(a), len(b)) for a, b in zip(refs, hyps)]
        c = ali.counts
        rows += [
            f"{utt} ref  {_columns(refs, widths)}",
            f"{utt} hyp  {_columns(hyps, widths)}",
            f"{utt} op   {_columns(ops, widths)}",
            f"{utt} #csid {ops.count('C')} {c.subs} {c.ins} {c.dels}",
        ]
    per_utt = out_dir / "per_utt"
    write_text(per_utt, "\n".join(rows) + "\n")

    by_spk: dict[str, ErrorCounts] = {}
    for utt, ali in result.utts.items():
        spk = spk_of.get(utt, "unknown") if utt2spk is not None else "all"
        by_spk[spk] = by_spk.get(spk, ErrorCounts()) + ali.counts
    table = [
        f"{'SPEAKER':<15} {'id':<4} {'#SENT':>6} {'#WORD':>7} {'Corr':>7} {'Sub':>7} {'Ins':>7} {'Del':>7} "
        f"{'Err':>7} {'S.Err':>7}"
    ]
    for spk, c in sorted(by_spk.items()) + [("SUM", result.counts)]:
        corr = c.words - c.subs - c.dels
        raw = [c.sentences, c.words, corr, c.subs, c.ins, c.dels, c.errors, c.sentence_errors]
        pct = [_percent(n, c.words) for n in (corr, c.subs, c.ins, c.dels, c.errors)]
        table.append(f"{spk:<15} {'raw':<4} " + " ".join(f"{n:>{w}}" for n, w in zip(raw, [6] + [7] * 7)))
        table.append(
            f"{spk:<15} {'sys':<4} {c.sentences:>6} {c.words:>7} "
            + " ".join(f"{x:>7.2f}" for x in pct + [_percent(c.sentence_errors, c.sentences)])
        )
    per_spk = out_dir / "per_spk"
    write_text(per_spk, "\n".join(table) + "\n")
    return [per_utt, per_spk]


def _columns(items: list[str], widths: list[int]) -> str:
    return " ".join(s.ljust(w) for s, w in zip(items, widths)).rstrip()


def _percent(n: int, d: int) -> float:
    return 100.0 * n / d if d else 0.0


def read_per_utt(path: str | Path) -> dict[str, ErrorCounts]:
    """Per-utterance counts from the `#csid` rows of a Kaldi `per_utt` file (`write_details`, or Kaldi's
    score_kaldi.sh `wer_details/per_utt`): what `bootstrap_wer` resamples, without scoring again."""
    path = Path(path)
    out: dict[str, ErrorCounts] = {}
    for row in read_rows(path, "write it with `asr-bn score wer … --details DIR`"):  # non-UTF-8: one line
        fields = row.fields
        if not fields or fields[0] != "#csid":
            continue
        if len(fields) != 5 or not all(x.isdigit() for x in fields[1:]):
            raise AsrBnError(
                f"{path}:{row.line}: expected `utt-id #csid C S I D` with 4 counts >= 0, "
                f"got {row.key + ' ' + row.rest!r}"
            )
        corr, subs, ins, dels = (int(x) for x in fields[1:])
        words = corr + subs + dels
        out[row.key] = ErrorCounts(words, ins, dels, subs, 1, int(subs + ins + dels > 0))
    if not out:
        raise AsrBnError(f"{path}: no `utt-id #csid C S I D` rows (is it a Kaldi per_utt file?)")
    return out


@dataclass(frozen=True)
class WerInterval:
    """A bootstrap estimate of one WER, in percent: the mean over the replications and its 95 % interval
    (mean ± 1.96 standard deviations, as compute-wer-bootci)."""

    mean: float
    low: float
    high: float

    def line(self, name: str) -> str:
        """`Set1: %WER 6.21 95% Conf Interval [ 3.50, 8.92 ]`, as compute-wer-bootci prints it."""
        return f"{name}: %WER {self.mean:.2f} 95% Conf Interval [ {self.low:.2f}, {self.high:.2f} ]"

    def span(self, digits: int = 1) -> str:
        """`(3.8, 40.6)`: the interval as the demo's and the recipes' tables print it."""
        return f"({self.low:.{digits}f}, {self.high:.{digits}f})"


@dataclass(frozen=True)
class Bootstrap:
    """compute-wer-bootci's result for one or two systems scored on the same utterances."""

    intervals: list[WerInterval]
    p_improve: float | None  # P(Set2 makes fewer errors than Set1), 0..1; None for one system
    p_worse: float | None  # P(Set2 makes more errors than Set1); 1 - p_improve - p_worse is P(a tie)
    utterances: int
    replications: int
    seed: int

    def lines(self) -> list[str]:
        """compute-wer-bootci's output lines (Set1, [Set2, Probability of Set2 improving Set1 in percent])."""
        out = [iv.line(f"Set{i}") for i, iv in enumerate(self.intervals, 1)]
        if self.p_improve is not None:
            out.append(f"Probability of Set2 improving Set1: {100 * self.p_improve:.2f}")
        return out


def bootstrap_wer(
    systems: Sequence[Mapping[str, ErrorCounts]], replications: int = 10000, seed: int = 0
) -> Bootstrap:
    """Kaldi's compute-wer-bootci on per-utterance counts (`WerResult.utts` values' counts, or `read_per_utt`).

    Each replication draws as many utterances as there are, with replacement; the WER of a replication is its
    errors over its reference words. With two systems the same draws score both (a paired comparison), and
    `p_improve` counts the replications where Set2 has strictly fewer errors. Utterances scored for only one of
    the systems are left out (compute-wer-bootci's --mode present). Deterministic for a seed.
    """
    import numpy as np

    if len(systems) not in (1, 2):
        raise UsageError(f"bootstrap_wer compares one or two systems, got {len(systems)}")
    if replications < 1:
        raise UsageError(f"--replications {replications}: give a number of replications >= 1 (Kaldi's: 10000)")
    if seed < 0:
        raise UsageError(f"--seed {seed}: give a seed >= 0")
    utts = [u for u in systems[0] if all(u in s for s in systems[1:])]
    words = np.array([systems[0][u].words for u in utts], dtype=np.int64)
    if not utts or words.sum() == 0:
        raise AsrBnError("bootstrap: no utterance with reference words is scored for every system")
    errors = np.array([[s[u].errors for u in utts] for s in systems], dtype=np.int64)  # (systems, utts)
    if any(s[u].words != w for s in systems[1:] for u, w in zip(utts, words)):
        raise AsrBnError("bootstrap: the systems were scored against different references (word counts differ)")
    rng = np.random.default_rng(seed)
    n = len(utts)
    rep_words, rep_errors = [], []
    block = max(1, 2_000_000 // n)  # replications per draw: bounded memory for large test sets
    for start in range(0, replications, block):
        draw = rng.integers(0, n, size=(min(block, replications - start), n))
        rep_words.append(words[draw].sum(axis=1))
        rep_errors.append(errors[:, draw].sum(axis=2))
    total_words = np.concatenate(rep_words)
    total_errors = np.concatenate(rep_errors, axis=1)  # (systems, replications)
    if (total_words == 0).any():
        raise AsrBnError(
            "bootstrap: a replication drew only utterances with empty references; too few scored words for a bootstrap"
        )
    intervals = []
    for errs in total_errors:
        wer = errs / total_words
        mean, half = wer.mean(), 1.96 * wer.std()
        intervals.append(WerInterval(100 * mean, 100 * (mean - half), 100 * (mean + half)))
    p_improve = p_worse = None
    if len(systems) == 2:
        diff = total_errors[0] - total_errors[1]
        p_improve, p_worse = float((diff > 0).mean()), float((diff < 0).mean())
    return Bootstrap(intervals, p_improve, p_worse, n, replications, seed)
