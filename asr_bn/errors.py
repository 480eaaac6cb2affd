"""Error types the CLI turns into one red line: what is wrong, where, and how to fix it."""

from __future__ import annotations


class AsrBnError(Exception):
    """Bad data or a failed step (exit code 1); the message names the file/utterance and the fix."""

    exit_code = 1


class UsageError(AsrBnError):
    """Bad command-line usage or inconsistent options (exit code 2)."""

    exit_code = 2


def shown(name: str) -> str:
    """`name` as an error line can hold it: as it is when printable, else escaped (a key read from corrupt bytes may
    hold a newline, which would break the one-line error)."""
    return name if name.isprintable() else ascii(name)
