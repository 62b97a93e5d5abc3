"""The run ledger (`runs`): every job run appends one row, failed runs too, and its figures reconcile with the
tables the run committed (read back directly with deltalake)."""
from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable

from conftest import DAYS, ROOT, ROWS, XGB
from engine import latency
from engine.tables import ledger
from engine.config import LakeConfig
from test_contracts import CONTRACT, NEW_DAY, append_day, fresh_day, quarantine_contract, set_rows

ALL_DAYS = [f"2026-01-0{i + 1}" for i in range(DAYS)]


def job_argv(lake, demo_root, *overrides: str) -> list[str]:
    return ["--config", str(ROOT / "conf" / "score.yaml"), f"lake.root={lake}",
            f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts",
            f"model.uri=models:/{XGB}@champion", "input.passthrough_columns=[event_ts]", "output.target_file_rows=2000",
            f"input.contract={CONTRACT}", *overrides]


def run_score(lake, demo_root, *overrides: str, capsys=None) -> tuple[int, dict]:
    code, summary, _err = run_score_err(lake, demo_root, *overrides, capsys=capsys)
    return code, summary


def run_score_err(lake, demo_root, *overrides: str, capsys=None) -> tuple[int, dict, str]:
    from jobs.score import main

    code = main(job_argv(lake, demo_root, *overrides))
    out = capsys.readouterr()
    return code, json.loads(out.out.strip().splitlines()[-1]), out.err


def runs(lake) -> list[dict]:
    return ledger.read(LakeConfig(root=str(lake))).to_pylist()


def rows_per_day(lake, table: str = "scores", column: str = "ds") -> dict[str, int]:
    t = DeltaTable(str(lake / table)).to_pyarrow_table(columns=[column])
    counts = t.group_by(column).aggregate([([], "count_all")])
    return dict(zip(counts.column(column).to_pylist(), counts.column("count_all").to_pylist()))


def test_successful_then_skipped_run_reconcile_with_the_scores_table(ray_local, lake, demo_root, capsys):
    code, summary = run_score(lake, demo_root, capsys=capsys)
    assert code == 0, summary["error"]
    (entry,) = runs(lake)
    assert entry["run_id"] == summary["run_id"] and entry["status"] == "ok" and entry["exit_code"] == 0
    assert entry["job"] == "score" and entry["engine"] == "ray" and entry["error"] is None
    assert entry["config_hash"] == summary["config_hash"]
    assert entry["code_version"] and entry["command"].startswith("score --config ")
    version = DeltaTable(str(lake / "features")).version()
    assert entry["inputs"] == [{"role": "input", "table": "features", "uri": "features", "version": version}]
    assert (entry["model_name"], entry["model_version"]) == (XGB, summary["model_version"])
    assert entry["units_planned"] == entry["units_committed"] == DAYS and entry["units_failed"] == 0
    per_day = rows_per_day(lake)
    assert entry["rows_scored"] == sum(per_day.values()) == entry["rows_in"] == DAYS * ROWS
    assert {o["unit"]: o["rows_out"] for o in entry["unit_outcomes"]} == per_day
    assert {o["outcome"] for o in entry["unit_outcomes"]} == {"committed"}
    assert all(o["input_version"] == version for o in entry["unit_outcomes"])
    for phase in ("resolve", "plan", "read", "contract", "score", "write", "commit"):
        assert entry[f"{phase}_s"] is not None and entry[f"{phase}_s"] >= 0, phase
    assert 0 < entry["latency_p50_ms"] <= entry["latency_p95_ms"] <= entry["latency_p99_ms"]
    assert entry["rows_per_s"] > 0 and entry["nodes"] and entry["nodes"] == summary["nodes"]
    assert json.loads(entry["summary"])["run_id"] == entry["run_id"]
    # The summary line carries the same facts.
    assert summary["phases"]["commit"] == entry["commit_s"] and summary["latency_ms"]["p99"] == entry["latency_p99_ms"]

    code, summary = run_score(lake, demo_root, capsys=capsys)
    assert code == 0, summary["error"]
    first, second = runs(lake)
    assert second["run_id"] == summary["run_id"] != first["run_id"]
    assert second["units_skipped"] == DAYS and second["units_committed"] == 0 and second["rows_scored"] == 0
    assert {o["outcome"] for o in second["unit_outcomes"]} == {"skipped"}
    assert rows_per_day(lake) == per_day


