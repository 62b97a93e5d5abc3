"""Enforcing a contract in a job: prepare it against a snapshot, judge each unit, write the report.

The row checks run in the workers' scoring pass (engine.scoring.score_chunk); the driver merges their
statistics and adds the partition checks here, so enforcing a contract costs no extra pass over the data.
Reports name tables, versions, partitions, checks and counts; examples quote key values and non-PII values only.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from contracts import partition as pchecks
from contracts.checks import CheckStats
from contracts.partition import Violation
from contracts.spec import load_contract
from engine.errors import ConfigError


class Enforcer:
    def __init__(self, contract_path: str, snap, key_columns: list[str], passthrough: list[str],
                 storage_options: dict | None = None):
        self.contract = load_contract(contract_path)
        self.path = contract_path
        self.snap = snap
        self.rc = self.contract.resolve(snap.schema)
        leaked = sorted(self.rc.pii & {*key_columns, *passthrough})
        if leaked:
            raise ConfigError(f"input.key_columns/passthrough_columns name PII columns {leaked} (tagged pii in "
                              f"{contract_path}); PII never reaches an output table")
        self.schema_violations = [Violation(check, col, None, msg) for check, col, msg in self.rc.schema_problems]
        from contracts.schemas import schema_verdict

        self.pandera_verdict = schema_verdict(self.rc, snap.schema)  # pandera's own view, in every report
        self.history = {d: snap.rows(d) or 0 for d in snap.partitions}
        self.edges: dict[str, np.ndarray] = {}
        self.ref_hist: dict[str, np.ndarray] = {}
        if self.contract.drift is not None and not self.schema_violations:
            self._reference(storage_options)
        self.units: dict[str, dict] = {}

    @property
    def quarantines(self) -> bool:
        return self.contract.mode == "quarantine"

    @property
    def digest(self) -> str:
        return self.contract.digest

    def _reference(self, storage_options) -> None:
        from deltalake import DeltaTable

        from engine.snapshot import select_partitions

        d = self.contract.drift
        days, _absent = select_partitions(self.snap, d.reference)
        if not days:
            raise ConfigError(f"contract {self.path}: drift reference window {d.reference} has no partitions in "
                              f"{self.snap.where()}; fix drift.reference")
        feats = pchecks.drift_features(self.rc)
        table = DeltaTable(self.snap.uri, version=self.snap.version, storage_options=storage_options or None)
        ref = table.to_pyarrow_table(filters=[("ds", "in", days)], columns=feats)
        self.edges = pchecks.reference_edges(ref, feats, d.bins)
        self.ref_hist = pchecks.reference_hist(ref, self.edges)

    def verdict(self, ds: str, rows: int, stats: CheckStats | None) -> list[Violation]:
        """Every violation of one unit (schema, rows, keys, volume, freshness, drift); empty means it passes."""
        out = list(self.schema_violations)
        if v := pchecks.volume(self.rc, ds, rows, self.history):
            out.append(v)
        if v := pchecks.freshness(self.rc, max(self.snap.partitions) if self.snap.partitions else None):
            out.append(v)
        if stats is not None:
            out += pchecks.row_violations(self.rc, ds, stats)
            out += pchecks.drift(self.rc, ds, stats, self.ref_hist)
        self.units[ds] = {"ds": ds, "rows": rows, "bad_rows": stats.bad_rows if stats else None,
                          "status": "fail" if out else "pass", "violations": [asdict(v) for v in out]}
        return out

    def report(self, job: str, run_id: str) -> dict:
        return {"job": job, "run_id": run_id, "table": self.snap.name, "version": self.snap.version,
                "contract": os.path.basename(self.path), "contract_hash": self.digest, "mode": self.contract.mode,
                "pandera_schema_verdict": [{"check": c, "column": col} for c, col in self.pandera_verdict],
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "units": [self.units[d] for d in sorted(self.units)]}

    def publish(self, root: str, job: str, run_id: str, mlflow_cfg=None, extra: dict | None = None) -> str:
        """Write the report under the lake and, when `mlflow_cfg.log_reports`, log it to MLflow too."""
        path = self.write_report(root, job, run_id)
        if mlflow_cfg is not None and mlflow_cfg.log_reports:
            failed = sum(u["status"] == "fail" for u in self.units.values())
            log_report(path, mlflow_cfg.tracking_uri, mlflow_cfg.artifact_root,
                       {"job": job, "run_id": run_id, "table": self.snap.name, "version": self.snap.version,
                        "contract_hash": self.digest, "units": len(self.units), "units_failed": failed, **(extra or {})})
        return path

    def write_report(self, root: str, job: str, run_id: str) -> str:
        """`<root>/_reports/<job>/<run_id>.json` and a short `.txt` summary beside it; returns the JSON path."""
        rep = self.report(job, run_id)
        d = Path(root) / "_reports" / job
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{run_id}.json"
        path.write_text(json.dumps(rep, indent=2, sort_keys=True, default=str))
        (d / f"{run_id}.txt").write_text(summary_text(rep))
        return str(path)


REPORT_EXPERIMENT = "lakescore-contract-reports"


def log_report(report_json: str, tracking_uri: str, artifact_root: str, params: dict) -> str:
    """Log a report (JSON and text) as artifacts of an MLflow run; returns the run id. Reports hold no PII."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(REPORT_EXPERIMENT)
    location = artifact_root if "://" in artifact_root else "file://" + artifact_root
    exp_id = exp.experiment_id if exp else client.create_experiment(REPORT_EXPERIMENT, artifact_location=location)
    run = client.create_run(exp_id, run_name=f"{params.get('job', 'job')}-{params.get('run_id', '')[:8]}")
    for k, v in params.items():
        client.log_param(run.info.run_id, k, str(v))
    client.log_artifact(run.info.run_id, report_json)
    client.log_artifact(run.info.run_id, report_json[: -len(".json")] + ".txt")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def summary_text(rep: dict) -> str:
    lines = [f"{rep['job']} run {rep['run_id']}: {rep['table']}@v{rep['version']} against {rep['contract']} "
             f"({rep['contract_hash']}, {rep['mode']})"]
    for u in rep["units"]:
        lines.append(f"  ds={u['ds']}: {u['status']}, {u['rows']} rows")
        for v in u["violations"]:
            ex = f" e.g. {v['examples'][:2]}" if v.get("examples") else ""
            lines.append(f"    {v['check']}: {v['message']}{ex}")
    return "\n".join(lines) + "\n"
