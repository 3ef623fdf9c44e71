"""Exceptions whose message is meant for the user: one line naming the file and the fix."""

from __future__ import annotations


class RvcLoraError(Exception):
    """Base class for errors that the command-line entry points print without a traceback."""


class CheckpointError(RvcLoraError, ValueError):
    """A checkpoint file is missing, unreadable, unsafe, or does not fit the model."""


class ConfigError(RvcLoraError, ValueError):
    """The configuration asks for something the data or model cannot do."""


def first_line(err: BaseException) -> str:
    """An exception's first line (at most 200 characters), for one-line errors."""
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
