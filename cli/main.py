"""The `asr-bn` command: gathers one Typer app per command and turns library errors into one red line."""

from __future__ import annotations

from typing import Any

import typer
from asr_bn_cli.options import tidy_help
from rich.console import Console
from rich.markup import escape
from typer._click.exceptions import NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError
from typer.core import TyperGroup

from asr_bn import __version__
from asr_bn.errors import AsrBnError


def _error(message: str, exit_code: int) -> typer.Exit:
    """Print `error: MESSAGE` as one red line on stderr; the Exit to raise."""
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(exit_code)


class _Root(TyperGroup):
    """Root group: an AsrBnError from any command, or a bad command line (click's usage errors: an unknown option, a
    value out of range), prints `error: …` as one red line and exits 1 (data) or 2 (usage); every command's --help
    shows flags and lists as asr_bn_cli.options.tidy_help does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tidy_help(self)

    def parse_args(self, ctx, args):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().parse_args(ctx, args)
        except NoArgsIsHelpError:
            raise
        except ClickUsageError as e:
            raise _usage_error(e) from None

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except AsrBnError as e:
            raise _error(str(e), e.exit_code) from None
        except NoArgsIsHelpError:
            raise
        except ClickUsageError as e:
            raise _usage_error(e) from None


def _usage_error(e: ClickUsageError) -> typer.Exit:
    """One line for a click usage error, with the command whose --help explains it."""
    where = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
    return _error(e.format_message().replace("Value error, ", "") + where, e.exit_code)


app = typer.Typer(
    name="asr-bn",
    cls=_Root,
    help="Batch-normalized BLSTM acoustic models for Kaldi hybrid speech recognition.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
)


def _version(value: bool) -> None:
    if value:
        print(f"asr-bn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """asr-bn: prep → train → forward → decode → score, Kaldi formats in and out."""


# Commands: one module each under cli/, registered here.
from asr_bn_cli import prep as _prep  # noqa: E402

app.add_typer(_prep.app, name="prep")
from asr_bn_cli import ali as _ali  # noqa: E402

app.add_typer(_ali.app, name="ali")
from asr_bn_cli import train as _train  # noqa: E402

app.command("train")(_train.train)
from asr_bn_cli import plot as _plot  # noqa: E402

app.command("plot")(_plot.plot)
from asr_bn_cli import decode as _decode  # noqa: E402

app.command("decode")(_decode.decode)
app.command("mkgraph")(_decode.mkgraph)
from asr_bn_cli import forward as _forward  # noqa: E402

app.command("forward")(_forward.forward)
from asr_bn_cli import score as _score  # noqa: E402

app.add_typer(_score.app, name="score")
from asr_bn_cli import tree as _tree  # noqa: E402

app.add_typer(_tree.app, name="tree")
from asr_bn_cli import data as _data  # noqa: E402

app.add_typer(_data.app, name="data")
from asr_bn_cli import gmm as _gmm  # noqa: E402

app.add_typer(_gmm.app, name="gmm")
from asr_bn_cli import lang as _lang  # noqa: E402

app.command("lang")(_lang.lang)
app.command("lm")(_lang.lm)
from asr_bn_cli import demo as _demo  # noqa: E402

app.command("demo")(_demo.demo)


def main() -> None:
    """Console-script entry point."""
    app()
