"""Exceptions raised when the ``sluice`` binary ends in error.

Each carries sluice's own message and its exit code: 2 for invalid input or
flags (nothing was sent), 130 for an interrupted run (its state is saved;
run again to resume), 1 for any other error.
"""

from __future__ import annotations


class SluiceError(Exception):
    """sluice ended with an error.

    Attributes:
        message: sluice's message (its ``error:`` line, without the prefix).
        exit_code: the process's exit code.
        stderr: everything sluice wrote to stderr.
    """

    def __init__(self, message: str, exit_code: int, stderr: str = "") -> None:
        super().__init__(f"{message} (exit code {exit_code})")
        self.message = message
        self.exit_code = exit_code
        self.stderr = stderr


class InvalidInputError(SluiceError, ValueError):
    """Invalid input, job or flags (exit code 2); nothing was sent."""


class RunInterrupted(SluiceError):
    """The run was interrupted (exit code 130); its state is saved and the
    same call resumes it."""


def from_exit(exit_code: int, stderr: str) -> SluiceError:
    """The exception for a process that ended with ``exit_code``."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line[len("error: "):] for line in lines if line.startswith("error: ")]
    if errors:
        message = errors[-1]
    elif lines:
        message = lines[-1]
    else:
        message = f"sluice exited with code {exit_code}"
    kind = {2: InvalidInputError, 130: RunInterrupted}.get(exit_code, SluiceError)
    return kind(message, exit_code, stderr)
