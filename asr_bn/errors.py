"""Error types the CLI turns into one red line: what is wrong, where, and how to fix it."""

from __future__ import annotations


class AsrBnError(Exception):
    """Bad data or a failed step (exit code 1); the message names the file/utterance and the fix."""

    exit_code = 1


class UsageError(AsrBnError):
    """Bad command-line usage or inconsistent options (exit code 2)."""

    exit_code = 2
