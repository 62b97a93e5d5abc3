"""The config sections that more than one job shares: lake, mlflow, ray, spark, run, input, model, output,
table references, labels, features and metrics; the base `Model` and the day/model-URI checks.

Imports: pydantic and the standard library only; every other module of engine/config imports this one.
"""
from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_DAY = r"\d{4}-\d{2}-\d{2}"


def check_day(v: str) -> str:
    """One calendar day written YYYY-MM-DD, else ValueError (pydantic reports it under the key that holds it)."""
    try:
        ok = bool(re.fullmatch(_DAY, v)) and dt.date.fromisoformat(v).isoformat() == v
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{v!r} is not a calendar day written YYYY-MM-DD")
    return v


def check_days(v: str) -> str:
    """'all', one calendar day, or an inclusive range 'a..b' of calendar days with a <= b."""
    if v == "all":
        return v
    if not re.fullmatch(rf"{_DAY}(\.\.{_DAY})?", v):
        raise ValueError(f"must be 'all', 'YYYY-MM-DD' or 'YYYY-MM-DD..YYYY-MM-DD', got {v!r}")
    lo, _, hi = v.partition("..")
    if not hi:
        return check_day(v)
    for day in (lo, hi):
        try:
            check_day(day)
        except ValueError as e:
            raise ValueError(f"range {v!r}: {e}") from None
    if hi < lo:  # ISO days order as strings
        raise ValueError(f"range {v!r} ends before it starts")
    return v


def check_model_uri(v: str) -> str:
    """A registry model URI, models:/<name>@<alias> or models:/<name>/<version>, else ValueError."""
    if not re.fullmatch(r"models:/[^/@]+(@[^/@]+|/\d+)", v):
        raise ValueError(f"model uri must be models:/<name>@<alias> or models:/<name>/<version>, got {v!r}")
    return v


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# A key added after configs were first hashed, declared `Field(default, json_schema_extra=ADDED)`: config_hash leaves
# it out while it holds its default, so a config that does not set it keeps the hash its outputs were stored with.
ADDED = {"hash_when_default": False}


class LakeConfig(Model):
    root: str = "./lake"
    # Non-secret storage options only (region, endpoint); credentials come from the environment.
    storage_options: dict[str, str] = Field(default_factory=dict)

    @field_validator("storage_options", mode="before")
    @classmethod
    def _as_strings(cls, v):
        """Object stores take strings: `AWS_ALLOW_HTTP: true` (YAML's bool, in a file or an override) → "true"."""
        if not isinstance(v, dict):
            return v
        return {k: (str(x).lower() if isinstance(x, bool) else str(x) if isinstance(x, (int, float)) else x)
                for k, x in v.items()}

    @field_validator("storage_options")
    @classmethod
    def _no_secrets(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if re.search(r"secret|password|token|key|sas|credential", k, re.I)]
        if bad:
            raise ValueError(f"credentials {bad} must come from the environment, not a config file")
        return v


class MlflowConfig(Model):
    tracking_uri: str = "sqlite:///mlruns.db"
    registry_uri: str | None = None
    artifact_root: str = "./mlartifacts"
    log_reports: bool = True  # contract reports are logged to MLflow as artifacts of a run


class RayConfig(Model):
    address: str | None = None
    # tasks: fused Ray tasks that cache the model per worker process (fastest on CPU, see benchmarks/);
    # actors: a Ray Data actor pool that loads the model once per actor (the shape for GPUs).
    pipeline: Literal["tasks", "actors"] = "tasks"
    # Fractional by default: whole-CPU workers starve the read tasks on small machines.
    num_cpus: float = Field(0.5, gt=0)
    num_gpus: float = Field(1.0, ge=0)
    actors: int = Field(2, ge=1)
    max_in_flight: int | None = Field(None, ge=1)
    # spread: chunks go to every node of the cluster (a batch job wants all of them); default: Ray's packing.
    scheduling: Literal["spread", "default"] = "spread"


class OutputConfig(Model):
    table: str = "scores"
    quarantine_table: str = "quarantine"  # where a contract in quarantine mode puts the rows it rejects
    score_column: str = "score"
    target_file_rows: int = Field(1_000_000, ge=1)
    read_batch_rows: int = Field(131_072, ge=1)
    compression: Literal["zstd", "snappy", "none"] = "zstd"


class RunConfig(Model):
    time_budget_s: int = Field(6 * 3600, ge=1)
    commit_retries: int = Field(5, ge=0)


class SparkConfig(Model):
    master: str = "local[2]"  # ignored under spark-submit, where the session already exists
    units_in_flight: int = Field(2, ge=1)  # Spark jobs (one per unit) submitted at once; each unit commits when done


class InputConfig(Model):
    table: str = "features"
    version: int | Literal["latest"] = "latest"
    # "all", one date "2026-01-03", or an inclusive range "2026-01-01..2026-01-07"
    ds: str = "all"
    key_columns: list[str] = Field(default_factory=lambda: ["entity_id"])
    passthrough_columns: list[str] = Field(default_factory=list)
    contract: str | None = None  # path of the table's contract (conf/contracts/<table>.yaml); checked before writing

    @field_validator("ds")
    @classmethod
    def _ds_form(cls, v: str) -> str:
        return check_days(v)


class ModelConfig(Model):
    uri: str
    allow_pickle: bool = False
    device: Literal["cpu", "cuda"] = "cpu"
    # Torch models score in fixed-size micro-batches so that batch size never moves a score.
    micro_batch_rows: int = Field(4096, ge=1)

    @field_validator("uri")
    @classmethod
    def _models_uri(cls, v: str) -> str:
        return check_model_uri(v)


class TableRef(Model):
    table: str
    version: int | Literal["latest"] = "latest"


class EvalLabelsConfig(TableRef):
    table: str = "labels"
    label_column: str = "label"
    label_ts_column: str = "label_ts"  # when the label became known: it counts only at or before `as_of`


class FeaturesRef(TableRef):
    table: str = "features"
    # The table's contract (the file the score job's input.contract names): its PII columns never leave the
    # scoring input, so evaluate and backtest refuse to name them and leave them out of their defaults.
    contract: str | None = None


MetricsTask = Literal["binary", "regression"]


class EvalMetricsConfig(Model):
    """The metrics settings, declared once: engine/evaluation/spec.py's `MetricsSpec` takes its defaults and its
    fields from here. These bounds are the config's (what a user may ask for); the spec keeps wider invariants."""

    task: MetricsTask = "binary"
    thresholds: list[float] = Field(default_factory=lambda: [0.5])
    top_k_pct: list[float] = Field(default_factory=lambda: [1.0, 5.0])
    ece_bins: int = Field(10, ge=2, le=100)
    bootstrap: int = Field(200, ge=0, le=2000)  # Poisson bootstrap replicates; 0: no intervals
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0
