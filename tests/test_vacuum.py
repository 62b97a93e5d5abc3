"""`lakescore vacuum`: after several overwrites, the current version and every version a recent run pinned stay
readable (read back with deltalake and compared with what they held before), the other old versions lose their
files, a dry run deletes nothing and lists the same files, and the ledger records the run."""
from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import ROOT
from engine import ledger
from engine.config import LakeConfig, ScoreConfig

UTC = dt.timezone.utc


def run_vacuum(lake, *args: str, capsys) -> tuple[int, dict, str]:
    from jobs.vacuum import main

    code = main(["--config", str(ROOT / "conf" / "score.yaml"), f"lake.root={lake}",
                 f"mlflow.tracking_uri=sqlite:///{lake}/mlruns.db", *args])
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    return code, json.loads(lines[-1]), "\n".join(lines[:-1])


def overwritten_table(lake, versions: int = 5) -> tuple[str, dict[int, pa.Table]]:
    """A small day-partitioned table overwritten `versions` times; version → its content."""
    uri = str(lake / "feats")
    held = {}
    for i in range(versions):
        data = pa.table({"entity_id": pa.array(range(i * 10, i * 10 + 10), pa.int64()),
                         "x": pa.array([float(i)] * 10), "ds": ["2026-01-01"] * 5 + ["2026-01-02"] * 5})
        write_deltalake(uri, data, mode="overwrite", partition_by=["ds"])
        held[DeltaTable(uri).version()] = DeltaTable(uri).to_pyarrow_table().sort_by("entity_id")
    return uri, held


def pin(lake, uri: str, version: int, run_id: str, started: dt.datetime) -> None:
    """A run in the ledger that read `uri` at `version` (as a score or evaluate run records its inputs)."""
    cfg = ScoreConfig(lake=LakeConfig(root=str(lake)), model={"uri": "models:/x/1"})
    entry = ledger.row("score", cfg, {"run_id": run_id, "status": "ok", "exit_code": 0, "config_hash": "h"},
                       started, started, "score --config x")
    entry["inputs"] = [{"role": "input", "table": "feats", "uri": uri, "version": version}]
    ledger.append(cfg.lake, entry)


def readable(uri: str, version: int) -> pa.Table | None:
    try:
        return DeltaTable(uri, version=version).to_pyarrow_table().sort_by("entity_id")
    except FileNotFoundError:  # what deltalake raises for a data file the log lists but storage no longer has
        return None


def test_vacuum_keeps_pinned_and_current_versions_and_removes_the_rest(tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    uri, held = overwritten_table(lake)
    now = dt.datetime.now(UTC)
    pin(lake, uri, 1, "run-recent-pin", now)
    pin(lake, uri, 2, "run-old-pin", now - dt.timedelta(days=10))  # outside a 3-day window: not protected
    current = DeltaTable(uri).version()
    files_before = {p for p in (lake / "feats").rglob("*.parquet")}

    code, dry, text = run_vacuum(lake, "--table", "feats", "--retain-days", "3", "--dry-run", capsys=capsys)
    assert code == 0, dry.get("error")
    # Every file of the table is younger than 3 days: nothing goes yet.
    assert dry["files_to_remove"] == 0 and {p for p in (lake / "feats").rglob("*.parquet")} == files_before

    code, dry, text = run_vacuum(lake, "--table", "feats", "--retain-days", "0", "--dry-run", capsys=capsys)
    assert code == 0, dry.get("error")
    assert {p for p in (lake / "feats").rglob("*.parquet")} == files_before  # a dry run deletes nothing
    kept = {k["version"]: k for k in dry["kept_versions"]}
    assert set(kept) == {current, 1} and kept[1]["run_ids"] == ["run-recent-pin"] and kept[current]["why"] == "current"
    assert "v1  pinned as input by run(s) run-recent-p" in text and f"v{current}  current version" in text
    # The files that would go are exactly those of the versions neither current nor pinned (from their logs).
    def files_of(v):
        return set(pa.table(DeltaTable(uri, version=v).get_add_actions()).column("path").to_pylist())
    expected = set().union(*(files_of(v) for v in held if v not in (1, current))) - files_of(1) - files_of(current)
    assert set(dry["files"]) == expected and dry["files_to_remove"] == len(expected) > 0
    assert all(f"  {f}" in text for f in expected)
    assert dry["bytes"] == sum(os.path.getsize(lake / "feats" / f) for f in expected)

    code, done, text = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 0, done.get("error")
    assert sorted(done["files"]) == sorted(dry["files"]) and done["files_removed"] == len(expected)
    for v, content in held.items():
        got = readable(uri, v)
        if v in (1, current):
            assert got is not None and got.equals(content), v
        else:
            assert got is None, f"version {v} is still readable"
    assert DeltaTable(uri).to_pyarrow_table().sort_by("entity_id").equals(held[current])
    vac = ledger.read(LakeConfig(root=str(lake)), job="vacuum").to_pylist()
    assert [r["run_id"] for r in vac][-2:] == [dry["run_id"], done["run_id"]] and len(vac) == 3
    assert vac[-1]["output_table"] == "feats" and vac[-1]["status"] == "ok"

    code, again, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 0 and again["files_removed"] == 0


def test_leftover_files_younger_than_a_week_stay(tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    uri, _held = overwritten_table(lake, 2)
    leftover = lake / "feats" / "ds=2026-01-01" / "part-uncommitted.parquet"
    leftover.write_bytes(b"a writer's file before its commit")
    code, done, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 0 and done["files_removed"] > 0 and leftover.exists()
    old = dt.datetime.now().timestamp() - 8 * 86400
    os.utime(leftover, (old, old))
    code, done, _ = run_vacuum(lake, "--table", "feats", "--retain-days", "0", capsys=capsys)
    assert code == 0 and done["files"] == ["ds=2026-01-01/part-uncommitted.parquet"] and not leftover.exists()


@pytest.mark.parametrize("args, needle", [(["--table", "nosuch", "--retain-days", "1"], "table 'nosuch' not found"),
                                          (["--table", "feats", "--retain-days", "-1"], "--retain-days -1")])
def test_unknown_table_or_bad_days_is_exit_2_naming_it(tmp_path, capsys, args, needle):
    lake = tmp_path / "lake"
    lake.mkdir()
    overwritten_table(lake, 1)
    code, summary, _ = run_vacuum(lake, *args, capsys=capsys)
    assert code == 2 and needle in summary["error"]
