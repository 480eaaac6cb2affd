"""`asr-bn demo --small`: the whole pipeline end to end through the CLI; a rerun reuses every finished stage and
prints the same table; a model trained again from scratch with the same seed gives the same numbers; an
interrupted training run or another seed for the same output dir stops with one error line. The printed
conclusion claims a WER difference only where the bootstrap finds it (unit tests on fixed numbers)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asr_bn.demo import ModelResult, conclusions
from asr_bn.score import Bootstrap, WerInterval
from asr_bn.train import TrainState
from asr_bn_cli.main import build_app

app = build_app()

ROW = re.compile(r"^\s*│\s*(baseline|bn-sequence)\s*│(.*)$")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["demo", *map(str, args)])
    return result.exit_code, result.output


def table_rows(output: str) -> dict[str, list[str]]:
    """model → its table cells (train CE, dev CE, dev FER, dev WER, test WER)."""
    rows = {}
    for line in output.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("│") if c.strip()]
    return rows


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    code, output = run("--small", "--out", out, "--seed", "0")
    assert code == 0, output
    return out, output


def test_table_curves_and_results(first: tuple[Path, str]) -> None:
    out, output = first
    rows = table_rows(output)
    assert set(rows) == {"baseline", "bn-sequence"}, output
    assert all(len(cells) == 5 for cells in rows.values()), rows
    png = out / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in results["models"]] == ["baseline", "bn-sequence"]
    for m in results["models"]:
        # chance is about 100 % WER (a word loop of ~45 words); the tiny models get well under it
        assert m["test_wer"] < 60.0, m
        assert m["dev_fer"] < 0.6 and m["train_ce"] < m["dev_ce"] + 0.5, m
        assert rows[m["name"]][4].startswith(f"{m['test_wer']:.1f} (")
    for split in ("dev", "test"):  # Set1 the baseline, Set2 BN: an interval around each WER, P(BN better)
        boot = results["wer_bootstrap"][split]
        assert boot["utterances"] == 12 and 0 <= boot["p_improve"] <= 1 - boot["p_worse"]
        for model, interval in zip(results["models"], boot["intervals"]):
            assert interval["low"] <= model[f"{split}_wer"] <= interval["high"], (split, model, interval)
    conclusion = output[output.index("conclusion:"):].splitlines()[1:4]
    assert conclusion == [f"  {line}" for line in results["conclusions"]], output
    assert conclusion[2].startswith("  test WER: ") and "P(BN better) = " in conclusion[2]
    assert results["cpu_kernels"] in output and "torch" in results["cpu_kernels"]
    for name in ("baseline", "bn-sequence"):
        exp = out / "exp" / name
        assert (exp / "final.pt").is_file() and (exp / "decode_test" / "text").is_file()


def test_rerun_reuses_every_stage_and_prints_the_same_table(first: tuple[Path, str]) -> None:
    out, output = first
    code, again = run("--small", "--out", out, "--seed", "0")
    assert code == 0, again
    assert table_rows(again) == table_rows(output)
    reused = json.loads((out / "results.json").read_text())["reused"]
    assert {"synth", "prep train", "train baseline", "train bn-sequence", "mkgraph"} <= set(reused), reused


def test_training_stopped_by_a_signal_stops_the_demo(
    first: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _ = first
    shutil.rmtree(out / "exp" / "baseline")
    # asr_bn.train.train returns early (checkpoint saved) on SIGINT/SIGTERM; the demo must not go on
    monkeypatch.setattr("asr_bn.train.train", lambda cfg, resume=False: (cfg, TrainState(update=3)))
    code, output = run("--small", "--out", out, "--seed", "0")
    assert code == 1
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: ") and "stopped by a signal at update 3" in last and "again" in last


def test_retraining_with_the_same_seed_gives_the_same_numbers(first: tuple[Path, str]) -> None:
    out, output = first
    shutil.rmtree(out / "exp" / "baseline", ignore_errors=True)
    code, again = run("--small", "--out", out, "--seed", "0")
    assert code == 0, again
    assert table_rows(again) == table_rows(output)
    reused = json.loads((out / "results.json").read_text())["reused"]
    assert "train baseline" not in reused and "train bn-sequence" in reused


def test_other_seed_in_the_same_out_dir_is_refused(first: tuple[Path, str]) -> None:
    out, _ = first
    code, output = run("--small", "--out", out, "--seed", "1")
    assert code == 2
    assert output.strip().splitlines()[-1].startswith("error: ") and "--out" in output


def _model(name: str, dev_wer: float, test_wer: float, dev_ce: list[float]) -> ModelResult:
    return ModelResult(name, name, 0.5, 0.2, min(dev_ce), 0.2, dev_wer, test_wer, "", 10, dev_ce)


def _boot(p_improve: float, p_worse: float) -> Bootstrap:
    interval = WerInterval(10.0, 5.0, 15.0)
    return Bootstrap([interval, interval], p_improve, p_worse, 150, 10000, 0)


def test_conclusions_claim_only_what_the_bootstrap_carries() -> None:
    base, bn = _model("baseline", 19.3, 6.2, [1.5, 1.0, 0.82]), _model("bn", 11.9, 8.5, [1.2, 0.8, 0.56])
    lines = conclusions(base, bn, {"dev": _boot(0.99, 0.005), "test": _boot(0.22, 0.70)})
    assert lines == [
        "BN lowers the dev CE at every epoch (3 of 3; best 0.820 vs 0.560)",
        "dev WER: BN lower (19.3 % vs 11.9 %), P(BN better) = 0.99 over 150 utterances",
        "test WER: difference within noise (6.2 % vs 8.5 %), P(BN better) = 0.22 over 150 utterances",
    ]
    # the level is 0.95 either way; P(tie) counts for neither model
    worse = conclusions(base, bn, {"test": _boot(0.01, 0.96)})
    assert worse[1] == "test WER: baseline lower (6.2 % vs 8.5 %), P(BN better) = 0.01 over 150 utterances"
    assert "within noise" in conclusions(base, bn, {"test": _boot(0.94, 0.0)})[1]
    assert "BN lower" in conclusions(base, bn, {"test": _boot(0.95, 0.0)})[1]
    mixed = _model("bn", 11.9, 8.5, [1.2, 1.1, 0.56])
    assert conclusions(base, mixed, {})[0] == "BN's dev CE is lower at 2 of 3 epochs (best 0.820 vs 0.560)"
    higher = _model("bn", 11.9, 8.5, [1.6, 1.1, 0.9])
    assert conclusions(base, higher, {})[0].startswith("BN raises the dev CE at every epoch (3 of 3")


def test_cpu_kernels_are_pinned_in_a_fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """ATen's own dispatch picks AVX-512 kernels where the CPU has them, which changes the demo's numbers
    (docs/RESULTS.md): the demo asks for AVX2 + MKL_CBWR=AVX2 on x86-64, and a user's own setting wins."""
    import os
    import platform
    import subprocess
    import sys

    import torch

    if platform.machine().lower() not in ("x86_64", "amd64") or torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("pinning applies to x86-64 CPUs with AVX2")
    code = "from asr_bn.demo import pinned_cpu_kernels\nwith pinned_cpu_kernels() as kernels: print(kernels)"
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    pinned = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert pinned.stdout.startswith(f"AVX2, MKL_CBWR=AVX2, torch {torch.__version__}"), pinned.stdout
    own = subprocess.run([sys.executable, "-c", code], env={**env, "ATEN_CPU_CAPABILITY": "default"},
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert own.stdout.startswith("DEFAULT, MKL_CBWR=AVX2"), own.stdout
    from asr_bn.demo import pinned_cpu_kernels

    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("MKL_CBWR", raising=False)
    with pinned_cpu_kernels():
        assert (os.environ["ATEN_CPU_CAPABILITY"], os.environ["MKL_CBWR"]) == ("avx2", "AVX2")
    # subprocesses of later code in this process see the environment as it was
    assert "ATEN_CPU_CAPABILITY" not in os.environ and "MKL_CBWR" not in os.environ
