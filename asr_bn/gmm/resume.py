"""A rung's state after its last finished pass, kept in its exp dir (`resume.npz`), so that the same command run again
after a crash or a kill continues with the next pass, as Kaldi's train_*.sh --stage N continue from N.mdl.

Everything before the passes (tree, initial model, graphs, first transforms) is deterministic and is computed again;
the state restores what the passes changed: the Gaussians (their bytes), the transition probabilities (every pass's
counts replayed through the same MLE update, so they are the very floats), the alignments, the rung's feature
transforms and the pass records. The state counts only for the same rung, options, tree and utterances (`identity`);
another one is ignored. The file is removed when the rung ends. It holds arrays and one JSON record, no pickle:
loading it runs no code from the exp dir.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from asr_bn.gmm.estimate import TooLittleData
from asr_bn.gmm.system import GmmSystem, read_am
from asr_bn.io import atomic_open
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg
from asr_bn.report import Report

NAME = "resume.npz"


@dataclass
class PassState:
    """What a rung's passes changed, after pass `it`."""

    it: int
    am: bytes
    trans_counts: list[np.ndarray]
    alis: dict[str, list[int]]
    failed: list[str]
    history: list[dict[str, Any]]
    num_gauss: int
    low: TooLittleData
    transforms: dict[str, np.ndarray] = field(default_factory=dict)  # the rung's feature transforms (MLLT, fMLLR)

    def restore(self, system: GmmSystem) -> None:
        """Put the passes' Gaussians and transition probabilities into `system` (as it stood before pass 1)."""
        for counts in self.trans_counts:
            system.trans_model.mle_update(counts, khg.MleTransitionUpdateConfig())
        system.am = read_am(self.am, 0, Path(NAME))


def identity(name: str, config: Mapping[str, Any], system: GmmSystem, utts: Sequence[str]) -> str:
    """A digest of what a rung's passes depend on: the rung, its options, its tree and initial model, its utterances."""
    digest = hashlib.sha256(json.dumps({"rung": name, "config": config}, sort_keys=True, default=str).encode())
    digest.update(system.model_bytes())
    for utt in utts:
        digest.update(utt.encode() + b"\0")
    return digest.hexdigest()


def load(out_dir: Path, key: str) -> PassState | None:
    """The state an earlier run of the same rung (`key` from `identity`) left in `out_dir`, if any."""
    path = out_dir / NAME
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            meta = json.loads(str(arrays["meta"]))
            if meta["key"] != key:
                return None
            values = np.split(arrays["ali_values"], np.cumsum(arrays["ali_lengths"])[:-1])
            low = TooLittleData()
            low.kept, low.removed = meta["low"]["kept"], meta["low"]["removed"]
            low.passes = {int(pdf): n for pdf, n in meta["low"]["passes"].items()}
            return PassState(
                meta["it"], arrays["am"].tobytes(), [arrays[f"trans_counts_{i}"] for i in range(meta["num_counts"])],
                {utt: v.tolist() for utt, v in zip(meta["utts"], values)}, meta["failed"], meta["history"],
                meta["num_gauss"], low, {name: arrays[f"transform_{i}"] for i, name in enumerate(meta["transforms"])},
            )
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None  # not ours, or cut short: the rung starts over


def resumed(out_dir: Path, key: str, system: GmmSystem, report: Report) -> PassState | None:
    """The state an earlier run of the same rung left in `out_dir` (`load`), put back into `system` and said in
    `report`; None to start at the first pass."""
    state = load(out_dir, key)
    if state is not None:
        state.restore(system)
        report.note(f"continued after pass {state.it} of an earlier run of the same rung and options (its {NAME})")
    return state


def save(out_dir: Path, key: str, state: PassState) -> None:
    """Keep `state` (written atomically: a kill while writing leaves the previous one)."""
    utts = list(state.alis)
    low = {"kept": state.low.kept, "removed": state.low.removed, "passes": state.low.passes}
    meta = {"key": key, "it": state.it, "num_counts": len(state.trans_counts), "utts": utts, "failed": state.failed,
            "history": state.history, "num_gauss": state.num_gauss, "low": low, "transforms": list(state.transforms)}
    lengths = [len(state.alis[u]) for u in utts]
    arrays = {"meta": np.array(json.dumps(meta)), "am": np.frombuffer(state.am, np.uint8),
              "ali_values": np.fromiter((t for u in utts for t in state.alis[u]), np.int32, sum(lengths)),
              "ali_lengths": np.array(lengths, np.int64)}
    arrays.update({f"trans_counts_{i}": c for i, c in enumerate(state.trans_counts)})
    arrays.update({f"transform_{i}": state.transforms[name] for i, name in enumerate(state.transforms)})
    with atomic_open(out_dir / NAME, "wb", encoding=None) as f:
        np.savez(f, **arrays)


def clear(out_dir: Path) -> None:
    (out_dir / NAME).unlink(missing_ok=True)
