"""The base of every error a user can cause and fix (a bad config, value, file or folder).

The command line prints such an error as one line and exits non-zero; anything else is a bug
in the library and keeps its traceback. This module imports nothing else of the package.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; its message names the thing and says what to do."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


def one_line(text: object, limit: int = 600) -> str:
    """`text` folded onto one line (newlines become ' | '), at most `limit` characters: a long
    one keeps its start and its end (where the advice is)."""
    flat = " | ".join(part.strip() for part in str(text).splitlines() if part.strip())
    if len(flat) <= limit:
        return flat
    tail = limit // 3
    return f"{flat[: limit - tail - 5]} ... {flat[-tail:]}"
