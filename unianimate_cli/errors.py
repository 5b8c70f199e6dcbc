"""Errors meant for users: one line saying what failed, and optionally what to do.

Library code raises these where the problem is found; the only broad ``except`` is the
boundary in ``cli.py``, which prints ``error: ...`` / ``hint: ...`` and exits with
``exit_code``. Anything that is not a ``UnianimateError`` is our bug.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UnianimateError(Exception):
    """A problem the user can act on; ``message`` is one line, ``hint`` says what to do."""

    exit_code: int = EXIT_USER_ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}; {self.hint}"


class InputError(UnianimateError):
    """A photo, video, pose file or option value that cannot be used."""


class WeightsError(UnianimateError):
    """A weight file that is missing, truncated, or does not fit the model."""


class ProjectError(UnianimateError):
    """A project directory that is locked, corrupt, or missing an artifact."""


class ResourceError(UnianimateError):
    """Not enough GPU memory, disk space, or another machine resource."""


class ParityError(UnianimateError):
    """A fixture folder that the parity runner cannot read."""
