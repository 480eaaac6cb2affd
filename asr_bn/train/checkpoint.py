"""Training runs on disk: checkpoint.pt (everything to continue bitwise, RNG states included) and final.pt (a
model), read back with one-line errors for anything damaged or foreign, written atomically."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_bn.config import ModelConfig
from asr_bn.errors import AsrBnError
from asr_bn.io import atomic_path, error_detail
from asr_bn.model import BnBlstm

_ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of every file torch.save writes
_UNPICKLER = "WeightsUnpickler error:"
CHECKPOINT_FORMAT = "asr-bn checkpoint"
MODEL_FORMAT = "asr-bn model"
MODELS = "models"  # EXP_DIR/models/update-N.pt: each evaluation's model, with --keep-models
_MODEL_KEYS = ("version", "model", "model_config", "pipeline", "priors", "train_config")
_KEYS = {
    MODEL_FORMAT: (*_MODEL_KEYS, "update", "epoch", "dev_ce", "dev_fer"),
    CHECKPOINT_FORMAT: (*_MODEL_KEYS, "optimizer", "scaler", "state", "sampler", "rng"),
}


def load_checkpoint(path: str | Path, expect: str = CHECKPOINT_FORMAT) -> dict[str, Any]:
    """Read a checkpoint.pt / final.pt written by `train`; anything else (truncated, corrupt, foreign) is a
    one-line AsrBnError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except FileNotFoundError as e:
        raise AsrBnError(f"{path} does not exist (train a model first, or drop --resume)") from e
    except OSError as e:
        raise AsrBnError(f"cannot read {path}: {e.strerror or e}") from e
    if magic != _ZIP_MAGIC:  # torch.save writes zip files; a JSON, text or empty file is no checkpoint at all
        raise AsrBnError(
            f"{path} is not an asr-bn model or checkpoint (not a PyTorch zip file); give a model dir of "
            "`asr-bn train` or its final.pt (a damaged checkpoint.pt: delete it or train again)"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files (pickle, zip, EOF, runtime)
        text = str(e)  # weights_only failures: a paragraph of advice, then what was found after this marker
        found = text.split(_UNPICKLER)[-1].strip().splitlines()[0].split(". ")[0] if _UNPICKLER in text else ""
        detail = found or error_detail(e, 160)
        raise AsrBnError(f"{path} is corrupt or not an asr-bn file ({detail}); delete it or train again") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != expect:
        raise AsrBnError(f"{path} is not an {expect} file; delete it or train again")
    missing = [k for k in _KEYS[expect] if k not in ckpt]
    if missing:
        version = ckpt.get("version", "?")
        raise AsrBnError(f"{path} lacks {', '.join(missing)} (written by asr-bn {version}); train again")
    return ckpt


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model of a final.pt (or checkpoint.pt), in eval mode, and the file's contents (model_config,
    pipeline, priors, dev scores)."""
    path = Path(path)
    try:
        ckpt = load_checkpoint(path, MODEL_FORMAT)
    except AsrBnError:
        ckpt = load_checkpoint(path, CHECKPOINT_FORMAT)
    model = BnBlstm(saved_model_config(ckpt, path))
    load_state(model, ckpt["model"], path)
    return model.eval(), ckpt


def saved_model_config(ckpt: dict[str, Any], path: Path) -> ModelConfig:
    try:
        return ModelConfig.from_dict(ckpt["model_config"])
    except (ValueError, TypeError, KeyError) as e:
        raise AsrBnError(f"{path} holds an invalid model config ({e}); delete it or train again") from e


def load_state(module: torch.nn.Module | torch.optim.Optimizer, state: dict, path: Path) -> None:
    """load_state_dict that turns a mismatch into one line, never a partial load (strict for modules)."""
    try:
        if isinstance(module, torch.nn.Module):
            module.load_state_dict(state, strict=True)
        else:
            module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as e:
        raise AsrBnError(
            f"{path} does not fit this model ({error_detail(e, 200)}); it was written for another model shape: delete "
            "it or train again"
        ) from e


def rng_state() -> dict[str, Any]:
    """Every RNG training touches (python, numpy, torch, cuda), in a form torch.load(weights_only=True) reads."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(path: Path, obj: dict[str, Any]) -> None:
    """torch.save to a temporary name, fsync, rename: `path` is always a whole file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
