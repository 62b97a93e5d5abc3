"""Error hierarchy of lakescore; each class maps to one documented exit code (DESIGN.md)."""
from __future__ import annotations

import reprlib


class LakescoreError(Exception):
    """Base class: `exit_code` is what the job process exits with, `str(e)` is the one-line message."""

    exit_code = 1

    def __init__(self, message: str):
        # One line: schedulers and log scrapers read the first line only.
        super().__init__(" ".join(message.split()))


class ConfigError(LakescoreError):
    """Bad config or arguments: unknown key, wrong type, missing file, a relative path sent to a cluster."""

    exit_code = 2


class ContractViolation(LakescoreError):
    """Input data broke its contract (row checks, budgets, volume, freshness, drift)."""

    exit_code = 3


class GateFailed(LakescoreError):
    """A promotion gate did not pass (evaluate)."""

    exit_code = 4


class InputUnavailable(LakescoreError):
    """An input table or version cannot be read: missing table, vacuumed files, expired log, refused layout."""

    exit_code = 5


class ModelRefused(LakescoreError):
    """A model is missing, corrupt, or in a format refused by default (pickle)."""

    exit_code = 5


class UnitFailed(LakescoreError):
    """A unit of work failed unexpectedly (engine crash retries could not absorb)."""

    exit_code = 1


def short_list(items) -> str:
    """Cap long lists in messages (as mlforecast does with reprlib)."""
    r = reprlib.Repr()
    r.maxlist = 8
    r.maxstring = 200
    return r.repr(list(items))
