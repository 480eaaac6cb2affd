#!/usr/bin/env python3
"""The recipe's results table (the paper's comparison): train CE, dev CE, dev FER and test WER per model.

    python local/report.py exp/blstm exp/blstm_bn_seq [--labels none,sequence] [--graphs loop,an4lm,tg]

An ensemble (stage 7's --ensemble: EXP/members names the seeds' model dirs) has no frame scores of its own: its row
gives the members' seeds and its WERs.

Reads  EXP/config.json (the seed), EXP/frames_train, EXP/frames_dev (`asr-bn score frames` lines),
       EXP/metrics.jsonl (the best update, the updates run), EXP/decode_test_<graph>/wer and
       EXP/decode_dev_<graph>/wer (`asr-bn score wer` lines), the LM weight chosen on dev (the hyp_<LMWT> file
       scored on test), and EXP/decode_test_<graph>/details/per_utt (the per-utterance errors on test)
Writes a Markdown table on stdout, each test WER with the 95 % interval of compute-wer-bootci's bootstrap over the
       test utterances, then P(better) of the same-seed models of each label and the one before it when both name
       the same data (e.g. none then sequence, sequence then sequence+MMI; the first is Set1); a missing input is
       an error naming the file and the stage that writes it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from asr_bn.errors import AsrBnError
from asr_bn.score import ErrorCounts, bootstrap_wer, read_per_utt

REPLICATIONS = 10000  # compute-wer-bootci's default

_FRAMES = re.compile(r"frame CE (?P<ce>[\d.]+) nats, FER (?P<fer>[\d.]+) %")
_WER = re.compile(r"%WER (?P<wer>[\d.]+) \[.*\] (?P<hyp>\S+)$")


def frame_scores(path: Path) -> tuple[float, float]:
    """(CE in nats, FER in %) of an `asr-bn score frames` output file."""
    m = _FRAMES.search(_read(path, "stage 8"))
    if m is None:
        raise AsrBnError(f"{path}: no `frame CE … FER …` line (rerun stage 8 after removing it)")
    return float(m["ce"]), float(m["fer"])


def wer(path: Path) -> tuple[float, str]:
    """(WER in %, the hypothesis file scored) of the first `%WER` line of an `asr-bn score wer` output file."""
    for line in _read(path, "stage 7").splitlines():
        m = _WER.search(line.removeprefix("best: "))
        if m:
            return float(m["wer"]), m["hyp"]
    raise AsrBnError(f"{path}: no %WER line (rerun stage 7 after removing {path.parent}/.done)")


def training_summary(exp: Path) -> str:
    """`best update / updates run` from metrics.jsonl: where final.pt comes from."""
    rows = [json.loads(line) for line in _read(exp / "metrics.jsonl", "stage 5/6").splitlines() if line.strip()]
    dev = [r for r in rows if r.get("kind") == "dev"]
    if not dev:
        raise AsrBnError(f"{exp}/metrics.jsonl has no dev evaluation (is the training complete?)")
    best = min(dev, key=lambda r: r["ce"])
    return f"{best['update']} / {max(r['update'] for r in rows)}"


def seed(exp: Path) -> int:
    """The --seed the model in `exp` was trained with (its config.json)."""
    return int(json.loads(_read(exp / "config.json", "stage 5/6"))["seed"])


def table(exps: list[Path], labels: list[str], graphs: list[str] | None = None) -> str:
    """The Markdown table: one row per model (with its seed), a dev-WER and a test-WER column per graph (default:
    every decode_test_<graph> dir, sorted), the LM weight chosen on dev beside the test WER; a label trained with
    several seeds also gets a row of their means."""
    if graphs is None:
        graphs = sorted({d.name.removeprefix("decode_test_") for e in exps for d in e.glob("decode_test_*")})
    head = ["model", "seed", "train CE", "dev CE", "dev FER %", "best update / updates",
            *(f"{g}: dev WER %" for g in graphs), *(f"{g}: test WER % (LMWT) (95 % CI)" for g in graphs)]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * (len(head) - 2)]
    numbers: dict[str, list[list[float]]] = {}  # label -> per seed: train CE, dev CE, dev FER, dev WERs, test WERs
    per_utt: dict[tuple[str, int], list[dict[str, ErrorCounts]]] = {}  # (label, seed) -> per graph: test errors
    for exp, label in zip(exps, labels):
        dev_wers, tests, errors = _wers(exp, graphs)
        wer_cells = [*(f"{w:.2f}" for w in dev_wers),
                     *(f"{w:.2f} ({hyp.rsplit('_', 1)[-1]}) {bootstrap_wer([e], REPLICATIONS).intervals[0].span(2)}"
                       for (w, hyp), e in zip(tests, errors))]
        if (exp / "members").is_file():  # an ensemble: its members' seeds, no frame scores (it is no single model)
            members = [Path(m) for m in _read(exp / "members", "stage 7").split()]
            cells = [label, "+".join(str(seed(m)) for m in members), "–", "–", "–", "–", *wer_cells]
        else:
            train_ce, _ = frame_scores(exp / "frames_train")
            dev_ce, dev_fer = frame_scores(exp / "frames_dev")
            numbers.setdefault(label, []).append([train_ce, dev_ce, dev_fer, *dev_wers, *(w for w, _ in tests)])
            per_utt[label, seed(exp)] = errors
            cells = [label, str(seed(exp)), f"{train_ce:.3f}", f"{dev_ce:.3f}", f"{dev_fer:.1f}",
                     training_summary(exp), *wer_cells]
        lines.append("| " + " | ".join(cells) + " |")
    for label, runs in numbers.items():
        if len(runs) > 1:
            mean = [sum(column) / len(runs) for column in zip(*runs)]
            cells = [f"{label}, mean", f"{len(runs)} seeds", f"{mean[0]:.3f}", f"{mean[1]:.3f}", f"{mean[2]:.1f}", "",
                     *(f"{w:.2f}" for w in mean[3:])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + comparisons(per_utt, list(dict.fromkeys(labels)), graphs))


def _wers(exp: Path, graphs: list[str]) -> tuple[list[float], list[tuple[float, str]], list[dict[str, ErrorCounts]]]:
    """Per graph: the dev WER, the test WER with the hypothesis file scored, the test errors per utterance."""
    return ([wer(exp / f"decode_dev_{g}" / "wer")[0] for g in graphs],
            [wer(exp / f"decode_test_{g}" / "wer") for g in graphs],
            [_per_utt(exp / f"decode_test_{g}") for g in graphs])


def comparisons(
    per_utt: dict[tuple[str, int], list[dict[str, ErrorCounts]]], labels: list[str], graphs: list[str]
) -> list[str]:
    """Lines of P(B better than A) on test per seed and graph, for each label B and the last label A before it that
    names the same data (the words after the model's name: none then sequence, sequence then sequence+MMI), from
    compute-wer-bootci's paired bootstrap over the test utterances: a WER gap with P below 0.95 is noise."""
    lines = []
    same_data: dict[str, list[str]] = {}
    for label in labels:
        same_data.setdefault(label.partition(" ")[2], []).append(label)
    for a, b in (pair for group in same_data.values() for pair in zip(group, group[1:])):
        seeds = sorted(s for la, s in per_utt if la == a and (b, s) in per_utt)
        runs = []
        for s in seeds:
            boots = [bootstrap_wer([x, y], REPLICATIONS) for x, y in zip(per_utt[a, s], per_utt[b, s])]
            runs.append(f"seed {s}: " + ", ".join(f"{g} {boot.p_improve:.2f}" for g, boot in zip(graphs, boots)))
        if runs:
            lines.append(f"\nP({b} better than {a}) on test (paired bootstrap over {boots[0].utterances} utterances, "
                         f"{REPLICATIONS} replications): " + "; ".join(runs) + ".")
    return lines


def _per_utt(decode_dir: Path) -> dict[str, ErrorCounts]:
    path = decode_dir / "details" / "per_utt"
    if not path.is_file():
        raise AsrBnError(f"{path} is missing (rerun stage 7 after removing {decode_dir}/.done)")
    return read_per_utt(path)


def _read(path: Path, stage: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise AsrBnError(f"cannot read {path}: {e.strerror or e} (run {stage} first)") from e


def main() -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exps", type=Path, nargs="+", help="model dirs of asr-bn train, decoded by stage 7")
    parser.add_argument("--labels", help="comma-separated row names (default: the dir names)")
    parser.add_argument("--graphs", help="comma-separated graph names, in column order (default: all decoded)")
    args = parser.parse_args()
    labels = args.labels.split(",") if args.labels else [e.name for e in args.exps]
    try:
        if len(labels) != len(args.exps):
            raise AsrBnError(f"--labels gives {len(labels)} names for {len(args.exps)} model dirs")
        print(table(args.exps, labels, args.graphs.split(",") if args.graphs else None))
    except AsrBnError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
