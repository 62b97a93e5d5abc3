"""One typed model per job (score, validate, evaluate, backtest, demo) and the sections only that job reads.

Imports: engine.config.sections (the shared sections) and pydantic; within engine/config only the package's
__init__ imports this module.
"""
from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from engine.config.sections import (ADDED, EvalLabelsConfig, EvalMetricsConfig, FeaturesRef, InputConfig,
                                    LakeConfig, MlflowConfig, Model, ModelConfig, OutputConfig, RayConfig, RunConfig,
                                    SparkConfig, TableRef, check_day, check_days, check_model_uri)


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


class EvalFeaturesConfig(FeaturesRef):
    slice_columns: list[str] = Field(default_factory=lambda: ["region", "segment", "channel"])


class EvalModelsConfig(Model):
    # The champion (usually the registry alias); every challenger is compared with it on the same rows.
    champion: str = "models:/lakescore-demo-xgb@champion"
    challengers: list[str] = Field(default_factory=list)

    @field_validator("champion")
    @classmethod
    def _champion_uri(cls, v: str) -> str:
        return check_model_uri(v)

    @field_validator("challengers")
    @classmethod
    def _challenger_uris(cls, v: list[str]) -> list[str]:
        return [check_model_uri(u) for u in v]


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


class MaturityGate(Model):
    metric: str  # the metric whose gates need mature labels (a failure names it)
    days: int = Field(ge=1)  # every event of the window is at least this many days old at as_of
    min_labelled_fraction: float = Field(0.0, ge=0, le=1)  # and at least this share of its rows labelled by as_of


class GatesConfig(Model):
    min_support: int = Field(200, ge=1)  # a gated slice with fewer rows fails the gate
    thresholds: list[ThresholdGate] = Field(default_factory=list)
    max_regression: list[RegressionGate] = Field(default_factory=list)
    min_maturity: list[MaturityGate] = Field(default_factory=list, json_schema_extra=ADDED)  # labels old enough per metric (gates docstring)
    max_immature_fraction: float = Field(0.2, ge=0, le=1)  # more scored rows than this without a label by as_of fails
    promote: bool = False  # on pass, move the champion's alias to the (single) challenger of the same model name


class EvalDriftConfig(Model):
    reference: str | None = None  # days of the features table, "a..b"; null: no drift section
    columns: list[str] = Field(default_factory=list)  # glob patterns of float features; empty: every float feature
    bins: int = Field(10, ge=2)
    psi_max: float = Field(0.25, gt=0)
    # Per (feature, slice): flagged when PSI > psi_max AND the Wasserstein-1 distance, in reference standard
    # deviations, > wasserstein_max, with min_support rows on both sides (engine.evaluation.slice_drift)
    wasserstein_max: float = Field(0.1, gt=0, json_schema_extra=ADDED)
    top_slices: int = Field(10, ge=0, json_schema_extra=ADDED)  # (feature, slice) pairs drawn in the report
    sample_rows: int = Field(5000, ge=0)  # rows per window for the Evidently page; 0: no page

    @field_validator("reference")
    @classmethod
    def _reference_form(cls, v: str | None) -> str | None:
        return v if v is None else check_days(v)


class EvalMaturityConfig(Model):
    days: int = Field(14, ge=0, le=366)  # label maturity curve at event + 1..days days; 0: no curve
    event_ts_column: str = "event_ts"  # the labels table's event time: a label's delay is label_ts - event_ts


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
    maturity: EvalMaturityConfig = Field(EvalMaturityConfig(), json_schema_extra=ADDED)
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
        return check_model_uri(v)


class BacktestConfig(Model):
    engine: Literal["ray", "spark"] = "ray"
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
    spark: SparkConfig = SparkConfig()
    run: RunConfig = RunConfig()


class DemoDataConfig(Model):
    start_date: str = "2026-01-01"
    days: int = Field(8, ge=2)
    rows_per_day: int = Field(20_000, ge=100)
    n_features: int = Field(50, ge=8)
    train_days: int = Field(3, ge=1)
    seed: int = 7
    slice_drift: bool = True  # plant a drift of f09 in region=east from the 4th day (engine.demo.data.SLICE_DRIFT)

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
