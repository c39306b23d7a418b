"""The errors a user can cause: each names the file, key or value and what was expected.

They live here, free of heavy imports, so that the command line can catch them all (``etlbench: error: ...``)
without importing torch first.
"""

from __future__ import annotations


class EtlbenchError(Exception):
    """Base of every error that is the input's fault, not a bug; the command line prints it on one line."""


class SpecError(EtlbenchError, ValueError):
    """An experiment spec that cannot run; the message names the source, the section and the key."""


class ConfigError(EtlbenchError, ValueError):
    """A parameter that a plugin does not take, or a value it cannot use; names the plugin and the key."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key  # the offending parameter, where there is one


class DatasetError(EtlbenchError, ValueError):
    """A dataset file that is missing or does not follow the canonical format; the message names file and key."""


class LabelError(EtlbenchError, ValueError):
    """Labels a task cannot use (missing array, wrong shape, out of range); names the array and the values."""


class MissingLabels(LabelError):
    """A dataset has no labels a task can be scored on (cross-dataset evaluation skips that task)."""


class TrainingError(EtlbenchError, RuntimeError):
    """Training could not go on (for example the loss became NaN); the message says where."""


class RunnerError(EtlbenchError, RuntimeError):
    """A run cannot start (e.g. DIR already holds results and ``--resume`` was not given); names the cause."""


class ResultsError(EtlbenchError, ValueError):
    """A results database that cannot be read or written (not SQLite, or not etlbench's); names the file."""


class ReportError(EtlbenchError, ValueError):
    """A results folder that cannot be reported on; the message names it and says why."""


class RunInterrupted(EtlbenchError):
    """A run stopped by the user (Ctrl-C) after its workers were stopped; says how many trials are stored."""
