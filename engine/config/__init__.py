"""Typed job configuration: YAML files validated by pydantic models, dotted overrides, path resolution, hash.

Config is read once by `load_config` and handed down as frozen models; nobody downstream reads raw dicts.
The package's public face (`from engine.config import ScoreConfig, load_config, table_uri`, used by jobs,
notebooks and tests); inside engine/ a module imports the precise one:

- `sections`  the sections more than one job shares (lake, mlflow, ray, spark, run, input, metrics, ...)
- `jobs`      one model per job: ScoreConfig, ValidateConfig, EvaluateConfig, BacktestConfig, DemoConfig
- `load`      YAML loader, dotted overrides, resolve_paths/relative_paths, config_hash, to_json
- `paths`     table_uri, is_url, absolute paths

Imports: sections <- paths <- load, and sections <- jobs; this file imports all four and nothing imports it back
from inside the package.
"""
from engine.config.jobs import (BacktestConfig, BaselineConfig, DemoConfig, DemoDataConfig, DemoModelsConfig,
                                EvalDriftConfig, EvalFeaturesConfig, EvalModelsConfig, EvalOutputConfig,
                                EvaluateConfig, FoldsConfig, GatesConfig, RecipeConfig, RefitConfig, RegressionGate,
                                ScoreConfig, ThresholdGate, ValidateConfig)
from engine.config.load import config_hash, load_config, parse_override, relative_paths, resolve_paths, to_json
from engine.lake.paths import absolute_path, absolute_tracking_uri, is_url, table_uri
from engine.config.sections import (EvalLabelsConfig, EvalMetricsConfig, FeaturesRef, InputConfig, LakeConfig,
                                    MlflowConfig, Model, ModelConfig, OutputConfig, RayConfig, RunConfig, SparkConfig,
                                    TableRef, check_day, check_days, check_model_uri)

__all__ = [
    "BacktestConfig", "BaselineConfig", "DemoConfig", "DemoDataConfig", "DemoModelsConfig", "EvalDriftConfig",
    "EvalFeaturesConfig", "EvalLabelsConfig", "EvalMetricsConfig", "EvalModelsConfig", "EvalOutputConfig",
    "EvaluateConfig", "FeaturesRef", "FoldsConfig", "GatesConfig", "InputConfig", "LakeConfig", "MlflowConfig", "Model",
    "ModelConfig", "OutputConfig", "RayConfig", "RecipeConfig", "RefitConfig", "RegressionGate", "RunConfig",
    "ScoreConfig", "SparkConfig", "TableRef", "ThresholdGate", "ValidateConfig", "absolute_path",
    "absolute_tracking_uri", "check_day", "check_days", "check_model_uri", "config_hash", "is_url", "load_config",
    "parse_override", "relative_paths", "resolve_paths", "table_uri", "to_json",
]