def test_partly_failed_run_is_in_the_ledger_with_its_error(ray_local, lake, demo_root, capsys):
    append_day(lake, set_rows(fresh_day(), "f03", [1], float("nan")))
    code, summary = run_score(lake, demo_root, capsys=capsys)
    assert code == 3
    (entry,) = runs(lake)
    assert entry["status"] == "error" and entry["exit_code"] == 3 and entry["error_class"] == "ContractViolation"
    assert NEW_DAY in entry["error"] and entry["error"] == summary["error"]
    assert entry["units_committed"] == DAYS and entry["units_failed"] == 1
    failed = [o for o in entry["unit_outcomes"] if o["outcome"] == "failed"]
    assert [o["unit"] for o in failed] == [NEW_DAY] and "f03" in failed[0]["message"]
    per_day = rows_per_day(lake)
    assert NEW_DAY not in per_day
    assert entry["rows_scored"] == sum(per_day.values())
    assert {o["unit"]: o["rows_out"] for o in entry["unit_outcomes"] if o["outcome"] == "committed"} == per_day


def test_quarantined_rows_reconcile_with_the_quarantine_table(ray_local, lake, demo_root, capsys, tmp_path):
    contract = quarantine_contract(tmp_path, 0.01)
    append_day(lake, set_rows(fresh_day(), "f03", [1, 5, 9], float("nan")))
    code, summary = run_score(lake, demo_root, f"input.contract={contract}", f"input.ds={NEW_DAY}", capsys=capsys)
    assert code == 0, summary["error"]
    (entry,) = runs(lake)
    quarantined = rows_per_day(lake, "quarantine")
    assert entry["rows_quarantined"] == quarantined[NEW_DAY] == 3
    assert entry["rows_scored"] == rows_per_day(lake)[NEW_DAY] == entry["rows_in"] - 3


def test_a_run_that_fails_before_any_unit_is_recorded(ray_local, lake, demo_root, capsys):
    code, summary = run_score(lake, demo_root, "model.uri=models:/no-such-model/1", capsys=capsys)
    assert code == 5
    (entry,) = runs(lake)
    assert entry["exit_code"] == 5 and entry["status"] == "error" and "no-such-model" in entry["error"]
    assert entry["units_planned"] == 0 and not (lake / "scores").exists()


def test_a_missing_local_lake_is_not_created_by_the_ledger(ray_local, demo_root, tmp_path, capsys):
    missing = tmp_path / "typo"
    code, _, err = run_score_err(missing, demo_root, capsys=capsys)
    # a typo in lake.root is a config error naming lake.root, found before any engine starts (issue 21; it was exit
    # 5 blaming input.table); the ledger still does not create the folder
    assert code == 2
    assert not missing.exists()
    assert f"lake.root {missing} does not exist" in err
    assert f"run ledger not written: lake.root {missing} does not exist" in err


def test_a_run_is_appended_once(lake):
    import datetime as dt

    from engine.config import ScoreConfig

    cfg = ScoreConfig(lake=LakeConfig(root=str(lake)), model={"uri": "models:/x/1"})
    now = dt.datetime(2026, 1, 9, tzinfo=dt.timezone.utc)
    entry = ledger.row("score", cfg, {"run_id": "r1", "status": "ok", "exit_code": 0, "config_hash": "h"}, now, now,
                       "score --config x")
    assert ledger.append(cfg.lake, entry) is True
    assert ledger.append(cfg.lake, entry) is False
    t = ledger.read(cfg.lake)
    assert t.num_rows == 1 and pc.equal(t.column("date"), "2026-01-09").to_pylist() == [True]


