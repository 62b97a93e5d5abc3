"""Typed job configuration: YAML files validated by pydantic models, dotted overrides, path resolution, hash.

Config is read once by `load_config` and handed down as frozen models; nobody downstream reads raw dicts.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.errors import ConfigError
from engine.snapshot import is_url  # noqa: F401 - re-exported: engine.config.is_url

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


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
        if not re.fullmatch(r"models:/[^/@]+(@[^/@]+|/\d+)", v):
            raise ValueError(f"model uri must be models:/<name>@<alias> or models:/<name>/<version>, got {v!r}")
        return v


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


class ScoreConfig(Model):
    engine: Literal["ray", "spark"] = "ray"
    lake: LakeConfig = LakeConfig()
    mlflow: MlflowConfig = MlflowConfig()
    input: InputConfig = InputConfig()
    model: ModelConfig
    output: OutputConfig = OutputConfig()
    ray: RayConfig = RayConfig()
    spark: SparkConfig = SparkConfig()
    run: RunConfig = RunConfig()


class ValidateConfig(Model):
    engine: Literal["ray", "spark"] = "ray"
    lake: LakeConfig = LakeConfig()
    mlflow: MlflowConfig = MlflowConfig()
    input: InputConfig = InputConfig()
    target_chunk_rows: int = Field(1_000_000, ge=1)
    read_batch_rows: int = Field(131_072, ge=1)
    ray: RayConfig = RayConfig()
    spark: SparkConfig = SparkConfig()
    run: RunConfig = RunConfig()

    @field_validator("input")
    @classmethod
    def _needs_contract(cls, v: InputConfig) -> InputConfig:
        if not v.contract:
            raise ValueError("input.contract is required: the contract to validate against")
        return v


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


class EvalFeaturesConfig(FeaturesRef):
    slice_columns: list[str] = Field(default_factory=lambda: ["region", "segment", "channel"])


class EvalModelsConfig(Model):
    # The champion (usually the registry alias); every challenger is compared with it on the same rows.
    champion: str = "models:/lakescore-demo-xgb@champion"
    challengers: list[str] = Field(default_factory=list)

    @field_validator("champion")
    @classmethod
    def _champion_uri(cls, v: str) -> str:
        return ModelConfig._models_uri(v)

    @field_validator("challengers")
    @classmethod
    def _challenger_uris(cls, v: list[str]) -> list[str]:
        return [ModelConfig._models_uri(u) for u in v]


class EvalMetricsConfig(Model):
    task: Literal["binary", "regression"] = "binary"
    thresholds: list[float] = Field(default_factory=lambda: [0.5])
    top_k_pct: list[float] = Field(default_factory=lambda: [1.0, 5.0])
    ece_bins: int = Field(10, ge=2, le=100)
    bootstrap: int = Field(200, ge=0, le=2000)  # Poisson bootstrap replicates; 0: no intervals
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0


class ThresholdGate(Model):
    metric: str
    slice: str = "overall"  # "overall", "segment=enterprise", "segment=enterprise & channel=app"
    min: float | None = None
    max: float | None = None
    model: Literal["challengers", "all"] = "challengers"


class RegressionGate(Model):
    metric: str
    slices: list[str] | Literal["all"] = "all"  # the slices the gate watches
    max_drop: float = Field(ge=0)  # how far the challenger may fall behind the champion (in the worse direction)
    use_interval: bool = False  # judge the interval's worse end instead of the point difference


class GatesConfig(Model):
    min_support: int = Field(200, ge=1)  # a gated slice with fewer rows fails the gate
    thresholds: list[ThresholdGate] = Field(default_factory=list)
    max_regression: list[RegressionGate] = Field(default_factory=list)
    max_immature_fraction: float = Field(0.2, ge=0, le=1)  # more scored rows than this without a label by as_of fails
    promote: bool = False  # on pass, move the champion's alias to the (single) challenger of the same model name


class EvalDriftConfig(Model):
    reference: str | None = None  # days of the features table, "a..b"; null: no drift section
    columns: list[str] = Field(default_factory=list)  # glob patterns of float features; empty: every float feature
    bins: int = Field(10, ge=2)
    psi_max: float = Field(0.25, gt=0)
    sample_rows: int = Field(5000, ge=0)  # rows per window for the Evidently page; 0: no page

    @field_validator("reference")
    @classmethod
    def _reference_form(cls, v: str | None) -> str | None:
        return v if v is None else check_days(v)


class EvalOutputConfig(Model):
    table: str = "eval_metrics"  # reports go to <lake.root>/_reports/evaluate/<run_id>/


class EvaluateConfig(Model):
    engine: Literal["ray", "spark"] = "ray"
    lake: LakeConfig = LakeConfig()
    mlflow: MlflowConfig = MlflowConfig()
    scores: TableRef = TableRef(table="scores")
    score_column: str = "score"
    labels: EvalLabelsConfig = EvalLabelsConfig()
    features: EvalFeaturesConfig = EvalFeaturesConfig()
    key_columns: list[str] = Field(default_factory=lambda: ["entity_id", "event_ts"])
    window: str = "all"  # days of the scores table: "all", "YYYY-MM-DD" or "a..b"
    as_of: str = "latest"  # ISO timestamp (UTC if no zone) or "latest": the newest label_ts of the pinned labels
    models: EvalModelsConfig = EvalModelsConfig()
    metrics: EvalMetricsConfig = EvalMetricsConfig()
    slices: list[list[str]] = Field(default_factory=lambda: [["region"], ["segment"], ["channel"], ["segment", "channel"]])
    min_support: int = Field(200, ge=1)  # a slice below it is reported "under_support"
    gates: GatesConfig = GatesConfig()
    drift: EvalDriftConfig = EvalDriftConfig()
    output: EvalOutputConfig = EvalOutputConfig()
    max_rows_per_task: int = Field(2_000_000, ge=1000)  # a larger day is split into key-hash buckets
    ray: RayConfig = RayConfig()
    spark: SparkConfig = SparkConfig()
    run: RunConfig = RunConfig()

    @field_validator("window")
    @classmethod
    def _window_form(cls, v: str) -> str:
        return check_days(v)

    @field_validator("as_of")
    @classmethod
    def _as_of_form(cls, v: str) -> str:
        if v != "latest":
            try:
                dt.datetime.fromisoformat(v)
            except ValueError:
                raise ValueError(f"{v!r} is not an ISO timestamp (e.g. 2026-01-09T00:00:00Z) or 'latest'") from None
        return v


class FoldsConfig(Model):
    window: Literal["expanding", "rolling"] = "expanding"
    train_days: int = Field(3, ge=1)  # rolling: the training length; expanding: the first fold's minimum
    gap_days: int = Field(0, ge=0)  # embargo between the end of training and the cutoff
    horizon_days: int = Field(1, ge=1)  # test window length
    step_days: int = Field(1, ge=1)
    n_folds: int | None = Field(None, ge=1)
    cutoffs: list[str] | None = None  # explicit first test days; override n_folds and step_days

    @field_validator("cutoffs")
    @classmethod
    def _cutoff_days(cls, v: list[str] | None) -> list[str] | None:
        return v if v is None else [check_day(d) for d in v]


class RecipeConfig(Model):
    kind: Literal["xgboost", "torch_mlp"] = "xgboost"
    features: list[str] = Field(default_factory=lambda: ["f*"])  # glob patterns of numeric feature columns
    categorical: list[str] = Field(default_factory=lambda: ["region", "segment", "channel"])
    trees: int = Field(100, ge=1)
    depth: int = Field(5, ge=1)
    epochs: int = Field(4, ge=1)
    clip: float = Field(8.0, gt=0)  # numeric features are clipped to ±clip, nulls filled with 0


class RefitConfig(Model):
    every: int = Field(1, ge=0)  # 1: retrain every fold; k: every k folds (reuse in between); 0: train once


class BaselineConfig(Model):
    kind: Literal["champion", "base_rate"] = "champion"
    model: str = "models:/lakescore-demo-xgb@champion"  # for kind=champion

    @field_validator("model")
    @classmethod
    def _baseline_uri(cls, v: str) -> str:
        return ModelConfig._models_uri(v)


class BacktestConfig(Model):
    engine: Literal["ray"] = "ray"
    lake: LakeConfig = LakeConfig()
    mlflow: MlflowConfig = MlflowConfig()
    features: FeaturesRef = FeaturesRef()
    features_at_cutoff: bool = False  # read each fold's training features at the version current at its cutoff
    labels: EvalLabelsConfig = EvalLabelsConfig()
    key_columns: list[str] = Field(default_factory=lambda: ["entity_id", "event_ts"])
    event_time_column: str = "event_ts"
    folds: FoldsConfig = FoldsConfig()
    recipe: RecipeConfig = RecipeConfig()
    refit: RefitConfig = RefitConfig()
    baseline: BaselineConfig = BaselineConfig()
    metrics: EvalMetricsConfig = EvalMetricsConfig()
    slices: list[list[str]] = Field(default_factory=lambda: [["segment"], ["channel"]])
    min_support: int = Field(200, ge=1)
    seed: int = 7
    output_table: str = "backtest_metrics"
    ray: RayConfig = RayConfig()
    run: RunConfig = RunConfig()


class DemoDataConfig(Model):
    start_date: str = "2026-01-01"
    days: int = Field(8, ge=2)
    rows_per_day: int = Field(20_000, ge=100)
    n_features: int = Field(50, ge=8)
    train_days: int = Field(3, ge=1)
    seed: int = 7

    @field_validator("start_date")
    @classmethod
    def _start_day(cls, v: str) -> str:
        return check_day(v)


class DemoModelsConfig(Model):
    xgb_name: str = "lakescore-demo-xgb"
    torch_name: str = "lakescore-demo-mlp"
    champion: Literal["xgb", "torch"] = "xgb"
    xgb_trees: int = Field(200, ge=1)
    xgb_depth: int = Field(6, ge=1)


class DemoConfig(Model):
    engine: Literal["ray", "spark"] = "ray"
    lake: LakeConfig = LakeConfig()
    mlflow: MlflowConfig = MlflowConfig()
    data: DemoDataConfig = DemoDataConfig()
    models: DemoModelsConfig = DemoModelsConfig()


# ----------------------------------------------------------------------------------------------- loading


class _DateSafeLoader(yaml.SafeLoader):
    """SafeLoader that keeps ISO dates as strings (partition values are strings)."""


_DateSafeLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_override(item: str) -> tuple[list[str], object]:
    if "=" not in item or item.startswith("="):
        raise ConfigError(f"override {item!r} is not dotted.key=value; example: input.ds=2026-01-03")
    key, raw = item.split("=", 1)
    try:
        value = yaml.load(raw, Loader=_DateSafeLoader) if raw else ""  # dates stay strings, as in files
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())[:160]
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({first}); quote strings that hold "
                          "YAML syntax, e.g. drift.columns='[\"f0?\"]'") from e
    return key.split("."), value


def _set(tree: dict, path: list[str], value: object, origin: str) -> None:
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {origin!r}: {'.'.join(path[: i + 1])} is a value, not a section")
        node = child
    node[path[-1]] = value


def load_config(cls: type[Model], path: str | os.PathLike | None, overrides: list[str] = (),
                key: str | None = None) -> Model:
    """Read YAML at `path`, apply dotted overrides, validate into `cls`; errors are ConfigError (exit 2).

    `key` names the config key that gave `path` (e.g. "input.contract"), for the message when the file is missing.
    """
    tree: dict = {}
    where = "the command line"
    if path is not None:
        where = str(path)
        p = Path(path)
        if not p.is_file():
            if key:
                raise ConfigError(f"{key}: file {where} not found (a relative path starts at {os.getcwd()}); "
                                  f"set {key} to an existing file")
            raise ConfigError(f"config file {where} not found; pass --config conf/<job>.yaml")
        try:
            loaded = yaml.load(p.read_text(), Loader=_DateSafeLoader)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {where} is not valid YAML: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {where} must hold a mapping at the top level")
        tree = loaded or {}
    for item in overrides:
        keys, value = parse_override(item)
        _set(tree, keys, value, item)
    try:
        return cls.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_describe(e, cls, where)) from e


def _describe(e: ValidationError, cls: type[Model], where: str) -> str:
    parts = []
    for err in e.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _section(cls, [str(x) for x in err["loc"][:-1]])
            known = sorted(parent.model_fields) if parent else []
            parts.append(f"unknown key '{loc}' in {where} (or an override); known keys here: {', '.join(known)}")
        elif err["type"] == "missing":
            parts.append(f"missing required key '{loc}' in {where}")
        else:
            parts.append(f"bad value for '{loc}' in {where}: {err['msg'].removeprefix('Value error, ')}")
    more = f" (+{len(e.errors()) - 3} more)" if len(e.errors()) > 3 else ""
    return "; ".join(parts) + more


def _section(cls: type[Model], path: list[str]) -> type[Model] | None:
    node = cls
    for part in path:
        field = node.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, Model)):
            return None
        node = ann
    return node


# ------------------------------------------------------------------------------------------------- paths


def absolute_path(path: str, base: str | os.PathLike | None = None) -> str:
    """A path or URL made absolute against `base` (default the working directory); URLs are kept."""
    if is_url(path):
        return path
    return str((Path(base or os.getcwd()) / os.path.expanduser(path)).resolve())


def absolute_tracking_uri(uri: str, base: str | os.PathLike | None = None) -> str:
    """sqlite:///relative.db → sqlite:////abs/relative.db; other URIs unchanged."""
    m = re.fullmatch(r"sqlite:///(.+)", uri)
    if m and not m.group(1).startswith("/"):
        return "sqlite:///" + absolute_path(m.group(1), base)
    if not is_url(uri):
        return absolute_path(uri, base)
    return uri


