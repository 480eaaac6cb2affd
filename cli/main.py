"""The `asr-bn` command: gathers one Typer app per command and turns library errors into one red line."""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import sys
from collections.abc import Iterable
from typing import Any

import typer
from asr_bn_cli.options import tidy_help
from typer._click.exceptions import NoArgsIsHelpError
from typer._click.exceptions import UsageError as ClickUsageError
from typer.core import TyperGroup

from asr_bn import __version__
from asr_bn.errors import AsrBnError


def _error(message: str, exit_code: int) -> typer.Exit:
    """Print `error: MESSAGE` as one red line on stderr; the Exit to raise."""
    from rich.console import Console  # (here: rich is 15 ms of every command's start-up, needed on errors only)
    from rich.markup import escape

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


def _version(value: bool) -> None:
    if value:
        print(f"asr-bn {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """asr-bn: prep → train → forward → decode → score, Kaldi formats in and out."""


# Every command: its name → (module under cli/, attribute): a command function or a Typer group of commands.
COMMANDS: dict[str, tuple[str, str]] = {
    "prep": ("prep", "app"), "ali": ("ali", "app"), "train": ("train", "train"), "average": ("train", "average"),
    "plot": ("plot", "plot"),
    "decode": ("decode", "decode"), "mkgraph": ("decode", "mkgraph"), "forward": ("forward", "forward"),
    "score": ("score", "app"), "tree": ("tree", "app"), "data": ("data", "app"), "gmm": ("gmm", "app"),
    "lang": ("lang", "lang"), "lm": ("lang", "lm"), "demo": ("demo", "demo"),
}


def _listed() -> None:
    """Stands for a command in the root's --help: its name and help, without building its options."""


def build_app(names: Iterable[str] = COMMANDS, listing: bool = False, sub: str | None = None) -> typer.Typer:
    """The `asr-bn` app with the commands `names`; with `listing`, each only as its name and help (what the root's
    --help shows, without typer converting every option of every command); with `sub`, a group of commands that
    has one of that name brings only that one (`asr-bn tree stats` converts no other tree command's options)."""
    app = typer.Typer(
        name="asr-bn",
        cls=_Root,
        help="Batch-normalized BLSTM acoustic models for Kaldi hybrid speech recognition.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
    )
    app.callback()(_root)
    for name in names:
        module, attribute = COMMANDS[name]
        target = getattr(importlib.import_module(f"asr_bn_cli.{module}"), attribute)
        if isinstance(target, typer.Typer):
            app.add_typer(typer.Typer(help=target.info.help) if listing else _only(target, sub), name=name)
        else:
            app.command(name, help=inspect.getdoc(target) if listing else None)(_listed if listing else target)
    return app


def _only(group: typer.Typer, command: str | None) -> typer.Typer:
    """`group` with only its command `command` if it has one, else `group` as it is (its --help, a wrong name)."""
    chosen = [c for c in group.registered_commands if c.name == command]
    if not chosen:
        return group
    only = copy.copy(group)
    only.registered_commands, only.registered_groups = chosen, []
    return only


def main() -> None:
    """Console-script entry point: builds only the command the command line names (`asr-bn decode …` neither imports
    nor converts the other commands' options); the root's --help, an unknown command or shell completion get all."""
    # One BLAS / OpenMP thread unless the environment asks for more (before numpy and torch load): asr-bn's numpy
    # and torch CPU operations are small, and their worker threads spin-wait for cores that other jobs hold (an
    # LDA+MLLT alignment of AN4 took 355 s instead of 22 s beside three trainings: docs/PERFORMANCE.md, Torch threads).
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    name, sub, *_ = [arg for arg in sys.argv[1:] if not arg.startswith("-")] + [None, None]
    completing = "_ASR_BN_COMPLETE" in os.environ  # shell completion needs every command's options
    if name in COMMANDS and not completing:
        build_app([name], sub=sub)()
    else:
        build_app(listing=not completing)()