@pytest.mark.parametrize("values", [[0.001] * 10, [0.001] * 90 + [0.5] * 10, [10 ** (-4 + i / 50) for i in range(300)]])
def test_latency_percentiles_are_within_the_bin_error(values):
    import numpy as np

    hist: dict[str, int] = {}
    for v in values:
        latency.add(hist, v)
    half = {}
    for v in values[::2]:
        latency.add(half, v)
    other = {}
    for v in values[1::2]:
        latency.add(other, v)
    assert latency.merge(half, other) == hist
    for q in (50, 95, 99):
        exact = float(np.percentile(values, q, method="inverted_cdf"))
        assert abs(latency.percentile(hist, q) / exact - 1) < 0.06, q


def test_validate_runs_are_in_the_ledger_with_their_days(ray_local, lake, demo_root, capsys):
    from jobs.validate import main

    append_day(lake, set_rows(fresh_day(), "f03", [1], float("nan")))
    argv = ["--config", str(ROOT / "conf" / "validate.yaml"), f"lake.root={lake}",
            f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts",
            f"input.contract={CONTRACT}"]
    assert main(argv) == 3
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (entry,) = ledger.read(LakeConfig(root=str(lake)), job="validate").to_pylist()
    assert entry["run_id"] == summary["run_id"] and entry["exit_code"] == 3
    assert entry["units_committed"] == DAYS and entry["units_failed"] == 1 and entry["rows_in"] == (DAYS + 1) * ROWS
    outcomes = {o["unit"]: o["outcome"] for o in entry["unit_outcomes"]}
    assert outcomes == {**{d: "passed" for d in ALL_DAYS}, NEW_DAY: "failed"}
    assert entry["read_s"] > 0 and entry["contract_s"] > 0 and entry["rows_scored"] is None


def test_a_run_records_its_start_under_its_own_app_transaction_and_readers_see_finished_runs(ray_local, lake,
                                                                                           demo_root, capsys):
    import datetime as dt

    code, summary = run_score(lake, demo_root, "run.time_budget_s=600", capsys=capsys)
    assert code == 0, summary["error"]
    lk = LakeConfig(root=str(lake))
    (final,) = runs(lake)  # readers (status, explain) see the finished run only
    both = ledger.read(lk, running=True).to_pylist()
    assert sorted(r["status"] for r in both) == ["ok", "running"]
    (start,) = [r for r in both if r["status"] == "running"]
    assert start["run_id"] == final["run_id"] == summary["run_id"]
    assert start["inputs"] == final["inputs"] and start["job"] == "score" and start["exit_code"] is None
    lease = dt.datetime.fromisoformat(json.loads(start["summary"])["lease_until"])
    assert lease == start["started_at"] + dt.timedelta(seconds=600 + ledger.LEASE_GRACE_S)
    assert ledger.running_runs(lk) == []  # the final row ended it
    # Read from the log: the running row was committed first, each row under its own application transaction.
    apps = [json.loads(h["userMetadata"])["app_id"] for h in reversed(DeltaTable(str(lake / "runs")).history())
            if h.get("userMetadata")]
    assert apps == [f"lakescore/runs/{final['run_id']}#start", f"lakescore/runs/{final['run_id']}"]
    # A running row without a final row is a running run (as a vacuum sees it) until its lease ends.
    again = dict(start, run_id="r-still-running")
    assert ledger.append(lk, again) and ledger.append(lk, again) is False
    assert [r["run_id"] for r in ledger.running_runs(lk, start["started_at"] + dt.timedelta(seconds=1))] == [
        "r-still-running"]
    assert ledger.running_runs(lk, lease + dt.timedelta(seconds=1)) == []  # its lease is over
    assert [r["run_id"] for r in runs(lake)] == [final["run_id"]]


def test_the_code_commit_is_the_source_trees_git_commit(monkeypatch):
    """Each ledger row names the commit of the code that ran: from git in the source tree when run from a checkout.
    Broken build caught: the module moved one folder deeper (engine/tables/) and looked for .git in engine/, so every
    local run recorded no commit."""
    import subprocess
    from pathlib import Path

    monkeypatch.delenv("LAKESCORE_CODE_COMMIT", raising=False)
    ledger.code_revision.cache_clear()
    try:
        repo = Path(__file__).resolve().parents[1]
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert head, "the tests run from a git checkout"
        assert (ledger.code_revision()[1] or "").split("+")[0] == head
    finally:
        ledger.code_revision.cache_clear()
