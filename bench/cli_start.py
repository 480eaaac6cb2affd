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
import sys

from _proc import timed

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
    for cmd in CASES.values():  # warm-up: writes asr-bn's bytecode cache, untimed
        timed(cmd, check=False)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for _ in range(args.runs):  # interleaved: machine load hits every case alike
        for name, cmd in CASES.items():
            times[name].append(timed(cmd, check=False))
    floor = [statistics.median(t[i] for t in times[next(iter(CASES))]) for i in (0, 1)]
    print(f"median of {args.runs} runs; ratio to the floor (target <= 3x), wall and CPU (user + system)")
    for name, ts in times.items():
        wall, cpu = (statistics.median(t[i] for t in ts) for i in (0, 1))
        print(f"{name:52s} wall {wall:6.3f} s {wall / floor[0]:4.1f}x   CPU {cpu:6.3f} s {cpu / floor[1]:4.1f}x")


if __name__ == "__main__":
    main()
