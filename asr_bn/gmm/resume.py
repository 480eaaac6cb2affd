"""A rung's state after its last finished pass, kept in its exp dir (`resume.pkl`), so that the same command run again
after a crash or a kill continues with the next pass, as Kaldi's train_*.sh --stage N continue from N.mdl.

Everything before the passes (tree, initial model, graphs, first transforms) is deterministic and is computed again;
the state restores what the passes changed: the Gaussians (their bytes), the transition probabilities (every pass's
counts replayed through the same MLE update, so they are the very floats), the alignments, the rung's feature
transforms and the pass records. The state counts only for the same rung, options, tree and utterances (`identity`);
another one is ignored. The file is removed when the rung ends.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from asr_bn.gmm.estimate import TooLittleData
from asr_bn.gmm.system import GmmSystem, read_am
from asr_bn.io import atomic_open
from asr_bn.kaldi_ext import kaldi_hmm_gmm as khg
from asr_bn.report import Report

NAME = "resume.pkl"


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
        with path.open("rb") as f:
            saved_key, state = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError):
        return None  # not ours, or cut short: the rung starts over
    return state if saved_key == key and isinstance(state, PassState) else None


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
    with atomic_open(out_dir / NAME, "wb", encoding=None) as f:
        pickle.dump((key, state), f, protocol=pickle.HIGHEST_PROTOCOL)


def clear(out_dir: Path) -> None:
    (out_dir / NAME).unlink(missing_ok=True)
