"""`lakescore status`: finds a stale day after the input gets new rows for it, an unscored day after a new day
arrives, and a failed day after a contract failure; days scored from the current snapshot are ok."""
from __future__ import annotations

import json

import pyarrow.compute as pc

from deltalake import write_deltalake

from conftest import DAYS, ROWS
from engine.demo.data import make_day
from test_contracts import NEW_DAY, append_day, fresh_day, set_rows
from test_ledger import ALL_DAYS, job_argv, run_score


def status(lake, demo_root, capsys, *extra: str) -> tuple[dict, str]:
    from jobs.status import main

    code = main([*job_argv(lake, demo_root), *extra])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.strip().splitlines()
    return json.loads(lines[-1]), "\n".join(lines[:-1])


def states(summary: dict) -> dict[str, str]:
    return {a["ds"]: a["state"] for a in summary["attention"]}


def test_status_finds_stale_unscored_and_failed_days(ray_local, lake, demo_root, capsys):
    assert run_score(lake, demo_root, capsys=capsys)[0] == 0
    summary, table = status(lake, demo_root, capsys)
    assert summary["counts"] == {"ok": DAYS} and summary["attention"] == []
    assert all(d in table for d in ALL_DAYS) and table.count("  ok\n") + table.endswith("  ok") == DAYS

    # New rows for a scored day: stale. A new day: unscored.
    changed = ALL_DAYS[2]
    extra = make_day(2, changed, 50, 50, seed=99)[0]
    extra = extra.set_column(0, "entity_id", pc.add(extra.column("entity_id"), 10_000_000))  # new entities
    write_deltalake(str(lake / "features"), extra, partition_by=["ds"], mode="append", schema_mode="merge")
    append_day(lake, fresh_day())
    summary, table = status(lake, demo_root, capsys)
    assert states(summary) == {changed: "stale", NEW_DAY: "unscored"}
    stale = next(a for a in summary["attention"] if a["ds"] == changed)
    assert "changed since" in stale["notes"][0] and stale["rows"] > 0
    assert f"{changed}  " in table and "stale" in table and "unscored" in table

    # A score run brings both up to date.
    code, run = run_score(lake, demo_root, capsys=capsys)
    assert code == 0, run["error"]
    summary, _ = status(lake, demo_root, capsys)
    assert summary["attention"] == [] and summary["counts"] == {"ok": DAYS + 1}

    # A contract failure on another new day: failed, with why.
    bad_day = "2026-01-06"
    bad = set_rows(make_day(DAYS + 1, bad_day, ROWS, 50, seed=5)[0], "f03", [1], float("nan"))
    write_deltalake(str(lake / "features"), bad, partition_by=["ds"], mode="append", schema_mode="merge")
    assert run_score(lake, demo_root, capsys=capsys)[0] == 3
    summary, table = status(lake, demo_root, capsys)
    (failed,) = summary["attention"]
    assert failed["ds"] == bad_day and failed["state"] == "failed" and "f03" in failed["notes"][0]
    summary, _ = status(lake, demo_root, capsys, "--since", bad_day)
    assert summary["counts"] == {"failed": 1}


def test_status_rejects_an_unknown_table(lake, demo_root, capsys):
    from jobs.status import main

    assert main([*job_argv(lake, demo_root), "--table", "nope"]) == 2
    err = capsys.readouterr().err
    assert "table 'nope' not found" in err


def test_status_shows_partitions_holding_rows_of_deleted_keys_until_forget(ray_local, lake, demo_root, capsys):
    from deltalake import DeltaTable

    from jobs.forget import main as forget

    assert run_score(lake, demo_root, capsys=capsys)[0] == 0
    day = ALL_DAYS[1]
    ids = DeltaTable(str(lake / "features")).to_pyarrow_table(columns=["entity_id"], filters=[("ds", "=", day)])
    gone = ids.column("entity_id").to_pylist()[:50]
    DeltaTable(str(lake / "features")).delete(f"ds = '{day}' AND entity_id IN ({', '.join(map(str, gone))})")
    summary, table = status(lake, demo_root, capsys)
    (stale,) = summary["attention"]
    assert (stale["ds"], stale["state"], stale["orphan_rows"]) == (day, "stale", 50)
    assert "50 row(s) whose key is no longer in the input day" in table
    assert forget([*job_argv(lake, demo_root)]) == 0
    capsys.readouterr()
    summary, _ = status(lake, demo_root, capsys)
    (stale,) = summary["attention"]
    assert stale["state"] == "stale" and stale["orphan_rows"] is None  # still from the old input, but no orphans


def test_a_compacted_input_day_is_not_stale(ray_local, lake, demo_root, capsys):
    from deltalake import DeltaTable

    day = ALL_DAYS[2]
    extra = make_day(2, day, 40, 50, seed=98)[0]
    extra = extra.set_column(0, "entity_id", pc.add(extra.column("entity_id"), 20_000_000))
    write_deltalake(str(lake / "features"), extra, partition_by=["ds"], mode="append", schema_mode="merge")
    assert run_score(lake, demo_root, capsys=capsys)[0] == 0
    DeltaTable(str(lake / "features")).optimize.compact()
    summary, table = status(lake, demo_root, capsys)
    assert summary["attention"][0]["state"] == "ok" and "compaction" in summary["attention"][0]["notes"][0]
    assert {a["state"] for a in summary["attention"]} == {"ok"}


def test_status_compares_configs_only_with_runs_that_wrote_the_table(ray_local, lake, demo_root, capsys):
    from test_ledger import runs

    assert run_score(lake, demo_root, capsys=capsys)[0] == 0
    # The `redo` command `lakescore explain` prints: one pinned day into scores_repro, under another config.
    day = ALL_DAYS[1]
    code, redo = run_score(lake, demo_root, f"input.ds={day}", "output.table=scores_repro",
                           "output.quarantine_table=scores_repro_quarantine", "--force", capsys=capsys)
    assert code == 0, redo["error"]
    first, second = runs(lake)
    assert second["output_table"] == "scores_repro" and second["config_hash"] != first["config_hash"]
    summary, table = status(lake, demo_root, capsys)
    assert summary["attention"] == [] and "scored under config" not in table, table
    summary, _ = status(lake, demo_root, capsys, "--table", "scores_repro")
    assert summary["counts"] == {"ok": 1, "unscored": DAYS - 1}  # the repro holds the one pinned day
    assert not any(a["notes"] for a in summary["attention"]), summary["attention"]
    # A later run that writes `scores` under another config still flags its days.
    code, _ = run_score(lake, demo_root, "output.target_file_rows=1500", capsys=capsys)
    assert code == 0
    summary, _ = status(lake, demo_root, capsys)
    assert len(summary["attention"]) == DAYS
    assert all("scored under config" in a["notes"][0] for a in summary["attention"]), summary["attention"]


def test_status_refuses_input_ds_instead_of_ignoring_it(lake, demo_root, capsys):
    from jobs.status import main

    code = main([*job_argv(lake, demo_root), "input.ds=2026-01-02"])
    out = capsys.readouterr()
    assert code == 2, out.out
    (line,) = [ln for ln in out.err.splitlines() if "error:" in ln]
    assert "input.ds" in line and "--since" in line
    assert json.loads(out.out.strip().splitlines()[-1])["exit_code"] == 2
