"""Speed of the BN-BLSTM stack against the same-shape plain torch.nn.LSTM on packed sequences, in one run.

Paper shapes: input 120, 5 layers and 1 layer × 250 units per direction, batch 24, lengths drawn uniformly in
[T/2, T] with one utterance of T = 1300 frames. Candidates and baseline run interleaved (A B A B …) and the median of
the per-round ratios is printed, so a machine shared with other jobs skews both sides alike. Training rows time
forward + backward of the recurrent stack (output layer excluded, same for both); inference rows time a no-grad
forward in eval mode. A per-time-step Python loop (the usual way BN-LSTMs are written) is timed on shorter
sequences for scale.

    python bench/bnlstm.py                 # full paper shapes (CPU: several minutes)
    python bench/bnlstm.py --quick         # T = 300, 3 rounds
    python bench/bnlstm.py --threads 1     # on a loaded machine: 2 threads spin-wait badly when oversubscribed
    python bench/bnlstm.py --backends loop # CPU: skip the kernel-backend training rows (as slow as nn.LSTM)
Runs on CUDA (cuDNN) when available; --device cpu forces the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from asr_bn.config import ModelConfig
from asr_bn.model import BnBlstm

INPUT, UNITS, BATCH = 120, 250, 24
BASE = "nn.LSTM (packed)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _batch(t_max: int, device: torch.device, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(t_max // 2, t_max + 1, (BATCH,), generator=g)
    lengths[0] = t_max
    x = torch.randn(BATCH, t_max, INPUT, generator=g).to(device)
    return x, lengths


def _train_step(stack: Callable[[PackedSequence], Tensor], x: Tensor, lengths: Tensor) -> Callable[[], None]:
    def step() -> None:
        xr = x.detach().requires_grad_(True)
        packed = pack_padded_sequence(xr, lengths, batch_first=True, enforce_sorted=False)
        stack(packed).sum().backward()

    return step


def _infer_step(stack: Callable[[PackedSequence], Tensor], x: Tensor, lengths: Tensor) -> Callable[[], None]:
    @torch.no_grad()
    def step() -> None:
        stack(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))

    return step


def _lstm(layers: int, device: torch.device) -> Callable[[PackedSequence], Tensor]:
    lstm = nn.LSTM(INPUT, UNITS, num_layers=layers, bidirectional=True).to(device)
    return lambda packed: lstm(packed)[0].data


class NaiveBnLstm(nn.Module):
    """Sequence-wise BN-BLSTM written the usual way: masked BN on the padded batch, then a Python loop over time
    steps with masks for both directions (as PyTorch-Kaldi's LSTM does). For scale only."""

    def __init__(self, layers: int) -> None:
        super().__init__()
        dims = [INPUT] + [2 * UNITS] * (layers - 1)
        self.proj = nn.ModuleList(nn.Linear(d, 4 * UNITS * 2, bias=False) for d in dims)
        self.bn = nn.ModuleList(nn.BatchNorm1d(8 * UNITS) for _ in dims)
        self.rec = nn.ModuleList(nn.Linear(UNITS, 4 * UNITS, bias=False) for _ in range(2 * layers))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        bsz, t_max, _ = x.shape
        mask = (torch.arange(t_max, device=x.device) < lengths.to(x.device).unsqueeze(1)).to(x.dtype)
        for li, (proj, bn) in enumerate(zip(self.proj, self.bn)):
            z = proj(x)
            real = mask.bool()
            zn = torch.zeros_like(z)
            zn[real] = bn(z[real])
            outs = []
            for d in range(2):
                rec = self.rec[2 * li + d]
                zd = zn[..., d * 4 * UNITS : (d + 1) * 4 * UNITS]
                h = c = x.new_zeros(bsz, UNITS)
                hs: list[Tensor] = [h] * t_max
                for t in range(t_max) if d == 0 else range(t_max - 1, -1, -1):
                    m = mask[:, t : t + 1]
                    i, f, g, o = (zd[:, t] + rec(h)).chunk(4, 1)
                    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                    h = m * torch.sigmoid(o) * torch.tanh(c_new) + (1 - m) * h
                    c = m * c_new + (1 - m) * c
                    hs[t] = h
                outs.append(torch.stack(hs, 1))
            x = torch.cat(outs, -1) * mask.unsqueeze(-1)
        return x


def _model(layers: int, bn: str, backend: str, device: torch.device) -> BnBlstm:
    torch.manual_seed(0)
    model = BnBlstm(ModelConfig(INPUT, 10, layers=layers, units=UNITS, bn=bn)).to(device)  # type: ignore[arg-type]
    model.backend = backend  # type: ignore[assignment]
    return model


def _interleaved(
    fns: dict[str, Callable[[], None]], rounds: int, device: torch.device, warmup: bool = True
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    if warmup:
        for fn in fns.values():
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def _report(title: str, times: dict[str, list[float]], base: str) -> None:
    """Median time and median per-round ratio to ``base``; BN rows also against bn=none on the same backend."""
    print(f"\n{title}")
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, times[base])]
        line = f"  {name:<38s} median {statistics.median(ts) * 1e3:10.1f} ms   ratio {statistics.median(ratios):6.3f}×"
        if " backend=" in name and "bn=none" not in name and "bn=" in name:
            plain = "BnBlstm bn=none backend=" + name.split(" backend=")[1]
            if plain in times:
                own = statistics.median(t / b for t, b in zip(ts, times[plain]))
                line += f"   vs bn=none {own:6.3f}×"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T = 300 and 3 rounds")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, quick 3)")
    ap.add_argument("--t-max", type=int, default=None, help="longest utterance (default 1300, quick 300)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--parts", nargs="+", default=["train", "infer"], choices=["train", "infer"],
                    help="which tables to print per layer count")
    ap.add_argument("--naive-t", type=int, default=100, help="longest utterance for the per-step-loop row")
    ap.add_argument("--no-warmup", action="store_true", help="skip the warm-up call (nn.LSTM's CPU backward at "
                    "T = 1300 takes minutes)")
    ap.add_argument("--all", action="store_true", help="also frame-wise BN on torch's kernel on a CPU (slow)")
    ap.add_argument("--backends", nargs="+", default=["kernel", "loop"], choices=["kernel", "loop"],
                    help="recurrence backends of the BnBlstm rows")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t_max = args.t_max or (300 if args.quick else 1300)
    rounds = args.rounds or (3 if args.quick else 5)
    warm = not args.no_warmup
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {BATCH}, T {t_max}, rounds {rounds}")
    x, lengths = _batch(t_max, device)
    print(f"frames {int(lengths.sum())} (lengths {int(lengths.min())}..{int(lengths.max())})")
    for layers in args.layers:
        torch.manual_seed(0)
        base = _lstm(layers, device)
        if "train" in args.parts:
            train = {BASE: _train_step(base, x, lengths)}
            for bn in ("none", "sequence", "frame"):
                for backend in args.backends:
                    if bn == "frame" and backend == "kernel" and device.type == "cpu" and not args.all:
                        continue  # the 0/1-selection GEMM is far too slow on a CPU; --all includes it
                    model = _model(layers, bn, backend, device)
                    train[f"BnBlstm bn={bn} backend={backend}"] = _train_step(model.encode, x, lengths)
            _report(f"{layers} layer(s), training forward+backward", _interleaved(train, rounds, device, warm), BASE)
        if "infer" in args.parts:
            infer = {BASE: _infer_step(base, x, lengths)}
            for backend in args.backends:
                seq = _model(layers, "sequence", backend, device).eval()
                infer[f"BnBlstm fold_bn() backend={backend}"] = _infer_step(seq.fold_bn().eval().encode, x, lengths)
                infer[f"BnBlstm eval backend={backend}"] = _infer_step(seq.encode, x, lengths)
            _report(f"{layers} layer(s), inference forward", _interleaved(infer, rounds, device, warm), BASE)
    if args.naive_t:
        xs, ls = _batch(args.naive_t, device, seed=1)
        naive = NaiveBnLstm(1).to(device)
        fns = {
            BASE: _train_step(_lstm(1, device), xs, ls),
            "BnBlstm bn=sequence": _train_step(_model(1, "sequence", "auto", device).encode, xs, ls),
            "per-step Python loop (naive)": lambda: naive(xs.requires_grad_(True), ls).sum().backward(),
        }
        _report(f"1 layer, T {args.naive_t}, training forward+backward", _interleaved(fns, rounds, device, warm), BASE)


if __name__ == "__main__":
    main()
