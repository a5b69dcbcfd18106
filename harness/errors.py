"""Errors the CLI turns into one clear message and an exit code.

Input errors (a bad experiment file, a bad flag) exit 2; build or run failures exit 1.
"""

from __future__ import annotations

from dataclasses import dataclass


class HarnessError(Exception):
    """A failure with a message meant for the user, not a traceback."""

    exit_code = 1


class InputError(HarnessError):
    """The user's input is wrong: nothing was built or run."""

    exit_code = 2


@dataclass(frozen=True)
class SpecIssue:
    """One problem in an experiment file, located to the character."""

    file: str
    line: int
    column: int
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"


class SpecError(InputError):
    """An experiment file failed to load or validate."""

    def __init__(self, issues: list[SpecIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))
