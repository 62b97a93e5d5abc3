"""PII never leaves: values planted in failing rows, in PII columns the job reads, are looked for everywhere a real
job run left something (output tables, quarantine values, report examples, logs, MLflow)."""
from __future__ import annotations

import json
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
