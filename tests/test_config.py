import pytest

from engine.config import (DemoConfig, ScoreConfig, absolute_tracking_uri, config_hash, load_config, relative_paths,
                           resolve_paths, table_uri)
from engine.errors import ConfigError

MODEL = "model.uri=models:/m@champion"


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_unknown_key_names_the_key_the_file_and_the_known_keys(tmp_path):
    p = write(tmp_path, "input:\n  tabel: features\nmodel:\n  uri: models:/m@a\n")
    with pytest.raises(ConfigError) as e:
        load_config(ScoreConfig, p)
    msg = str(e.value)
    assert "input.tabel" in msg and str(p) in msg and "table" in msg and "\n" not in msg
    assert e.value.exit_code == 2


def test_wrong_type_and_missing_file_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="output.target_file_rows"):
        load_config(ScoreConfig, None, [MODEL, "output.target_file_rows=lots"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(ScoreConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="missing required key 'model'"):
        load_config(ScoreConfig, None, [])
    with pytest.raises(ConfigError, match="models:/"):
        load_config(ScoreConfig, None, ["model.uri=runs:/abc/model"])


def test_overrides_are_typed_and_dates_stay_strings(tmp_path):
    p = write(tmp_path, "model:\n  uri: models:/m/3\ninput:\n  ds: 2026-01-02\n")
    cfg = load_config(ScoreConfig, p, ["input.version=4", "ray.num_cpus=0.25", "input.key_columns=[a, b]"])
    assert cfg.input.ds == "2026-01-02" and cfg.input.version == 4
    assert cfg.ray.num_cpus == 0.25 and cfg.input.key_columns == ["a", "b"]
    cfg = load_config(ScoreConfig, None, [MODEL, "input.ds=2026-01-01..2026-01-09"])
    assert cfg.input.ds == "2026-01-01..2026-01-09"
    with pytest.raises(ConfigError, match="input.ds"):
        load_config(ScoreConfig, None, [MODEL, "input.ds=yesterday"])
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(ScoreConfig, None, [MODEL, "novalue"])


def test_hash_ignores_execution_settings_but_not_semantics():
    a = load_config(ScoreConfig, None, [MODEL])
    assert config_hash(a) == config_hash(load_config(ScoreConfig, None, [MODEL, "ray.num_cpus=1", "engine=spark"]))
    assert config_hash(a) != config_hash(load_config(ScoreConfig, None, [MODEL, "output.score_column=p"]))
    assert len(config_hash(a)) == 16


def test_paths_resolve_to_absolute_and_relative_ones_are_reported(tmp_path):
    cfg = load_config(DemoConfig, None, [])
    assert set(relative_paths(cfg)) == {"lake.root", "mlflow.tracking_uri", "mlflow.artifact_root"}
    r = resolve_paths(cfg, tmp_path)
    assert r.lake.root == str(tmp_path / "lake") and relative_paths(r) == []
    assert r.mlflow.tracking_uri == f"sqlite:///{tmp_path}/mlruns.db"
    assert absolute_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert table_uri(r.lake, "features") == f"{tmp_path}/lake/features"
    assert table_uri(r.lake, "s3://b/t") == "s3://b/t"
    s3 = resolve_paths(load_config(DemoConfig, None, ["lake.root=s3://bucket/lake"]), tmp_path)
    assert s3.lake.root == "s3://bucket/lake"
    assert table_uri(s3.lake, "scores") == "s3://bucket/lake/scores"
    art = resolve_paths(load_config(DemoConfig, None, ["mlflow.artifact_root=s3://bucket/mlartifacts"]), tmp_path)
    assert art.mlflow.artifact_root == "s3://bucket/mlartifacts" and relative_paths(art) == []


def test_storage_options_from_yaml_or_overrides_are_strings():
    cfg = load_config(ScoreConfig, None, [MODEL, "lake.storage_options.AWS_ALLOW_HTTP=true",
                                          "lake.storage_options.AWS_ENDPOINT_URL=http://127.0.0.1:9000",
                                          "lake.storage_options.max_retries=3"])
    assert cfg.lake.storage_options == {"AWS_ALLOW_HTTP": "true", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
                                        "max_retries": "3"}


def test_credentials_in_config_are_refused():
    with pytest.raises(ConfigError, match="environment"):
        load_config(ScoreConfig, None, [MODEL, "lake.storage_options={AWS_SECRET_ACCESS_KEY: x}"])


def test_an_override_that_is_not_valid_yaml_is_a_config_error():
    from engine.config import EvaluateConfig

    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(EvaluateConfig, None, ["drift.columns=[f0?]"])
    assert load_config(EvaluateConfig, None, ['drift.columns=["f0?"]']).drift.columns == ["f0?"]


@pytest.mark.parametrize("value", ["2026-13-03", "2026-02-30", "2026-01-05..2026-01-02", "2026-01-01..2026-13-01"])
def test_a_bad_date_is_a_config_error_naming_the_key_and_value(value):
    """input.ds=2026-13-03 used to crash YAML's date parser (exit 1, "this is a bug")."""
    with pytest.raises(ConfigError) as e:
        load_config(ScoreConfig, None, [MODEL, f"input.ds={value}"])
    assert "input.ds" in str(e.value) and value in str(e.value) and e.value.exit_code == 2


def test_dates_of_every_job_are_checked_at_load(tmp_path):
    from engine.config import BacktestConfig, EvaluateConfig

    for cls, key, bad in [(EvaluateConfig, "window", "2026-01-32"), (EvaluateConfig, "as_of", "2026-13-01T00:00:00"),
                          (EvaluateConfig, "drift.reference", "2026-01-01..2026-00-03"),
                          (BacktestConfig, "folds.cutoffs", "[2026-01-02, 2026-02-31]"),
                          (DemoConfig, "data.start_date", "2026-99-01")]:
        with pytest.raises(ConfigError) as e:
            load_config(cls, None, [f"{key}={bad}"])
        assert key in str(e.value) and e.value.exit_code == 2, (key, str(e.value))
    p = write(tmp_path, "model:\n  uri: models:/m/3\ninput:\n  ds: 2026-13-03\n")
    with pytest.raises(ConfigError, match=r"input\.ds.*2026-13-03"):
        load_config(ScoreConfig, p)
    cfg = load_config(EvaluateConfig, None, ["as_of=2026-01-09T00:00:00Z", "window=2026-01-01..2026-01-03"])
    assert cfg.as_of == "2026-01-09T00:00:00Z" and cfg.window == "2026-01-01..2026-01-03"
    assert load_config(BacktestConfig, None, ["folds.cutoffs=[2026-01-02]"]).folds.cutoffs == ["2026-01-02"]


def test_a_missing_contract_file_names_input_contract(tmp_path):
    from contracts.spec import load_contract

    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as e:
        load_contract(missing)
    msg = str(e.value)
    assert "input.contract" in msg and str(missing) in msg and "--config" not in msg and e.value.exit_code == 2
