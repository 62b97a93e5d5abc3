"""PII never leaves: values planted in failing rows, in PII columns the job reads, are looked for everywhere a real
job run left something (output tables, quarantine values, report examples, logs, MLflow)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import DAYS, ROOT, ROWS
from contracts.spec import load_contract
from engine.demo.data import make_day

pytestmark = pytest.mark.slow
PLANTED = "pii.canary.90210@example.com"
PHONE = "+1-555-0199-4242"
DAY = "2026-01-05"


def text_under(root: Path) -> str:
    parts = []
    for p in root.rglob("*"):
        if p.is_file() and p.stat().st_size < 50_000_000:
            parts.append(p.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


def pii_contract(tmp_path: Path, mode: str) -> Path:
    """features.yaml with its PII columns non-nullable: the not_null check reads them, so they are in every batch."""
    text = (ROOT / "conf" / "contracts" / "features.yaml").read_text().replace("mode: fail_closed", f"mode: {mode}")
    for col in ("email", "phone"):
        text = text.replace(f"  {col}: {{type: string, pii: true}}", f"  {col}: {{type: string, pii: true, nullable: false}}")
    assert text.count("pii: true, nullable: false") == 2
    p = tmp_path / "c.yaml"
    p.write_text(text + "bad_row_budget: 0.01\n")
    return p


@pytest.mark.parametrize("mode", ["fail_closed", "quarantine"])
def test_planted_pii_is_nowhere_the_job_left_anything(lake, demo_root, tmp_path, mode):
    t = make_day(DAYS, DAY, ROWS, 50, seed=31)[0]
    ids = t.column("entity_id").to_pylist()
    email, phone, f05 = t.column("email").to_pylist(), t.column("phone").to_pylist(), t.column("f05").to_pylist()
    email[3], phone[3] = None, PHONE  # fails not_null:email (a check that reads the PII column)
    email[4], phone[4], f05[4] = PLANTED, PHONE, 1e6  # fails range:f05: quoted in examples, quarantined with its values
    for name, vals in (("email", email), ("phone", phone), ("f05", f05)):
        t = t.set_column(t.schema.get_field_index(name), name, pa.array(vals, t.schema.field(name).type))
    write_deltalake(str(lake / "features"), t, partition_by=["ds"], mode="append")
    contract = pii_contract(tmp_path, mode)

    # Positive controls on the input: the planted values sit in the failing rows, in columns the job reads.
    snap = DeltaTable(str(lake / "features"))
    day = {r["entity_id"]: r for r in snap.to_pyarrow_table(filters=[("ds", "=", DAY)]).to_pylist()}
    assert (day[ids[4]]["email"], day[ids[4]]["phone"], day[ids[4]]["f05"]) == (PLANTED, PHONE, 1e6)
    assert (day[ids[3]]["email"], day[ids[3]]["phone"]) == (None, PHONE)
    rc = load_contract(contract).resolve(pa.schema(snap.schema().to_arrow()))
    assert {"email", "phone"} <= set(rc.check_columns()) and rc.pii == {"email", "phone"}

    ray_tmp = tempfile.mkdtemp(prefix="lsp", dir="/tmp")  # Ray's session logs (driver and workers) land here
    mlart = tmp_path / "mlartifacts"
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(ROOT)}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "jobs.score", "--config", "conf/score.yaml", f"lake.root={lake}",
             f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlruns.db", f"mlflow.artifact_root={mlart}",
             f"mlflow.registry_uri=sqlite:///{demo_root}/mlruns.db", "model.uri=models:/t-xgb@champion",
             f"input.contract={contract}", f"input.ds={DAY}"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == (3 if mode == "fail_closed" else 0), out.stderr[-3000:]
        places = {
            "stdout/stderr": out.stdout + out.stderr,
            "ray driver and worker logs": text_under(Path(ray_tmp)),
            "reports": text_under(lake / "_reports"),
            "output tables": _outputs(lake),
            "mlflow artifacts": text_under(mlart) if mlart.exists() else "",
            "mlflow params": _mlflow_params(f"sqlite:///{tmp_path}/mlruns.db"),
        }
        # Positive controls on the outputs: the failing rows reached each place (without their PII).
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert "lakescore" in out.stderr and summary["run_id"] in places["reports"]
        (rep,) = [json.loads(p.read_text()) for p in (lake / "_reports" / "score").glob("*.json")]
        found = {v["check"]: v for v in rep["units"][0]["violations"]}
        assert any(e["entity_id"] == ids[4] and e["value"] == 1e6 for e in found["range:f05"]["examples"])
        assert any(e["entity_id"] == ids[3] for e in found["not_null:email"]["examples"])  # the PII rows are quoted
        if mode == "quarantine":
            q = {json.loads(r["key"])["entity_id"]: r for r in DeltaTable(str(lake / "quarantine")).to_pyarrow_table().to_pylist()}
            assert sorted(q) == sorted([ids[3], ids[4]]) and summary["rows_quarantined"] == 2
            assert q[ids[3]]["failed_checks"] == ["not_null:email"] and q[ids[4]]["failed_checks"] == ["range:f05"]
            values = json.loads(q[ids[4]]["values"])
            assert values["f05"] == 1e6 and values["region"] == day[ids[4]]["region"]  # its non-PII values are there
        assert summary["run_id"] in places["mlflow params"] and rep["contract_hash"] in places["mlflow artifacts"]
        for where, text in places.items():
            assert PLANTED not in text and PHONE not in text, f"PII found in {where}"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _outputs(lake: Path) -> str:
    """The tables the job wrote (not its input)."""
    parts = []
    for name in ("scores", "quarantine"):
        if (lake / name / "_delta_log").exists():
            parts.append(json.dumps(DeltaTable(str(lake / name)).to_pyarrow_table().to_pylist(), default=str))
    return "\n".join(parts)


def _mlflow_params(uri: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return json.dumps([r.data.params for r in runs] + [r.data.tags for r in runs])


# ------------------------------------------------------------------------------ evaluate and backtest (issue 18/11)

INCOME = 987654.25  # planted in a float PII column (exactly representable: it prints the same everywhere)
CITY = "pii-canary-city-7731"  # planted in a string PII column
EVAL_DAYS, REF_DAYS = "2026-01-03..2026-01-04", "2026-01-01..2026-01-02"


def plant_pii_columns(lake: Path) -> None:
    """Two PII columns added to every day of the features table: `income` (float, the canary in 40 % of the rows, so
    it is a quantile edge of any histogram of it) and `home_city` (string, the canary in 30 %)."""
    import numpy as np

    t = DeltaTable(str(lake / "features")).to_pyarrow_table()
    rng = np.random.default_rng(5)
    income = rng.normal(50_000, 5_000, t.num_rows).round(2)
    income[rng.random(t.num_rows) < 0.4] = INCOME
    city = np.where(rng.random(t.num_rows) < 0.3, CITY, rng.choice(["springfield", "shelbyville"], t.num_rows))
    t = t.append_column("income", pa.array(income, pa.float64())).append_column("home_city", pa.array(city.tolist()))
    write_deltalake(str(lake / "features"), t, partition_by=["ds"], mode="overwrite", schema_mode="overwrite")


def income_contract(tmp_path: Path) -> Path:
    """The demo contract with the two planted columns declared pii."""
    line = "  phone: {type: string, pii: true}\n"
    text = (ROOT / "conf" / "contracts" / "features.yaml").read_text()
    assert line in text
    p = tmp_path / "features-pii.yaml"
    p.write_text(text.replace(line, line + "  income: {type: float, pii: true}\n  home_city: {type: string, pii: true}\n"))
    return p


def canaries_in(text: str) -> bool:
    return str(INCOME) in text or CITY in text


def places_with_canaries(lake: Path, tmp_path: Path, logs: str) -> list[str]:
    """Every place a job run leaves something, where a canary shows: each table the jobs wrote (rows and commit
    metadata), report files, MLflow artifacts, params and tags, and the log lines."""
    places = {"logs": logs}
    for d in sorted(p for p in lake.iterdir() if p.is_dir() and p.name not in ("features", "labels")):
        if (d / "_delta_log").exists():
            table = DeltaTable(str(d))
            places[f"{d.name} rows"] = json.dumps(table.to_pyarrow_table().to_pylist(), default=str)
            places[f"{d.name} commits"] = json.dumps(table.history(), default=str)
        else:
            places[f"files under {d.name}"] = text_under(d)
    places["mlflow artifacts"] = text_under(tmp_path / "mlart") if (tmp_path / "mlart").exists() else ""
    places["mlflow params and tags"] = _mlflow_params(f"sqlite:///{tmp_path}/mlruns.db")
    return sorted(where for where, text in places.items() if canaries_in(text))


class LogText(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def evaluate_and_backtest(lake: Path, demo_root: Path, tmp_path: Path, contract: Path | None, *bt_extra: str):
    """Score the planted lake with both models, evaluate (default drift columns, an Evidently page, MLflow on) and
    backtest (income matched by a recipe pattern); the log lines they wrote."""
    from backtests.runner import run_backtest
    from conftest import MLP, XGB, score_config
    from engine.config import BacktestConfig, EvaluateConfig, load_config, resolve_paths
    from engine.executor import LocalExecutor
    from jobs.evaluate import run_evaluate
    from jobs.score import run_score

    for uri in (f"models:/{XGB}@champion", f"models:/{MLP}/1"):
        run_score(score_config(lake, demo_root, f"model.uri={uri}"), LocalExecutor())
    ml = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlruns.db",
          f"mlflow.registry_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={tmp_path}/mlart",
          f"features.contract={contract or 'null'}"]
    handler, ours = LogText(), logging.getLogger("lakescore")
    level = ours.level
    ours.setLevel(logging.INFO)
    ours.addHandler(handler)
    try:
        run_evaluate(resolve_paths(load_config(EvaluateConfig, None, [
            *ml, f"models.champion=models:/{XGB}@champion", f"models.challengers=[models:/{MLP}/1]",
            f"window={EVAL_DAYS}", f"drift.reference={REF_DAYS}", "drift.sample_rows=400", "min_support=50",
            "gates.min_support=50", "gates.max_immature_fraction=1", "metrics.bootstrap=20"])), LocalExecutor())
        run_backtest(resolve_paths(load_config(BacktestConfig, None, [
            *ml, "baseline.kind=base_rate", "folds.train_days=2", "folds.n_folds=1", "recipe.trees=10",
            "recipe.depth=3", "metrics.bootstrap=20", "min_support=50", "recipe.features=[f*, inc*]", *bt_extra])),
            LocalExecutor())
    finally:
        ours.removeHandler(handler)
        ours.setLevel(level)
    return "\n".join(handler.lines)


def test_evaluate_and_backtest_never_read_pii_columns_of_the_contract(lake, demo_root, tmp_path):
    plant_pii_columns(lake)
    contract = income_contract(tmp_path)
    # Positive control on the input: both canaries are in the features table the jobs read.
    feats = DeltaTable(str(lake / "features")).to_pyarrow_table()
    assert canaries_in(json.dumps(feats.column("income").to_pylist()))
    assert canaries_in(json.dumps(feats.column("home_city").to_pylist()))
    assert load_contract(contract).resolve(feats.schema).pii == {"email", "phone", "income", "home_city"}

    logs = evaluate_and_backtest(lake, demo_root, tmp_path, contract)
    assert places_with_canaries(lake, tmp_path, logs) == []
    # The jobs did run and log: the evaluation's drift covers the non-PII floats, the backtest trained on them.
    (ref,) = [json.loads(p.read_text()) for p in (lake / "_reports" / "evaluate").rglob("report.json")]
    drifted = {p["column"] for p in ref["drift"]["psi"]}
    assert "f00" in drifted and "income" not in drifted and ref["drift"]["evidently_html"] == "drift.html"
    assert "f00" in text_under(tmp_path / "mlart") and "region" in text_under(tmp_path / "mlart")


def test_without_the_contract_the_same_scan_finds_both_canaries(lake, demo_root, tmp_path):
    """The scan's positive control on the outputs: with no contract (main's behaviour) the float canary reaches the
    drift reference and the reports, and a categorical PII column's canary the model spec logged to MLflow."""
    plant_pii_columns(lake)
    logs = evaluate_and_backtest(lake, demo_root, tmp_path, None,
                                 "recipe.categorical=[region, segment, channel, home_city]")
    found = places_with_canaries(lake, tmp_path, logs)
    assert found == ["drift_reference rows", "files under _reports", "mlflow artifacts"], found
    assert str(INCOME) in json.dumps(DeltaTable(str(lake / "drift_reference")).to_pyarrow_table().to_pylist(), default=str)
    assert CITY in text_under(tmp_path / "mlart")  # the backtest's preprocess_spec.json


