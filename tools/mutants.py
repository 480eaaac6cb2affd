"""Single-line mutation testing of the core modules: does a test fail when one operator or constant changes?

Each mutant changes one token on one line of a function that matters (the FUNCTIONS below): a comparison flipped
(< <=, == !=), an integer constant off by one, a boolean or `and`/`or` swapped, an arithmetic operator swapped
(+ -, * /), a `not` dropped. Mutants are sampled with a printed, replayable seed; each runs only its module's test
file (`pytest -x -q`, with a timeout; mkgraph's graph building, once part of decode, runs test_graphs and
test_decode) in a copy of the committed tree (git archive HEAD), so the work tree is never
touched. A mutant survives when that file still passes: each survivor is killed by a new test or explained in
docs/RELIABILITY.md ("Mutation testing").

    python tools/mutants.py                         # all modules, 12 mutants each, seed 0
    python tools/mutants.py --modules batching --per-module 40 --seed 3
    python tools/mutants.py --only score:112:22     # replay one mutant (module:line:column)
    python tools/mutants.py --list                  # print the sampled mutants without running them
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The functions whose every line decides a result (numbers, indices, bounds); helpers that only format messages
# or wire the CLI are left out. Methods are Class.method.
FUNCTIONS: dict[str, set[str]] = {
    "features": {
        "num_frames", "_first_sample", "_window_np", "_utterance_frames", "_fbank_block",
        "FeaturePipeline.output_dim",
        "FeaturePipeline.transform", "FeaturePipeline._stats_for",
    },
    "mel": {"mel_scale", "inverse_mel_scale", "vtln_warp_freq", "mel_banks"},
    "cmvn": {"delta_scales", "add_deltas", "compute_cmvn_stats", "_cmvn_offset_scale", "apply_cmvn"},
    "batching": {
        "BucketingSampler.__init__", "BucketingSampler.set_epoch", "BucketingSampler.global_batches",
        "BucketingSampler.batch_num_frames", "BucketingSampler.__len__", "BucketingSampler.__iter__",
        "BucketingSampler.state_dict", "BucketingSampler.load_state_dict", "BucketingSampler._make_batches",
        "BucketingSampler._cut", "padding_waste", "Batch.num_frames", "Batch.padded_frames",
        "UtteranceDataset._check_targets", "UtteranceDataset._load", "UtteranceDataset.__getitems__",
        "read_targets", "filter_by_length",
    },
    "score": {
        "FrameScores.ce", "FrameScores.fer", "FrameScores.__add__", "frame_scores", "ErrorCounts.errors",
        "ErrorCounts.wer", "ErrorCounts.ser", "ErrorCounts.__add__", "UttAlignment.ops", "align_words", "read_text",
        "score_wer", "score_hyps", "_percent",
    },
    "alignments/transition_model": {
        "Topology.__post_init__", "Topology.entry", "Topology.is_hmm", "TransitionModel.__init__",
        "TransitionModel._checked", "TransitionModel.phone_segments", "is_reordered", "_read_topology",
        "read_transition_model",
    },
    "alignments/archives": {"_parse_int_archive", "_binary_int_vector", "_text_ints"},
    "alignments/targets": {"join_targets", "check_num_pdfs", "_pdf_bound"},
    "alignments/priors": {"count_pdfs", "log_priors", "transition_id_scores"},
    "kaldi_binary": {
        "KaldiReader.int32", "KaldiReader.float32", "KaldiReader.count", "KaldiReader.int_vector",
        "KaldiReader.float_vector",
    },
    "decode": {"_best_path", "decode_matrix", "_rspecifier", "_count_scp", "_hypotheses", "_check_shape"},
    "mkgraph": {"_hmm_objects", "_lexicon_disambig_fst", "_scored_words", "_grammar_fst", "_make_hclg"},
}  # fmt: skip

# The test files of a module, when not tests/test_MODULE.py alone.
TESTS: dict[str, tuple[str, ...]] = {"mkgraph": ("tests/test_graphs.py", "tests/test_decode.py"),
                                     "mel": ("tests/test_features.py",), "cmvn": ("tests/test_features.py",),
                                     **{m: ("tests/test_alignments.py",) for m in FUNCTIONS
                                        if m.startswith("alignments/") or m == "kaldi_binary"}}

SWAPS = {
    "<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "==", "+": "-", "-": "+", "*": "/", "/": "*",
    "//": "/", "+=": "-=", "-=": "+=", "and": "or", "or": "and", "True": "False", "False": "True",
}  # fmt: skip
_NOT_BINARY = {"(", "[", "{", ",", ":", "=", "return", "lambda", "**", "*", "in", "yield", "else"}  # * after these unpacks


@dataclass
class Mutant:
    module: str
    line: int
    col: int
    old: str
    new: str
    function: str
    outcome: str = ""  # killed / survived / timeout
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.module}:{self.line}:{self.col}"

    def apply(self, source: str) -> str:
        lines = source.splitlines(keepends=True)
        text = lines[self.line - 1]
        assert text[self.col : self.col + len(self.old)] == self.old, (self.key, text)
        lines[self.line - 1] = text[: self.col] + self.new + text[self.col + len(self.old) :]
        return "".join(lines)


def _function_lines(source: str, wanted: set[str]) -> dict[int, str]:
    """Line → qualified function name, for the body lines (docstring excluded) of the wanted functions."""
    out: dict[int, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                if name in wanted:
                    body = child.body
                    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                        body = body[1:]  # the docstring
                    for stmt in body:
                        for line in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1):
                            out[line] = name

    visit(ast.parse(source), "")
    missing = wanted - set(out.values())
    if missing:  # renamed or moved: keep FUNCTIONS in step with the code
        raise SystemExit(f"tools/mutants.py: no function {sorted(missing)} in this module; update FUNCTIONS")
    return out


def candidates(module: str, source: str) -> list[Mutant]:
    """Every single-token mutation on the body lines of the module's FUNCTIONS."""
    where = _function_lines(source, FUNCTIONS[module])
    out, prev = [], ""
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        line, col = tok.start
        if tok.type in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
            prev = "" if tok.type == tokenize.NEWLINE else prev
            continue
        name = where.get(line)
        text = tok.string
        if name is not None:
            if tok.type in (tokenize.OP, tokenize.NAME) and text in SWAPS:
                if not (text in ("*", "-", "+") and prev in _NOT_BINARY | {""}):  # unpacking and unary signs stay
                    out.append(Mutant(module, line, col, text, SWAPS[text], name))
            elif tok.type == tokenize.NAME and text == "not" and prev != "is":
                out.append(Mutant(module, line, col, "not ", "", name))
            elif tok.type == tokenize.NUMBER and text.isdigit():
                out.append(Mutant(module, line, col, text, str(int(text) + 1), name))
        prev = text
    return out


