#!/usr/bin/env python3
"""Stage 5 of the WSJ recipe: the paper's table (Laurent et al. 2016, Table 1) as OUT_DIR/report.md.

    python local/report.py OUT_DIR --models "blstm blstm_bn_sequence" --train-set train_si284 \
        --dev-set test_dev93 --test-sets "test_dev93 test_eval92" --graph exp/tri4b/graph_tgpr

Reads  OUT_DIR/exp/<model>/config.json and metrics.jsonl (asr-bn train), frames_<set> (asr-bn score frames output,
       train and dev sets), decode_<graph>_<set>/wer (asr-bn score wer) and decode_<graph>_<set>_kaldi/
       scoring_kaldi/best_wer (Kaldi's steps/score_kaldi.sh), their per-utterance errors (wer_details/per_utt and
       scoring_kaldi/wer_details/per_utt) and OUT_DIR/prep/<set>/utt2num_frames.
Writes OUT_DIR/report.md: frame cross-entropy and frame error rate of each model's best checkpoint (by dev CE) on
       the training and dev sets, where it was reached, the WERs of each decoder with the 95 % intervals of
       compute-wer-bootci's bootstrap and P(model better than blstm), and the training setting.
A missing score is an error naming the file and the stage that makes it; a missing decode is shown as "–".
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from asr_bn.errors import AsrBnError
from asr_bn.io import read_table, write_text
from asr_bn.score import bootstrap_wer, read_per_utt
from asr_bn.train import read_metrics

_WER = re.compile(r"%WER\s+([0-9.]+)\s+\[\s*(\d+)\s*/\s*(\d+)")
_CE = re.compile(r"\bCE\s+([0-9.]+|nan|inf)", re.IGNORECASE)
_FER = re.compile(r"\bFER\s+([0-9.]+)\s*%", re.IGNORECASE)
# (suffix of the decode dir, file holding its %WER lines, column name, per-utterance errors of the best LM weight)
_DECODERS = (
    ("", "wer", "asr-bn decode", "wer_details/per_utt"),
    ("_kaldi", "scoring_kaldi/best_wer", "Kaldi latgen", "scoring_kaldi/wer_details/per_utt"),
)
REPLICATIONS = 10000  # compute-wer-bootci's default


def frame_scores(path: Path) -> tuple[float, float]:
    """(CE in nats, FER in %) from the saved output of `asr-bn score frames`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise AsrBnError(f"{path} is missing: run stage 5 (asr-bn score frames) again") from e
    ce, fer = _CE.search(text), _FER.search(text)
    if ce is None or fer is None:
        raise AsrBnError(f"{path}: no 'CE … FER …%' line (not asr-bn score frames output?); remove it and rerun stage 5")
    return float(ce.group(1)), float(fer.group(1))


def best_wer(path: Path) -> float | None:
    """The lowest %WER of a Kaldi-format score file (one line per LM weight, or Kaldi's best_wer), or None."""
    if not path.is_file():
        return None
    wers = [float(m.group(1)) for m in _WER.finditer(path.read_text(encoding="utf-8"))]
    return min(wers) if wers else None


def best_dev(run_dir: Path) -> tuple[int, int]:
    """(update, epoch) of the lowest dev CE in metrics.jsonl: where final.pt was saved."""
    dev = [r for r in read_metrics(run_dir) if r.get("kind") == "dev"]
    if not dev:
        raise AsrBnError(f"{run_dir / 'metrics.jsonl'} has no dev evaluation; the training run did not get far")
    row = min(dev, key=lambda r: r["ce"])
    return row["update"], row["epoch"]


def set_size(prep_dir: Path) -> str:
    """'N utterances, H h' of a prepared dir (10 ms frames)."""
    path = prep_dir / "utt2num_frames"
    if not path.is_file():
        return "not prepared"
    frames = [int(row.rest) for row in read_table(path, "re-run stage 2 (prep)").values()]
    return f"{len(frames)} utterances, {sum(frames) / 360000:.2f} h"


