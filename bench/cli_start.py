"""Start-up of the CLI: `asr-bn --help`, each command's --help and a usage error, against `python -c "import typer,
rich"` (the floor of any Typer + rich CLI), as whole processes, interleaved, median of several runs.

    python bench/cli_start.py            # 7 runs each
    python bench/cli_start.py --runs 15

Prints each case's median seconds and its ratio to the floor (the target: at most 3x; no torch, numpy or Kaldi
extension is imported by help or a usage error, which tests/test_cli_root.py checks).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CLI = [sys.executable, "-m", "asr_bn_cli"]
CASES = {
    "python -c 'import typer, rich'": [sys.executable, "-c", "import typer, rich"],
    "asr-bn --help": [*CLI, "--help"],
    "asr-bn train --help": [*CLI, "train", "--help"],
    "asr-bn prep kaldi --help": [*CLI, "prep", "kaldi", "--help"],
    "asr-bn decode --help": [*CLI, "decode", "--help"],
    "asr-bn train a b c --clip-norm -1 (usage error)": [*CLI, "train", "a", "b", "c", "--clip-norm", "-1"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(args.runs):  # interleaved: machine load hits every case alike
        for name, cmd in CASES.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            times[name].append(time.perf_counter() - t0)
    floor = statistics.median(times[next(iter(CASES))])
    print(f"median of {args.runs} runs; ratio to the floor (target <= 3x)")
    for name, ts in times.items():
        median = statistics.median(ts)
        print(f"{name:52s} {median:6.3f} s  {median / floor:4.1f}x")


if __name__ == "__main__":
    main()
