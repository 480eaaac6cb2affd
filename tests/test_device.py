"""`--device`: one parser (asr_bn.device.parse_device) for train, forward, score and prep; a name torch does not
know, a device type we do not run on, or a GPU this machine lacks is one UsageError line, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from asr_bn.device import parse_device
from asr_bn.errors import UsageError
from asr_bn_cli.main import build_app

app = build_app()


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with cuda:0 and cuda:1, as far as the parser can tell."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("name", ["gpu", "GPU", "cuda:x", "cuda:-1", "", "meta", "mps", "cpu:1", "cpu,cuda", "cuda "])
def test_unknown_devices_are_one_usage_line(name: str) -> None:
    with pytest.raises(UsageError, match=rf"^--device {re.escape(repr(name))} is not one of auto, cpu, cuda, cuda:N$"):
        parse_device(name)


def test_cpu_and_auto_without_a_gpu(no_gpu: None) -> None:
    assert parse_device("cpu") == torch.device("cpu") and parse_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(UsageError, match=rf"--device {name}: torch sees no CUDA GPU here .*use --device cpu"):
            parse_device(name)


def test_cuda_picks_the_rank_gpu_and_checks_the_index(two_gpus: None) -> None:
    assert parse_device("auto") == torch.device("cuda", 0)
    assert parse_device("cuda", local_rank=1) == torch.device("cuda", 1)  # torchrun's rank 1 on its own GPU
    assert parse_device("cuda:0", local_rank=1) == torch.device("cuda", 0)  # an explicit index wins
    with pytest.raises(UsageError, match=r"--device cuda:2: this machine has 2 CUDA GPU\(s\), cuda:0\.\.cuda:1"):
        parse_device("cuda:2")


@pytest.mark.parametrize("command", ["train", "forward", "score frames"])
def test_commands_print_one_line_for_a_bad_device(command: str, tmp_path: Path) -> None:
    """The same line from every command (train's helper and forward's had drifted apart: `train --device gpu`
    printed a traceback box); the CLI checks the name with asr_bn.device's rule where it parses the option."""
    from test_batching import make_prepared_dir
    from test_train import error_line

    data = make_prepared_dir(tmp_path / "data", [12, 15, 20, 9], seed=1)
    if command == "train":
        args = ["train", data, data, tmp_path / "exp", "--units", "4", "--batch-size", "2", "--num-workers", "0"]
    else:
        model = tmp_path / "model"  # the device is chosen before the model is read
        args = [*command.split(), model, data] + (["ark:" + str(tmp_path / "x.ark")] if command == "forward" else [])
    result = CliRunner().invoke(app, [*map(str, args), "--device", "gpu"])
    assert result.exit_code == 2 and "'gpu' is not one of auto, cpu, cuda, cuda:N" in error_line(result.output)