def report(out: Path, models: list[str], train_set: str, dev_set: str, test_sets: list[str], graph: str) -> str:
    """The markdown of report.md."""
    exp = out / "exp"
    graph_name = Path(graph).name.removeprefix("graph_")
    wer_columns = []  # (set, suffix, file, name) of the decodes that exist for some model
    for name in test_sets:
        for suffix, file, decoder, details in _DECODERS:
            short = name.removeprefix("test_")
            if any((exp / m / f"decode_{graph_name}_{short}{suffix}" / file).is_file() for m in models):
                wer_columns.append((short, suffix, file, f"WER {short} ({decoder})", details))
    head = ["model", "BN", "train CE", "train FER", "dev CE", "dev FER", "best at update (epoch)"]
    head += [c[3] for c in wer_columns]
    rows, dev_ce = [], {}
    for model in models:
        run = exp / model
        config = json.loads((run / "config.json").read_text(encoding="utf-8"))
        train_ce, train_fer = frame_scores(run / f"frames_{train_set}")
        ce, fer = frame_scores(run / f"frames_{dev_set}")
        dev_ce[model] = ce
        update, epoch = best_dev(run)
        wers = [
            best_wer(run / f"decode_{graph_name}_{short}{suffix}" / file) for short, suffix, file, *_ in wer_columns
        ]
        rows.append(
            [model, config["bn"], f"{train_ce:.3f}", f"{train_fer:.2f} %", f"{ce:.3f}", f"{fer:.2f} %",
             f"{update} ({epoch})"] + ["–" if w is None else f"{w:.2f} %" for w in wers]
        )  # fmt: skip
    cfg = json.loads((exp / models[0] / "config.json").read_text(encoding="utf-8"))
    lines = [
        "# WSJ: BLSTM acoustic models without and with batch normalization",
        "",
        "The table of Laurent et al. (ICASSP 2016, Table 1): frame cross-entropy (CE, nats per frame) and frame",
        f"error rate (FER) of each model's best checkpoint (lowest dev CE) on the training set ({train_set}) and the",
        f"dev set ({dev_set}), scored by `asr-bn score frames` against Kaldi's tri4b alignments; then word error",
        f"rates with the graph {graph} (best over the LM-weight sweep).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    if "blstm" in dev_ce:
        for model in models:
            if model != "blstm":
                change = 100 * (dev_ce[model] - dev_ce["blstm"]) / dev_ce["blstm"]
                lines.append(f"- {model} vs blstm: dev CE {dev_ce['blstm']:.3f} → {dev_ce[model]:.3f} ({change:+.1f} %)")
    lines += wer_noise(exp, models, [(f"decode_{graph_name}_{c[0]}{c[1]}", c[4], c[3]) for c in wer_columns])
    lines += [
        f"- Setting (config.json): {cfg['layers']} x {cfg['units']} BLSTM, {cfg['optimizer']} lr {cfg['lr']:g}"
        + (f" momentum {cfg['momentum']:g}" if cfg["optimizer"] == "sgd" else "")
        + f", {cfg['schedule']} schedule, batch {cfg['batch_size'] or str(cfg['max_frames']) + ' frames'}, training"
        f" utterances <= {cfg['max_train_frames'] or 'any'} frames, at most {cfg['epochs']} epochs, seed {cfg['seed']}.",
        f"- Data: {train_set} {set_size(out / 'prep' / train_set)}; {dev_set} {set_size(out / 'prep' / dev_set)}.",
        "- Learning curves (train dashed, dev solid): learning_curves.png.",
        "",
    ]
    return "\n".join(lines)


def wer_noise(exp: Path, models: list[str], columns: list[tuple[str, str, str]]) -> list[str]:
    """One line per WER column (decode dir name, per_utt file in it, column name) whose per-utterance errors exist:
    each model's 95 % interval and P(model better than blstm), compute-wer-bootci's bootstrap over utterances."""
    lines = []
    for decode, details, name in columns:
        errors = {m: read_per_utt(p) for m in models if (p := exp / m / decode / details).is_file()}
        if not errors:
            continue
        spans = ", ".join(f"{m} {bootstrap_wer([e], REPLICATIONS).intervals[0].span(2)}" for m, e in errors.items())
        odds = [f"P({m} better than blstm) = {bootstrap_wer([errors['blstm'], e], REPLICATIONS).p_improve:.2f}"
                for m, e in errors.items() if m != "blstm" and "blstm" in errors]  # fmt: skip
        n = len(next(iter(errors.values())))
        lines.append(f"- {name}, 95 % intervals (compute-wer-bootci's bootstrap over {n} utterances, {REPLICATIONS} "
                     f"replications): {spans}" + (f"; {'; '.join(odds)}" if odds else "") + ".")
    return lines


def main() -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the recipe's OUT_DIR")
    parser.add_argument("--models", required=True, help="space-separated model dirs under OUT_DIR/exp")
    parser.add_argument("--train-set", required=True)
    parser.add_argument("--dev-set", required=True)
    parser.add_argument("--test-sets", required=True, help="space-separated decoded sets")
    parser.add_argument("--graph", required=True, help="the graph dir of the decodes, e.g. exp/tri4b/graph_tgpr")
    args = parser.parse_args()
    try:
        text = report(args.out, args.models.split(), args.train_set, args.dev_set, args.test_sets.split(), args.graph)
        write_text(args.out / "report.md", text)
    except AsrBnError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(text)


if __name__ == "__main__":
    main()
