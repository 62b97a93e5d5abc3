"""Enforcing a contract in a job: prepare it against a snapshot, judge each unit, write the report.

The row checks run in the workers' scoring pass (engine.score.scoring.score_chunk) through `ContractCheck`, this
package's implementation of the core's `engine.work.RowCheck`; the driver merges their statistics and adds the
partition checks here, so enforcing a contract costs no extra pass over the data. The drift reference, when not stored
yet, is read by the executor's side tasks (engine.tables.drift_reference.build_reference), never on the driver.
Reports name tables, versions, partitions, checks and counts; examples quote key values and non-PII values only.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from dataclasses import asdict

import numpy as np
import pyarrow as pa

from contracts import partition as pchecks
from contracts import quarantine as qtable
from contracts import unique
from contracts.checks import CheckStats, row_masks
from contracts.partition import Violation
from contracts.spec import load_contract
from engine.executor import LocalExecutor
from engine.tables.drift_reference import build_reference, load_or_build
from engine.errors import ConfigError, InputUnavailable
from engine.lake.reports import report_target, write_report_files
from engine.lake.snapshot import check_files_exist, select_partitions


class ContractCheck:
    """A resolved contract's row checks as an `engine.work.RowCheck`: shipped with a unit's work to the workers."""

    quarantine_schema = qtable.FILE_SCHEMA
    quarantine_partition_columns = qtable.PARTITION_COLUMNS

    def __init__(self, rc, edges: dict[str, np.ndarray]):
        self.rc = rc
        self.edges = edges

    def columns(self) -> list[str]:
        rc = self.rc
        return list(dict.fromkeys([*rc.check_columns(), *rc.contract.key, *filter(None, [rc.contract.event_time])]))

    def new_stats(self) -> CheckStats:
        return CheckStats()

    def check(self, batch: pa.RecordBatch, ds: str, stats: CheckStats) -> tuple[np.ndarray, dict]:
        masks = row_masks(batch, self.rc, ds)
        return stats.update(batch, masks, self.rc, self.edges), masks

    def quarantine(self, batch, bad, detail, source_version, run_id, at) -> pa.RecordBatch:
        return qtable.quarantine_batch(batch, bad, detail, self.rc, source_version, run_id, at)

    def stats_from_bytes(self, data: bytes) -> CheckStats:
        return CheckStats.from_bytes(data)

    def seal(self, stats: CheckStats, unit, chunk) -> CheckStats:
        return stats.seal(unit.scratch_uri, chunk.index, unit.key_buckets, unit.storage_options, unit.key_salt)

    def complete(self, stats: CheckStats, unit, run, deadline: float) -> None:
        unique.count_spilled(run, unit, stats, self, deadline)


class Enforcer:
    def __init__(self, contract_path: str, snap, key_columns: list[str], passthrough: list[str],
                 storage_options: dict | None = None, reference_table: str | None = None, run=None,
                 deadline: float | None = None):
        """`reference_table`: the lake's `drift_reference` table, where the drift reference is stored once and
        reused (None: computed from the window on every run, stored nowhere). `run`: the executor's side runner
        (engine.executor.side_run) whose tasks read the reference window, so the driver reads none of its rows
        (None: in this process, engine.executor.LocalExecutor); `deadline` (time.monotonic) bounds them."""
        self.run = run or LocalExecutor().run
        self.deadline = time.monotonic() + 86_400 if deadline is None else deadline  # finite: Ray waits on it
        self.contract = load_contract(contract_path)
        self.reference_table = reference_table
        self.reference_reused = False
        self.path = contract_path
        self.snap = snap
        self.storage_options = storage_options or {}
        try:
            self.rc = self.contract.resolve(snap.schema)
        except ConfigError as e:
            raise ConfigError(f"{contract_path}: {e}") from e
        leaked = sorted(self.rc.pii & {*key_columns, *passthrough})
        if leaked:
            raise ConfigError(f"input.key_columns/passthrough_columns name PII columns {leaked} (tagged pii in "
                              f"{contract_path}); PII never reaches an output table")
        self.schema_violations = [Violation(check, col, None, msg) for check, col, msg in self.rc.schema_problems]
        from contracts.schemas import schema_verdict

        self.pandera_verdict = schema_verdict(self.rc, snap.schema)  # pandera's own view, in every report
        self.history = {d: snap.rows(d) for d in snap.partitions}  # None: the log has no row count
        self.edges: dict[str, np.ndarray] = {}
        self.ref_hist: dict[str, np.ndarray] = {}
        if self.contract.drift is not None and not self.schema_violations:
            self._reference(storage_options)
        self.units: dict[str, dict] = {}

    def row_check(self) -> ContractCheck:
        return ContractCheck(self.rc, self.edges)

    @property
    def quarantine_table_schema(self) -> pa.Schema:
        return qtable.TABLE_SCHEMA

    @property
    def bad_row_budget(self) -> float:
        return self.contract.bad_row_budget

    @property
    def quarantines(self) -> bool:
        return self.contract.mode == "quarantine"

    @property
    def digest(self) -> str:
        return self.contract.digest

    def _reference(self, storage_options) -> None:
        """Edges and histograms of the drift reference window: its files checked first; then the stored reference
        of the same files (engine.tables.drift_reference), or the window read by the executor's tasks in two stages
        (a stride sample for the edges, then histograms: build_reference) and stored."""
        d = self.contract.drift
        days, _absent = select_partitions(self.snap, d.reference)
        if not days:
            raise ConfigError(f"contract {self.path}: drift reference window {d.reference} has no partitions in "
                              f"{self.snap.where()}; fix drift.reference")
        where = f"drift reference window {d.reference} of {self.snap.where()} (contract {os.path.basename(self.path)})"
        try:
            check_files_exist(self.snap, days, storage_options)
        except InputUnavailable as e:
            raise InputUnavailable(f"{where}: {e}, or move drift.reference to days whose files still exist") from e
        feats = pchecks.drift_features(self.rc)

        def build():
            return build_reference(self.snap, days, feats, d.bins, self.run, self.deadline, where, storage_options)

        if self.reference_table is None:
            self.edges, self.ref_hist = build()
            return
        self.edges, self.ref_hist, self.reference_reused = load_or_build(
            self.reference_table, self.snap, d.reference, days, feats, d.bins, build, storage_options)

    def verdict(self, ds: str, rows: int, stats: CheckStats | None) -> list[Violation]:
        """Every violation of one unit (schema, rows, keys, volume, freshness, drift); empty means it passes."""
        out = list(self.schema_violations)
        notes = []
        if stats is None and self.snap.rows(ds) is None and ds in self.snap.files:
            notes.append(f"ds={ds} was not read and the log has no row count for it: volume not checked")
        elif v := pchecks.volume(self.rc, ds, rows, self.history):
            out.append(v)
        if note := pchecks.volume_note(self.rc, ds, self.history):
            notes.append(note)
        if v := pchecks.freshness(self.rc, max(self.snap.partitions) if self.snap.partitions else None):
            out.append(v)
        if stats is not None:
            out += pchecks.row_violations(self.rc, ds, stats)
            out += pchecks.drift(self.rc, ds, stats, self.ref_hist)
        self.units[ds] = {"ds": ds, "rows": rows, "bad_rows": stats.bad_rows if stats else None,
                          "status": "fail" if out else "pass", "violations": [asdict(v) for v in out], "notes": notes}
        return out

    def report(self, job: str, run_id: str) -> dict:
        return {"job": job, "run_id": run_id, "table": self.snap.name, "version": self.snap.version,
                "contract": os.path.basename(self.path), "contract_hash": self.digest, "mode": self.contract.mode,
                "pandera_schema_verdict": [{"check": c, "column": col} for c, col in self.pandera_verdict],
                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "units": [self.units[d] for d in sorted(self.units)]}

    def publish(self, root: str, job: str, run_id: str, mlflow_cfg=None, extra: dict | None = None) -> str:
        """Write the report under the lake and, when `mlflow_cfg.log_reports`, log it to MLflow too."""
        files = self.render(job, run_id)
        location = self._write(root, job, run_id, files)
        if mlflow_cfg is not None and mlflow_cfg.log_reports:
            failed = sum(u["status"] == "fail" for u in self.units.values())
            with tempfile.TemporaryDirectory(prefix="lakescore-report-") as tmp:  # MLflow logs local files only
                for name, text in files.items():
                    with open(os.path.join(tmp, name), "w") as f:
                        f.write(text)
                log_report(os.path.join(tmp, f"{run_id}.json"), mlflow_cfg.tracking_uri, mlflow_cfg.artifact_root,
                           {"job": job, "run_id": run_id, "table": self.snap.name, "version": self.snap.version,
                            "contract_hash": self.digest, "units": len(self.units), "units_failed": failed,
                            **(extra or {})})
        return location

    def render(self, job: str, run_id: str) -> dict[str, str]:
        """The report's files: `<run_id>.json` and a short `<run_id>.txt` summary."""
        rep = self.report(job, run_id)
        return {f"{run_id}.json": json.dumps(rep, indent=2, sort_keys=True, default=str),
                f"{run_id}.txt": summary_text(rep)}

    def write_report(self, root: str, job: str, run_id: str) -> str:
        """`<root>/_reports/<job>/<run_id>.json` and `.txt`, on the lake's filesystem; returns the JSON's location."""
        return self._write(root, job, run_id, self.render(job, run_id))

    def _write(self, root: str, job: str, run_id: str, files: dict[str, str]) -> str:
        fs, base, shown = report_target(root, job, self.storage_options)
        write_report_files(fs, base, files)
        return f"{shown}/{run_id}.json"


REPORT_EXPERIMENT = "lakescore-contract-reports"


def log_report(report_json: str, tracking_uri: str, artifact_root: str, params: dict) -> str:
    """Log a report (JSON and text) as artifacts of an MLflow run; returns the run id. Reports hold no PII."""
    from mlflow.tracking import MlflowClient

    from engine.models.registry import experiment_id

    client = MlflowClient(tracking_uri)
    exp_id = experiment_id(client, REPORT_EXPERIMENT, artifact_root)
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
        for note in u.get("notes", ()):
            lines.append(f"    note: {note}")
    return "\n".join(lines) + "\n"