def relative_paths(cfg: Model) -> list[str]:
    """Dotted keys of `cfg` that still hold relative paths (refused on a remote cluster)."""
    found = []
    lake = getattr(cfg, "lake", None)
    if lake is not None and not is_url(lake.root) and not os.path.isabs(lake.root):
        found.append("lake.root")
    ml = getattr(cfg, "mlflow", None)
    if ml is not None:
        for key in ("tracking_uri", "registry_uri"):
            uri = getattr(ml, key)
            if uri and absolute_tracking_uri(uri, "/x") != absolute_tracking_uri(uri, "/y"):
                found.append(f"mlflow.{key}")
        if not is_url(ml.artifact_root) and not os.path.isabs(ml.artifact_root):
            found.append("mlflow.artifact_root")
    return found


def resolve_paths(cfg: Model, base: str | os.PathLike | None = None) -> Model:
    """A copy of `cfg` with lake root and MLflow locations absolute (or URLs)."""
    updates = {}
    if getattr(cfg, "lake", None) is not None:
        updates["lake"] = cfg.lake.model_copy(update={"root": absolute_path(cfg.lake.root, base)})
    if getattr(cfg, "mlflow", None) is not None:
        ml = cfg.mlflow
        updates["mlflow"] = ml.model_copy(
            update={
                "tracking_uri": absolute_tracking_uri(ml.tracking_uri, base),
                "registry_uri": absolute_tracking_uri(ml.registry_uri, base) if ml.registry_uri else None,
                "artifact_root": absolute_path(ml.artifact_root, base),
            }
        )
    return cfg.model_copy(update=updates)


def table_uri(lake: LakeConfig, table: str) -> str:
    """Table paths are relative to lake.root unless absolute or URLs."""
    if is_url(table) or os.path.isabs(table):
        return table
    root = lake.root.rstrip("/")
    return f"{root}/{table}"


# ------------------------------------------------------------------------------------------------- hash

# Execution settings do not change a single output value, so they stay out of the hash: the same
# input, model and output settings give the same config_hash on Ray and on Spark.
_EXECUTION_KEYS = {"engine", "ray", "spark", "run"}


def config_hash(cfg: Model) -> str:
    data = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in _EXECUTION_KEYS}
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def to_json(cfg: Model) -> str:
    return json.dumps(cfg.model_dump(mode="json"), sort_keys=True)
