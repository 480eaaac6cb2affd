"""One parser of `--device` for every command (train, forward, score, prep, demo): auto, cpu, cuda, cuda:N.

Anything else, or a CUDA device this machine does not have, is one UsageError line; torch is imported only here,
when a device is actually chosen.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from asr_bn.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = "auto, cpu, cuda, cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def is_device_name(name: str) -> bool:
    """Whether `name` is one of DEVICE_NAMES (torch-free: the CLI checks it where it parses --device)."""
    return _DEVICE.fullmatch(name) is not None


def parse_device(name: str, local_rank: int = 0) -> "torch.device":
    """The torch device `--device name` means; `auto` is cuda when a GPU is visible, else cpu, and a bare cuda is
    the GPU of this process's torchrun rank (`local_rank`)."""
    if not is_device_name(name):
        raise UsageError(f"--device {name!r} is not one of {DEVICE_NAMES}")
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(
                f"--device {name}: torch sees no CUDA GPU here (torch {torch.__version__}); use --device cpu"
            )
        index = local_rank if device.index is None else device.index
        if index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
        device = torch.device("cuda", index)
    return device
