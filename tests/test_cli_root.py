"""The CLI's root: version, help (every command listed, every option's default shown), and the error contract:
exit 2 for bad usage, exit 1 for bad data with one `error: …` line naming the file, the utterance and the fix."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from test_train import error_line
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.testing import CliRunner

from asr_bn import __version__
from asr_bn_cli.main import app

runner = CliRunner()
COMMANDS = ["prep", "ali", "train", "plot", "forward", "mkgraph", "decode", "score", "demo"]
WIDE = {"COLUMNS": "2000"}  # rich wraps to the terminal; this wide, every option's row stays on one line
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], env=WIDE)
    return result.exit_code, ANSI.sub("", result.output)


def _commands(cmd: TyperCommand | TyperGroup, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every command and group under `cmd`, the root () first."""
    yield path
    if isinstance(cmd, TyperGroup):
        for name, sub in sorted(cmd.commands.items()):
            yield from _commands(sub, path + (name,))


def _command(path: tuple[str, ...]) -> TyperCommand | TyperGroup:
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


def _expected_default(option: TyperOption, default: object) -> str | None:
    """What `[default: …]` must say for `option`, or None for a bare on-switch (off unless given, as click shows)."""
    if isinstance(option.show_default, str):  # click's own text for the default, in parentheses
        return f"({option.show_default})"
    if option.is_bool_flag and not option.secondary_opts:
        return None if not default else "True"
    if option.is_bool_flag:  # --x/--no-x: the name of the one in effect
        return (option.opts if default else option.secondary_opts)[0].lstrip("-")
    if isinstance(default, (list, tuple)):
        return ", ".join(map(str, default))
    return str(getattr(default, "value", default))  # an Enum shows its value


def _rows(help_text: str) -> dict[str, str]:
    """Each row of rich's help panels, keyed by the names in its first column (a command's name, or an option's
    --x / --no-x / -x), with its continuation lines joined."""
    rows: dict[str, list[str]] = {}
    parts: list[str] | None = None
    for line in help_text.splitlines():
        cell = line.strip()
        if not (len(cell) > 1 and cell[0] == cell[-1] == "│"):  # outside a panel, or its border
            parts = None
            continue
        cell = cell[1:-1]
        if cell[:2].strip():  # a row starts in the first column (where `*` marks a required parameter)
            parts = [cell.strip()]
            first, *rest = cell.replace("*", " ").split()
            for name in [first] + list(itertools.takewhile(lambda t: t.startswith("-"), rest)):
                rows[name] = parts
        elif parts is not None and cell.strip():
            parts.append(cell.strip())
    return {name: " ".join(parts) for name, parts in rows.items()}


def test_version() -> None:
    code, out = cli("--version")
    assert code == 0 and out.strip() == f"asr-bn {__version__}"


def test_help_lists_every_command() -> None:
    code, out = cli("--help")
    assert code == 0
    listed = set(_rows(out.split("Commands", 1)[1]))
    assert set(COMMANDS) <= listed, f"missing from asr-bn --help: {sorted(set(COMMANDS) - listed)}"
    assert listed == {path[0] for path in ALL_COMMANDS if path}


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "asr-bn")
def test_every_help_shows_every_default(path: tuple[str, ...]) -> None:
    """`--help` of every command and group exits 0, and each option with a default shows it on its own row."""
    code, out = cli(*path, "--help")
    assert code == 0, out
    assert "Usage: asr-bn" in out
    cmd = _command(path)
    ctx = typer.Context(cmd, info_name=path[-1] if path else "asr-bn")
    rows = _rows(out)
    missing = []
    for option in (p for p in cmd.params if isinstance(p, TyperOption) and not p.hidden):
        assert option.opts[0] in rows, f"{option.opts[0]} has no row in `asr-bn {' '.join(path)} --help`"
        default = option.get_default(ctx, call=False)
        expected = None if default is None else _expected_default(option, default)
        if expected is not None and f"[default: {expected}]" not in rows[option.opts[0]]:
            missing.append(option.opts[0])
    assert not missing, f"`asr-bn {' '.join(path)} --help`: no default shown for {missing}"


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "asr-bn")
def test_unknown_option_is_a_usage_error(path: tuple[str, ...]) -> None:
    code, out = cli(*path, "--no-such-option")
    assert code == 2 and "No such option: --no-such-option" in out, out


def test_bad_options_and_bad_data_are_one_error_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"utt1 {tmp_path / 'missing.wav'}\n")
    (data / "utt2spk").write_text("utt1 spk1\n")
    code, out = cli("prep", "kaldi", data, tmp_path / "out", "--window-type", "kaiser")
    assert code == 2 and "'--window-type': 'kaiser' is not one of 'povey'" in error_line(out)
    code, out = cli("prep", "kaldi", data, tmp_path / "out")
    line = error_line(out)
    assert code == 1 and all(s in line for s in ("utt1", str(tmp_path / "missing.wav"), "--skip-bad")), line
