"""PII never leaves: a planted value in failing rows is looked for everywhere a real job run left something."""
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
from engine.demo.data import make_day

pytestmark = pytest.mark.slow
PLANTED = "pii.canary.90210@example.com"
PHONE = "+1-555-0199-4242"


def decoded_tables(lake: Path) -> str:
    """Every Delta table under the lake, decoded (Parquet is compressed: grepping files proves nothing)."""
    out = []
    for log in lake.glob("*/_delta_log"):
        t = DeltaTable(str(log.parent)).to_pyarrow_table()
        out.append(json.dumps(t.to_pylist(), default=str))
    return "\n".join(out)


def text_under(root: Path) -> str:
    parts = []
    for p in root.rglob("*"):
        if p.is_file() and p.stat().st_size < 50_000_000:
            parts.append(p.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(parts)


@pytest.mark.parametrize("mode", ["fail_closed", "quarantine"])
def test_planted_pii_is_nowhere_the_job_left_anything(lake, demo_root, tmp_path, mode):
    t = make_day(DAYS, "2026-01-05", ROWS, 50, seed=31)[0]
    email, phone, f05 = t.column("email").to_pylist(), t.column("phone").to_pylist(), t.column("f05").to_pylist()
    for i in (3, 4):
        email[i], phone[i], f05[i] = PLANTED, PHONE, 1e6  # the failing rows carry the PII
    for name, vals in (("email", email), ("phone", phone), ("f05", f05)):
        t = t.set_column(t.schema.get_field_index(name), name, pa.array(vals, t.schema.field(name).type))
    write_deltalake(str(lake / "features"), t, partition_by=["ds"], mode="append")
    assert PLANTED in decoded_tables(lake) and PHONE in decoded_tables(lake)  # positive control: the scanner sees it

    contract = tmp_path / "c.yaml"
    contract.write_text((ROOT / "conf" / "contracts" / "features.yaml").read_text().replace("mode: fail_closed", f"mode: {mode}")
                        + "bad_row_budget: 0.01\n")
    ray_tmp = tempfile.mkdtemp(prefix="lsp", dir="/tmp")  # Ray's session logs (driver and workers) land here
    mlart = tmp_path / "mlartifacts"
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(ROOT)}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "jobs.score", "--config", "conf/score.yaml", f"lake.root={lake}",
             f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlruns.db", f"mlflow.artifact_root={mlart}",
             f"mlflow.registry_uri=sqlite:///{demo_root}/mlruns.db", "model.uri=models:/t-xgb@champion",
             f"input.contract={contract}", "input.ds=2026-01-05"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        expected = 3 if mode == "fail_closed" else 0
        assert out.returncode == expected, out.stderr[-3000:]
        if mode == "quarantine":
            q = DeltaTable(str(lake / "quarantine")).to_pyarrow_table()
            assert q.num_rows == 2  # the failing rows are there, without their PII
        logs = text_under(Path(ray_tmp))
        assert "lakescore" in out.stderr and len(logs) > 1000  # the scanners read real output
        places = {
            "stdout/stderr": out.stdout + out.stderr,
            "ray driver and worker logs": logs,
            "reports": text_under(lake / "_reports"),
            "output tables": _outputs(lake),
            "mlflow artifacts": text_under(mlart) if mlart.exists() else "",
            "mlflow params": _mlflow_params(f"sqlite:///{tmp_path}/mlruns.db"),
        }
        assert places["reports"] and places["mlflow artifacts"], "a report must exist and be logged"
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
