"""Learning curves: the rows of a run's metrics.jsonl, and train/dev CE and FER of several runs on one PNG."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from asr_bn.errors import AsrBnError
from asr_bn.io import atomic_path, check_output_file


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of RUN_DIR/metrics.jsonl (a torn last line from a killed run is ignored)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise AsrBnError(f"{path} is missing: {run_dir} is not an `asr-bn train` directory")
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():  # bad bytes: a bad line, skipped
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows


def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """Train (dashed) and dev (solid) frame CE and FER against updates, one colour per run, on one PNG — the
    paper's learning-curve figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = check_output_file(out, "--out")
    labels = labels or [Path(d).name for d in run_dirs]
    fig, (ax_ce, ax_fer) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (run_dir, label) in enumerate(zip(run_dirs, labels)):
        rows = read_metrics(run_dir)
        if not rows:
            raise AsrBnError(f"{Path(run_dir) / 'metrics.jsonl'} holds no metrics rows (a run stopped before its first "
                             "--log-every updates, or not a metrics file); train further or leave it out")
        color = f"C{i}"
        for kind, style in (("train", "--"), ("dev", "-")):
            pts = [r for r in rows if r.get("kind") == kind]
            if pts:
                x = [r["update"] for r in pts]
                ax_ce.plot(x, [r["ce"] for r in pts], style, color=color, label=f"{label} {kind}")
                ax_fer.plot(x, [100 * r["fer"] for r in pts], style, color=color, label=f"{label} {kind}")
    for ax, name in ((ax_ce, "frame cross-entropy (nats)"), (ax_fer, "frame error rate (%)")):
        ax.set_xlabel("updates")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    ax_ce.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out
