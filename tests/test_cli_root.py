"""The CLI's root: version, help, and the one-red-line error contract."""

from typer.testing import CliRunner

from asr_bn import __version__
from asr_bn_cli.main import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "asr-bn" in result.output or "Usage" in result.output
