"""User-facing errors.

A :class:`GptkitError` is a mistake the user can fix (a bad recipe, a missing file, a malformed
row). The CLI prints its message, without a traceback, and exits non-zero. Everything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class GptkitError(Exception):
    """An error caused by user input. The message says what is wrong, where, and how to fix it."""

    exit_code = 2


class ConfigError(GptkitError):
    """A recipe or command-line override is invalid."""


class DataError(GptkitError):
    """An input file or corpus is missing, empty or malformed."""


class CheckpointError(GptkitError):
    """A checkpoint cannot be used as asked (missing, mismatched vocabulary or shapes)."""
