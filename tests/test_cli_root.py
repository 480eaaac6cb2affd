"""The CLI's root: version, help (every command listed, every option's default shown), and the error contract:
exit 2 for bad usage, exit 1 for bad data with one `error: …` line naming the file, the utterance and the fix."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from asr_bn_cli.main import build_app
from test_train import error_line
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.testing import CliRunner

from asr_bn import __version__

app = build_app()

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
        if len(cell) - len(cell.lstrip()) <= 5:  # a row starts in the first columns (`*` marks a required one)
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


# Options with a fixed set of values: --help lists them (`<a|b|c>`) and any other value is a usage error.
ENUMERATED = {"--bn", "--optimizer", "--schedule", "--amp", "--preset", "--cmvn", "--mode", "--window-type",
              "--oov-policy", "--position-dependent-phones", "--case"}


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "asr-bn")
def test_help_reads_well(path: tuple[str, ...]) -> None:
    """Every row of every --help: its help text whole (no rich markup eaten, as `[lat.ark/.scp, hyp_LMWT]` was);
    flags without a type (they take no value); lists by their element type, not `<list[Path]>`; enumerated options
    with their choices; --device checked (auto, cpu, cuda, cuda:N)."""
    code, out = cli(*path, "--help")
    rows = _rows(out)
    cmd = _command(path)
    assert "<list[" not in out and "<bool>" not in out, out
    for param in cmd.params:
        name = param.opts[0] if isinstance(param, TyperOption) else param.name
        if param.help and name in rows:
            assert " ".join(param.help.split()) in rows[name], (name, param.help, rows[name])
        if name in ENUMERATED:
            choices = [str(getattr(c, "value", c)) for c in param.type_descriptor.choices]
            assert f"<{'|'.join(choices)}>" in rows[name], rows[name]
    if path in LEAVES and any(p.opts[0] == "--device" for p in cmd.params if isinstance(p, TyperOption)):
        args = ["x"] * sum(isinstance(p, typer.core.TyperArgument) and p.required for p in cmd.params)
        code, out = cli(*path, *args, "--device", "gpu")
        assert code == 2 and "--device" in error_line(out), out


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


# -- every numeric option refuses what makes no sense, where it is parsed ----------------------------------------

# A value outside each numeric option's range (the same value is bad in every command that has the option), and the
# options with no range, with the reason. A new numeric option must be added to one of the two.
OUT_OF_RANGE = {
    "--frame-shift-ms": "0", "--acoustic-scale": "0", "--beam": "0", "--max-active": "0", "--lattice-beam": "-1",
    "--nj": "0", "--seed": "-1", "--prior-scale": "-1", "--prior-floor": "0", "--max-frames": "-1",
    "--num-workers": "-1", "--threads": "0", "--sil-prob": "1", "--self-loop-scale": "-0.5",
    "--transition-scale": "-1", "--channel": "-1", "--length-tolerance": "-1", "--num-pdfs": "0",
    "--sample-frequency": "0", "--frame-length": "0", "--frame-shift": "-10", "--dither": "-1",
    "--preemphasis-coefficient": "1.5", "--num-mel-bins": "2", "--low-freq": "-1", "--high-freq": "9000",
    "--vtln-warp": "0", "--nproc": "0", "--layers": "0", "--units": "0", "--dropout": "1", "--soft-weight": "1.5",
    "--min-post": "0", "--last": "0",
    "--population-batches": "-1", "--lr": "nan", "--momentum": "1", "--weight-decay": "-1e-4", "--clip-norm": "-1",
    "--lr-decay": "1.5", "--min-improvement": "-0.1", "--epochs": "0", "--patience": "-1", "--batch-size": "0",
    "--max-train-frames": "-1", "--eval-every": "-1", "--log-every": "0", "--checkpoint-every": "0",
    "--context-width": "0", "--central-position": "-1", "--var-floor": "-1", "--max-leaves": "-1", "--thresh": "-1",
    "--cluster-thresh": "-2", "--replications": "0", "--order": "5", "--num-iters": "0", "--max-iter-inc": "-1",
    "--totgauss": "0", "--boost-silence": "0", "--retry-beam": "0", "--hold-out-speakers": "-1",
    "--power": "0", "--dim": "0", "--splice-context": "-1", "--silence-weight": "-1",
    "--acwt": "0", "--first-beam": "0", "--fmllr-min-count": "-1", "--delta-order": "3", "--randprune": "-1",
    "--num-frame-masks": "-1", "--frames-mask-size": "-1", "--num-feature-masks": "-1", "--features-mask-size": "-1",
}  # fmt: skip
UNBOUNDED = {
    "--forget-bias": "any initial forget-gate bias",
    "--blackman-coeff": "Kaldi takes any (the window's constant)",
    "--energy-floor": "Kaldi: <= 0 is no floor",
    "--vtln-low": "checked against the mel range only with --vtln-warp != 1, as in Kaldi",
    "--vtln-high": "checked against the mel range only with --vtln-warp != 1, as in Kaldi",
}
LEAVES = [path for path in ALL_COMMANDS if path and not isinstance(_command(path), TyperGroup)]


def _numeric_options(path: tuple[str, ...]) -> list[str]:
    return [p.opts[0] for p in _command(path).params
            if isinstance(p, TyperOption) and p.type_descriptor.annotation in (int, float)]  # fmt: skip


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_numeric_option_refuses_out_of_range_values(path: tuple[str, ...], tmp_path: Path) -> None:
    """Each numeric option of each command, given a value outside its range: exit 2 with one `error:` line naming
    the option, before anything is read or written (the positional arguments do not exist)."""
    cmd = _command(path)
    args = [str(tmp_path / p.name) for p in cmd.params if isinstance(p, typer.core.TyperArgument) and p.required]
    for option in _numeric_options(path):
        assert option in OUT_OF_RANGE or option in UNBOUNDED, f"{option} of {path}: give its range a test value"
        if option in UNBOUNDED:
            continue
        code, out = cli(*path, *args, option, OUT_OF_RANGE[option])
        assert code == 2 and option in error_line(out), (path, option, out)
    assert not any(tmp_path.iterdir())


def test_kaldi_fbank_checks() -> None:
    """Kaldi's own refusals, the same limits (checked with compute-fbank-feats: at 8 kHz, 95 mel bins are taken and
    96 refused, "You may have set --num-mel-bins too large"; at 16 kHz 126 and 127)."""
    for rate, largest in ((8000, 95), (16000, 126)):
        code, out = cli("prep", "kaldi", "d", "o", "--sample-frequency", rate, "--num-mel-bins", largest + 1)
        assert code == 2 and f"--num-mel-bins {largest + 1} is too large" in error_line(out), out
    from asr_bn.config import FbankConfig

    assert FbankConfig(sample_frequency=8000, num_mel_bins=95).num_mel_bins == 95
    assert FbankConfig(num_mel_bins=126).num_mel_bins == 126
    code, out = cli("prep", "kaldi", "d", "o", "--no-round-to-power-of-two", "--frame-length", "25.0625")
    assert code == 2 and "odd FFT size of 401 samples" in error_line(out)  # Kaldi asserts an even FFT size


# -- start-up: help and usage errors load neither torch nor the Kaldi extensions ------------------------------------

_HEAVY = ("torch", "numpy", "kaldi_hmm_gmm", "kaldifst", "kaldi_decoder", "kaldilm", "kaldiio", "scipy", "matplotlib",
          "pydantic")
_PROBE = """
import json, sys
from typer.testing import CliRunner
from asr_bn_cli.main import build_app
app = build_app()
paths = json.loads(sys.argv[1])
codes = [CliRunner().invoke(app, [*path, "--help"]).exit_code for path in paths]
codes += [CliRunner().invoke(app, [*path, "--no-such-option"]).exit_code for path in paths]
codes.append(CliRunner().invoke(app, ["train", "a", "b", "c", "--clip-norm", "-1"]).exit_code)
codes.append(CliRunner().invoke(app, ["tree", "build", "a", "b", "c", "d", "e", "--thresh", "-1"]).exit_code)
print(json.dumps({"codes": codes, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_help_and_usage_errors_import_no_heavy_module() -> None:
    """`asr-bn --help`, every command's --help and usage errors (an option's min too), in a fresh process: none of
    torch, numpy, the Kaldi extensions or pydantic is imported (they took 2-3 s before; bench/cli_start.py measures
    the start-up)."""
    paths = [list(p) for p in ALL_COMMANDS]
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(paths)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0] * len(paths) + [2] * (len(paths) + 2)
    assert not set(_HEAVY) & set(result["loaded"]), sorted(set(_HEAVY) & set(result["loaded"]))


def test_root_help_lists_the_commands_as_the_whole_app_does() -> None:
    """main() answers the root's --help from each command's name and help alone (build_app(listing=True)): it must
    print what the whole app prints, commands and groups in their places, help texts the same."""
    listed = runner.invoke(build_app(listing=True), ["--help"], env=WIDE)
    assert listed.exit_code == 0
    assert listed.output == runner.invoke(app, ["--help"], env=WIDE).output


_ONLY = """
import json, sys
from asr_bn_cli.main import main
sys.argv = ["asr-bn", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith("asr_bn_cli."))), file=sys.stderr)
"""


@pytest.mark.parametrize(("args", "modules"), [
    (["decode", "--help"], ["asr_bn_cli.decode", "asr_bn_cli.main", "asr_bn_cli.options"]),
    (["gmm", "sat", "--help"], ["asr_bn_cli.gmm", "asr_bn_cli.main", "asr_bn_cli.options"]),
])
def test_a_command_line_builds_only_the_command_it_names(args: list[str], modules: list[str]) -> None:
    """`asr-bn decode …` imports and converts the decode command alone, not the other commands (start-up: issue 13's
    decoding against Kaldi's whole process, bench/cli_start.py)."""
    out = subprocess.run([sys.executable, "-c", _ONLY, *args], capture_output=True, text=True, check=True)
    assert "Usage: asr-bn" in out.stdout
    assert json.loads(out.stderr.strip().splitlines()[-1]) == modules


_SUB = """
import json, sys
import typer
import asr_bn_cli.main as cli
converted = []
real = typer.main.get_command_from_info
def spy(*args, **kwargs):
    converted.append((args[0] if args else kwargs["command_info"]).name)
    return real(*args, **kwargs)
typer.main.get_command_from_info = spy
sys.argv = ["asr-bn", *sys.argv[1:]]
try:
    cli.main()
except SystemExit:
    pass
print(json.dumps({"converted": converted, "config": "asr_bn.config" in sys.modules}), file=sys.stderr)
"""


@pytest.mark.parametrize(("args", "converted", "usage"), [
    (["tree", "stats", "--help"], ["stats"], "Usage: asr-bn tree stats"),
    (["tree", "--help"], ["stats", "questions", "build", "info"], "Usage: asr-bn tree"),
    (["tree", "nosuch"], ["stats", "questions", "build", "info"], "No such command 'nosuch'"),
])
def test_a_group_converts_only_the_command_named(args: list[str], converted: list[str], usage: str) -> None:
    """`asr-bn tree stats …` converts the options of `tree stats` alone (main's `sub`), and builds no config
    dataclass (asr_bn.config): start-up is what bench/tree.py's two CLI processes pay beside Kaldi's binaries. The
    group's --help and a wrong command name still see the whole group."""
    out = subprocess.run([sys.executable, "-c", _SUB, *args], capture_output=True, text=True, check=True)
    assert usage in out.stdout + out.stderr
    result = json.loads(out.stderr.strip().splitlines()[-1])
    assert result == {"converted": converted, "config": False}


def test_bounds_are_checked_as_typer_checks_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """An int or float option's min and max, checked without typer's pydantic adapter: the same messages as typer's
    own check (NaN refused too)."""
    import asr_bn_cli.options as options

    cases = [["--thresh", "-1"], ["--thresh", "nan"], ["--cluster-thresh", "-2"], ["--max-leaves", "-1"],
             ["--max-leaves", "1.5"], ["--context-width", "0"]]

    def lines() -> list[str]:
        return [error_line(cli("tree", "build", "a", "b", "c", "d", "e", *args)[1]) for args in cases]

    ours = lines()
    monkeypatch.setattr(options, "_plain_runtime_param", lambda param: None)
    assert ours == lines()
    assert "Input should be greater than or equal to -1" in ours[2] and "valid integer" in ours[4]
