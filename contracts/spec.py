"""Engine-neutral contract declarations: one YAML file per table, validated into frozen models.

A contract is declared once; the Arrow row checks (contracts.checks), the partition checks
(contracts.partition) and the pandera schemas (contracts.schemas) are all built from it, so the engines cannot
disagree about what the contract says.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import Field, model_validator

from engine.config.load import load_config
from engine.config.sections import Model
from engine.errors import ConfigError

TypeName = Literal["int", "float", "string", "bool", "timestamp", "date"]

_TYPE_TESTS = {
    "int": pa.types.is_integer,
    "float": pa.types.is_floating,
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t),
    "bool": pa.types.is_boolean,
    "timestamp": pa.types.is_timestamp,
    "date": pa.types.is_date,
}


class ColumnSpec(Model):
    """One column's rules. Several patterns may match a column: their specs merge (see `merge_specs`)."""

    type: TypeName | None = None  # may be left to another matching pattern ("c_*: {type: string}")
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    finite: bool = False  # NaN and ±inf are violations
    pii: bool = False


class VolumeSpec(Model):
    lookback: int = Field(7, ge=1)  # previous partitions of the same snapshot to compare with
    min_ratio: float = Field(0.5, gt=0)
    max_ratio: float = Field(2.0, gt=0)


class DriftSpec(Model):
    reference: str  # "YYYY-MM-DD..YYYY-MM-DD": the window whose histograms are the reference
    bins: int = Field(10, ge=2)
    psi_max: float = Field(0.25, gt=0)
    per_feature: dict[str, float] = Field(default_factory=dict)  # feature → its own PSI threshold
    features: list[str] = Field(default_factory=list)  # patterns; empty: every non-PII float column


class Contract(Model):
    table: str
    mode: Literal["fail_closed", "quarantine"] = "fail_closed"
    bad_row_budget: float = Field(0.0, ge=0, le=1)
    key: list[str] = Field(default_factory=list)
    event_time: str | None = None  # rows must fall inside their partition's date (UTC)
    allow_empty: bool = False
    max_age_days: int | None = Field(None, ge=0)  # newest partition must be at most this old
    columns: dict[str, ColumnSpec]  # names or fnmatch patterns ("f??"); specs matching one column merge
    allow_extra_columns: bool = False
    volume: VolumeSpec | None = None
    drift: DriftSpec | None = None

    @model_validator(mode="after")
    def _refs(self) -> "Contract":
        for name in [*self.key, *([self.event_time] if self.event_time else [])]:
            if name not in self.columns:
                raise ValueError(f"{name!r} is used as key/event_time but not declared under columns")
        return self

    @property
    def digest(self) -> str:
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def resolve(self, schema: pa.Schema) -> "ResolvedContract":
        """Match declared names and patterns against a table's columns; schema problems are returned, not raised."""
        problems: list[tuple[str, str, str]] = []  # (check, column, message)
        matches: dict[str, list[tuple[str, ColumnSpec]]] = {}
        for pattern, spec in self.columns.items():
            matched = [n for n in schema.names if fnmatch.fnmatchcase(n, pattern)]
            if not matched:
                problems.append(("presence", pattern, f"required column {pattern!r} is missing"))
            for name in matched:
                matches.setdefault(name, []).append((pattern, spec))
        cols = {name: merge_specs(name, specs) for name, specs in matches.items()}
        for name, spec in cols.items():
            typ = schema.field(name).type
            if not _TYPE_TESTS[spec.type](typ):
                problems.append(("type", name, f"column {name!r} is {typ}, the contract says {spec.type} (no coercion)"))
        if not self.allow_extra_columns:
            for name in schema.names:
                if name not in cols and name != "ds":
                    problems.append(("extra_column", name, f"column {name!r} is not in the contract"))
        return ResolvedContract(self, cols, problems)

    @property
    def pii_patterns(self) -> list[str]:
        return [p for p, s in self.columns.items() if s.pii]


def merge_specs(name: str, specs: list[tuple[str, ColumnSpec]]) -> ColumnSpec:
    """The specs of every pattern matching column `name`, merged; disagreeing specs are a ConfigError (exit 2).

    A column is PII if any matching spec says so. Every other rule set in more than one spec must be the same in
    each (two types, two ranges, two category lists, nullable true and false are conflicts); a rule set in one
    spec applies. Some spec must give the type.
    """
    if len(specs) == 1 and specs[0][1].type is not None:
        return specs[0][1]
    merged: dict = {}
    origin: dict[str, str] = {}
    for pattern, spec in specs:
        for key in sorted(spec.model_fields_set - {"pii"}):
            value = getattr(spec, key)
            if value is None:
                continue  # an explicit null (no bound, no type) leaves the rule to the other specs
            if key in merged and merged[key] != value:
                raise ConfigError(
                    f"contract column {name!r} matches {origin[key]!r} ({key}={merged[key]!r}) and {pattern!r} "
                    f"({key}={value!r}), which disagree; make them agree, or narrow a pattern so one spec applies")
            merged[key], origin[key] = value, pattern
    merged["pii"] = any(spec.pii for _, spec in specs)
    if merged.get("type") is None:
        raise ConfigError(f"contract column {name!r}: no matching spec ({', '.join(repr(p) for p, _ in specs)}) "
                          f"gives its type; add type: to one of them")
    return ColumnSpec(**merged)


class ResolvedContract:
    """A contract bound to one table schema: concrete columns and the schema-level problems found."""

    def __init__(self, contract: Contract, columns: dict[str, ColumnSpec], problems: list[tuple[str, str, str]]):
        self.contract = contract
        self.columns = columns
        self.schema_problems = problems

    @property
    def pii(self) -> set[str]:
        return {n for n, s in self.columns.items() if s.pii}

    def allows_null(self, name: str) -> bool:
        """Whether the column may hold nulls: never a key column (a null key identifies no row: a not_null failure,
        never a duplicate), else as declared."""
        return self.columns[name].nullable and name not in self.contract.key

    def check_columns(self) -> list[str]:
        """Columns the row checks read (PII never: no check on a PII column may quote its value)."""
        return [n for n, s in self.columns.items() if not s.pii or not s.nullable]


def load_contract(path: str | Path, key: str = "input.contract") -> Contract:
    """A contract file → Contract; a bad or missing file is a ConfigError (exit 2) naming `key`, which gave the path."""
    return load_config(Contract, path, key=key)


def pii_columns(path: str | Path, schema: pa.Schema, key: str = "features.contract") -> set[str]:
    """The columns of `schema` that the contract at `path` tags pii (engine.pii's reader for evaluate and backtest)."""
    return load_contract(path, key).resolve(schema).pii
