"""One parser of `--device` for every command (train, forward, score, prep, demo): auto, cpu, cuda, cuda:N.

Anything else, or a CUDA device this machine does not have, is one UsageError line; torch is imported only here,
when a device is actually chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from asr_bn.errors import UsageError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def parse_device(name: str, local_rank: int = 0) -> "torch.device":
    """The torch device `--device name` means; `auto` is cuda when a GPU is visible, else cpu, and a bare cuda is
    the GPU of this process's torchrun rank (`local_rank`)."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise UsageError(f"--device {name!r}: use {DEVICE_CHOICES}")
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
