"""Errors the CLI turns into one clear message and an exit code.

Input errors (a bad experiment file, a bad flag) exit 2; build or run failures exit 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Characters that would break a message's one line (or hide part of it) are shown escaped.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    return _UNPRINTABLE.sub(lambda m: repr(m.group(0))[1:-1], text)


class HarnessError(Exception):
    """A failure with a message meant for the user, not a traceback."""

    exit_code = 1


class InputError(HarnessError):
    """The user's input is wrong: nothing was built or run."""

    exit_code = 2


@dataclass(frozen=True)
class SpecIssue:
    """One problem in an experiment file, located to the character (line 0: the file as a whole)."""

    file: str
    line: int
    column: int
    field: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line > 0 else self.file
        text = f"{where}: {self.field}: {self.reason}" if self.field else f"{where}: {self.reason}"
        return one_line(text)


class SpecError(InputError):
    """An experiment file failed to load or validate."""

    def __init__(self, issues: list[SpecIssue]):
        self.issues = issues
        # The CLI prints "error: " before the message: every further problem gets its own.
        super().__init__("\nerror: ".join(str(i) for i in issues))