def _test_files(module: str) -> tuple[str, ...]:
    return TESTS.get(module, (f"tests/test_{module}.py",))


def _run_tests(tree: Path, module: str, timeout: float) -> tuple[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tree)}
    t0 = time.monotonic()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *_test_files(module)],
            cwd=tree, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0
    outcome = "survived" if run.returncode == 0 else "killed"
    if run.returncode not in (0, 1):  # 1 = a test failed; anything else (collection error, crash) also kills it
        outcome = f"killed (pytest exit {run.returncode})"
    return outcome, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modules", nargs="+", default=list(FUNCTIONS), choices=list(FUNCTIONS))
    ap.add_argument("--per-module", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="+", default=None, help="module:line:column of the mutants to run")
    ap.add_argument("--list", action="store_true", help="print the sampled mutants, run nothing")
    ap.add_argument("--json", type=Path, default=None, help="write every mutant and its outcome here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # kill: the running pytest and the copy are cleaned up

    rng = random.Random(args.seed)
    chosen: list[Mutant] = []
    for module in args.modules:
        pool = candidates(module, (ROOT / "asr_bn" / f"{module}.py").read_text())
        if args.only is not None:
            chosen += [m for m in pool if m.key in args.only]
        else:
            chosen += sorted(rng.sample(pool, min(args.per_module, len(pool))), key=lambda m: (m.line, m.col))
        print(f"{module}: {len(pool)} candidate mutants", flush=True)
    print(f"seed {args.seed}, {len(chosen)} mutants", flush=True)
    if args.list:
        for m in chosen:
            print(f"{m.key:<22} {m.function:<36} {m.old.strip()!r} -> {m.new.strip()!r}")
        return

    with tempfile.TemporaryDirectory(prefix="asr-bn-mutants-") as tmp:
        tree = Path(tmp) / "repo"
        tree.mkdir()
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        (Path(tmp) / "shared").symlink_to((ROOT.parent / "shared").resolve())  # tests find ../shared
        baseline: dict[str, float] = {}
        for m in chosen:
            path = tree / "asr_bn" / f"{m.module}.py"
            original = path.read_text()
            if m.module not in baseline:
                outcome, seconds = _run_tests(tree, m.module, timeout=900)
                if outcome != "survived":
                    sys.exit(f"{' '.join(_test_files(m.module))} fail on the unmutated tree ({outcome}); fix that first")
                baseline[m.module] = seconds
                print(f"baseline {' '.join(_test_files(m.module))}: {seconds:.0f} s", flush=True)
            path.write_text(m.apply(original))
            try:
                m.outcome, m.seconds = _run_tests(tree, m.module, timeout=3 * baseline[m.module] + 30)
            finally:
                path.write_text(original)
            print(f"{m.outcome:<9} {m.key:<22} {m.function:<36} {m.old.strip()!r} -> {m.new.strip()!r}", flush=True)
    survivors = [m for m in chosen if m.outcome == "survived"]
    print(f"{len(chosen) - len(survivors)} of {len(chosen)} killed; survivors: {[m.key for m in survivors]}")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(m) for m in chosen], indent=1) + "\n")


if __name__ == "__main__":
    main()
