"""CPU time of one training update of the full demo's models under each choice of torch's CPU kernels, side by side.

Each setting runs in its own process (torch reads ATEN_CPU_CAPABILITY and MKL_CBWR before its first op): the
demo's 2 x 128 BLSTM (baseline and sequence BN), 16 utterances x 170 frames of 120 features, forward, backward and
an SGD step on one thread; the mean process CPU time of N updates after one warm-up, and its ratio to the first
setting (the kernels torch picks by itself). The pin of `asr-bn demo` is asr_bn.demo.CPU_KERNELS.

    python bench/cpu_kernels.py
    python bench/cpu_kernels.py --updates 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = {
    "torch's own choice": {},
    "the demo's pin": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"},
    "MKL_CBWR=COMPATIBLE": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"},
}


def measure(updates: int) -> dict[str, float]:
    """Seconds of CPU per update, per BN mode, in this process."""
    import torch

    from asr_bn.config import ModelConfig
    from asr_bn.model import BnBlstm

    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = {}
    for bn in ("none", "sequence"):
        model = BnBlstm(ModelConfig(input_dim=120, num_pdfs=122, layers=2, units=128, bn=bn))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, lengths = torch.randn(16, 170, 120), torch.full((16,), 170)
        y = torch.randint(0, 122, (16, 170))

        def step() -> None:
            loss = torch.nn.functional.cross_entropy(model(x, lengths).reshape(-1, 122), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        start = time.process_time()
        for _ in range(updates):
            step()
        out[bn] = (time.process_time() - start) / updates
    out["kernels"] = torch.backends.cpu.get_cpu_capability()
    return out


def main() -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=5, help="timed updates per model")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.updates)))
        return
    base = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    first = None
    print(f"{'setting':<22} {'ATen':>7} {'baseline s':>11} {'BN s':>7} {'ratio':>6}")
    for name, env in SETTINGS.items():
        run = subprocess.run([sys.executable, __file__, "--child", "--updates", str(args.updates)],
                             env={**base, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True, check=True)
        r = json.loads(run.stdout)
        total = r["none"] + r["sequence"]
        first = first or total
        print(f"{name:<22} {r['kernels']:>7} {r['none']:>11.3f} {r['sequence']:>7.3f} {total / first:>6.2f}")


if __name__ == "__main__":
    main()
