"""Shared pieces of the commands' options: range checks where an option is parsed (exit 2, one line), the
--device and --threads options, and how --help shows flags and lists. Torch-free: `asr-bn --help` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, get_args

import typer
from typer._coercion import RuntimeParam
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from asr_bn.ranges import Range
from asr_bn.device import DEVICE_NAMES, is_device_name

__all__ = ["in_range", "field_range", "check_device", "DEVICE_HELP", "THREADS_HELP", "tidy_help", "set_threads"]


def in_range(valid: Range) -> Callable[[Any], Any]:
    """A Typer option callback that refuses a value outside `valid` as a usage error (exit 2) naming the range."""

    def check(value: Any) -> Any:
        if value is not None and not isinstance(value, bool) and value not in valid:
            raise typer.BadParameter(f"must be {valid}, got {value:g}")
        return value

    return check


def field_range(cls: type, name: str) -> Callable[[Any], Any]:
    """in_range of the Range a config dataclass (asr_bn.config) gives its field `name`: one rule, checked by the
    CLI where it parses the option and by the library's check."""
    valid = cls.__dataclass_fields__[name].metadata["range"]
    return in_range(valid)


DEVICE_HELP = "auto (cuda when available), cpu, cuda or cuda:N."


def check_device(value: str) -> str:
    """Typer callback: --device is one of auto, cpu, cuda, cuda:N (asr_bn.device's rule; whether the GPU exists
    is checked when the command picks it)."""
    if not is_device_name(value):
        raise typer.BadParameter(f"{value!r} is not one of {DEVICE_NAMES}")
    return value


THREADS_HELP = "Torch CPU threads; default 1: the recurrences' small matrices run faster on one (bench/threads.py)."


def set_threads(threads: Optional[int]) -> None:
    """Set torch's CPU threads once for the whole command: `threads`, by default 1 (bench/threads.py)."""
    import torch

    torch.set_num_threads(threads or 1)


def _display_type(param: TyperOption | TyperArgument, ctx: Any) -> Optional[str]:
    """The type column of --help: none for a flag (it takes no value), a list's element type (`<path>` after
    `hyps...`; a repeatable option's `<str>`), else typer's."""
    desc = param.type_descriptor
    if isinstance(param, TyperOption) and param.is_flag:
        return None
    if desc.is_list and not desc.is_choice:
        (element,) = get_args(desc.annotation)
        return f"<{element.__name__.lower()}>"
    typer_class = TyperOption if isinstance(param, TyperOption) else TyperArgument
    return typer_class.display_type_rich(param, ctx)


_PLAIN_MESSAGES = {
    int: "Input should be a valid integer, unable to parse string as an integer",
    float: "Input should be a valid number, unable to parse string as a number",
}


class _Plain(RuntimeParam):
    """A value made by its annotation's constructor (int, float, str, Path; a flag's bool as it is), an int or
    float checked against the option's min and max as typer checks them."""

    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        kind = self.annotation
        if not isinstance(value, kind):
            try:
                value = kind(value.strip() if kind in (int, float) and isinstance(value, str) else value)
            except (TypeError, ValueError):
                raise typer.BadParameter(_PLAIN_MESSAGES.get(kind, f"{value!r} is not a valid {kind.__name__}"),
                                         ctx=ctx, param=param) from None
        low, high = getattr(self.parameter_info, "min", None), getattr(self.parameter_info, "max", None)
        if low is not None and not value >= low:  # `not >=`: NaN is refused too
            raise typer.BadParameter(f"Input should be greater than or equal to {_number(low)}", ctx=ctx, param=param)
        if high is not None and not value <= high:
            raise typer.BadParameter(f"Input should be less than or equal to {_number(high)}", ctx=ctx, param=param)
        return value


def _number(bound: float) -> str:
    """A bound as typer's messages (pydantic's) write it: 0 for 0.0, 0.5 for 0.5."""
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def _plain_runtime_param(param: TyperOption | TyperArgument) -> Any:
    """Coercion of a flag (its value is already a bool) or of one int, float, str or Path value (an int or float
    within its min and max, unclamped) without typer 0.29's pydantic adapter: importing pydantic is a third of
    `--help`'s and a usage error's start-up (bench/cli_start.py) and 0.1 s of every command's. Same messages as
    pydantic's for a value that is not a number or out of range; None for anything else (typer's own coercion)."""
    desc = param.type_descriptor
    kind, info = desc.annotation, desc.parameter_info
    flag = isinstance(param, TyperOption) and param.is_flag and kind is bool
    bounded = getattr(info, "min", None) is not None or getattr(info, "max", None) is not None
    constrained = ((bounded and (kind not in (int, float) or getattr(info, "clamp", False)))
                   or getattr(info, "exists", False) or not getattr(info, "file_okay", True)
                   or not getattr(info, "dir_okay", True) or getattr(info, "writable", False)
                   or getattr(info, "resolve_path", False))
    if not flag and (kind not in (int, float, str, Path) or constrained or param.multiple or param.nargs != 1):
        return None  # typer's own coercion checks these constraints

    return _Plain(annotation=kind, parameter_info=desc.parameter_info)


def _runtime_param(param: Any, typer_class: type) -> Any:
    if param._runtime_param is None:
        param._runtime_param = _plain_runtime_param(param) or typer_class.get_runtime_param(param)
    return param._runtime_param


class _Option(TyperOption):
    """An option as --help shows it (see _display_type), coerced without pydantic where it can be."""

    display_type_rich = _display_type

    def get_runtime_param(self) -> Any:
        return _runtime_param(self, TyperOption)


class _Argument(TyperArgument):
    """An argument as --help shows it (see _display_type), coerced without pydantic where it can be."""

    display_type_rich = _display_type

    def get_runtime_param(self) -> Any:
        return _runtime_param(self, TyperArgument)


def tidy_help(cmd: TyperCommand | TyperGroup) -> None:
    """Give every parameter under `cmd` the --help display above, including those click adds per call (--help)."""
    params_of = cmd.get_params

    def get_params(ctx: Any) -> list:
        params = params_of(ctx)
        for param in params:
            if type(param) is TyperOption:
                param.__class__ = _Option
            elif type(param) is TyperArgument:
                param.__class__ = _Argument
        return params

    cmd.get_params = get_params  # type: ignore[method-assign]
    for sub in getattr(cmd, "commands", {}).values():
        tidy_help(sub)