@pytest.mark.parametrize("job, override, key, column", [
    ("evaluate", "drift.columns=[f00, income]", "drift.columns", "income"),
    ("evaluate", "features.slice_columns=[region, home_city]|slices=[[home_city]]", "features.slice_columns", "home_city"),
    ("backtest", "recipe.categorical=[region, home_city]", "recipe.categorical", "home_city"),
    ("backtest", "slices=[[home_city]]", "slices", "home_city"),
])
def test_a_config_naming_a_pii_column_is_exit_2_and_writes_nothing(ray_local, lake, demo_root, tmp_path, capfd, job,
                                                                    override, key, column):
    from conftest import XGB
    from jobs.backtest import main as backtest_main
    from jobs.evaluate import main as evaluate_main

    plant_pii_columns(lake)
    contract = income_contract(tmp_path)
    if job == "evaluate":
        from conftest import score_config
        from engine.executor import LocalExecutor
        from jobs.score import run_score

        run_score(score_config(lake, demo_root), LocalExecutor())
    before = sorted(p.name for p in lake.iterdir() if p.name != "runs")  # the ledger records every run
    args = ["--config", str(ROOT / "conf" / f"{job}.yaml"), f"lake.root={lake}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlruns.db", f"mlflow.registry_uri=sqlite:///{demo_root}/mlruns.db",
            f"mlflow.artifact_root={tmp_path}/mlart", f"features.contract={contract}", *override.split("|")]
    if job == "evaluate":
        code = evaluate_main([*args, f"models.champion=models:/{XGB}@champion", "models.challengers=[]",
                              "window=all", "drift.reference=2026-01-01..2026-01-02", "engine=ray"])
    else:
        code = backtest_main([*args, "baseline.kind=base_rate"])
    out, err = capfd.readouterr()
    assert code == 2, err[-2000:]
    (line,) = [x for x in err.splitlines() if "tags pii" in x] or [err[-2000:]]
    assert f"{key} names column {column!r}" in line and str(contract) in line
    assert json.loads(out.strip().splitlines()[-1])["status"] != "ok"
    assert sorted(p.name for p in lake.iterdir() if p.name != "runs") == before  # no output table, no report
    assert not canaries_in(out + err)
