"""PII columns outside the scoring input: what `evaluate` and `backtest` may read of a contracted table.

A table's contract (contracts.spec, the file the score job's `input.contract` names) tags columns `pii`. The
evaluate and backtest jobs name that file as `features.contract`; the caller resolves it against the pinned
snapshot's schema (`jobs.evaluate` wires `contracts.spec.pii_columns`; engine never imports contracts) and hands
this module the set of PII column names. The choice, failing closed:

- a config key that names a PII column outright (a slice column, a recipe categorical, a drift column written
  without a wildcard) is a ConfigError (exit 2) naming the key, the column, the table and the contract, raised
  before any data is read: nothing is written;
- a pattern (`f*`, `drift.columns: []` meaning every float feature) never selects a PII column: PII columns are
  left out of whatever a pattern or a default matches, so their values never reach `drift_reference`, a report,
  a model spec or MLflow.

Without `features.contract` no column is known to be PII; the shipped configs set it.
"""
from __future__ import annotations

from typing import Callable, Iterable

import pyarrow as pa

from engine.errors import ConfigError

WILDCARDS = "*?["
PiiReader = Callable[[str, pa.Schema], set]  # (contract path, table schema) → the PII column names


def is_pattern(name: str) -> bool:
    return any(ch in name for ch in WILDCARDS)


def pii_columns(contract: str | None, schema: pa.Schema, reader: PiiReader | None, job: str) -> set[str]:
    """The PII columns of `schema` under `contract` (none without a contract)."""
    if not contract:
        return set()
    if reader is None:
        raise ConfigError(f"features.contract is set but no contract reader was wired; run the job through jobs.{job}")
    return set(reader(contract, schema))


def refuse_named(pii: set[str], named: dict[str, Iterable[str]], contract: str | None, where: str) -> None:
    """A ConfigError for the first name (not a pattern) under a config key that is a PII column."""
    for key, names in named.items():
        for name in names:
            if name in pii and not is_pattern(name):
                raise ConfigError(f"{key} names column {name!r} of {where}, which contract {contract} tags pii; PII "
                                  f"columns never leave the scoring input: remove {name!r} from {key}")


def without_pii(columns: Iterable[str], pii: set[str]) -> list[str]:
    """`columns` (matched by patterns or defaults) less the PII columns."""
    return [c for c in columns if c not in pii]


__all__ = ["PiiReader", "is_pattern", "pii_columns", "refuse_named", "without_pii"]
