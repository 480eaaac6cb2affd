"""`asr-bn demo --small`: the whole pipeline end to end through the CLI; a rerun reuses every finished stage and
prints the same table; a model trained again from scratch with the same seed gives the same numbers; an
interrupted training run or another seed for the same output dir stops with one error line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asr_bn.train import TrainState
from asr_bn_cli.main import app

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
        assert f"{m['test_wer']:.1f}" == rows[m["name"]][4]
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
