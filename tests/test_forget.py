"""`lakescore forget`: entities deleted from an input day disappear from every model's partitions of that day, a day
whose input is gone loses all its rows, every other row stays exactly as it was (compared row for row with the table
read before, directly with deltalake), a second forget is a no-op, and the ledger records what was removed."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from conftest import DAYS, MLP, ROOT, ROWS, XGB
from engine import ledger
from engine.config import LakeConfig
from engine.forget import orphan_counts
from test_contracts import NEW_DAY, append_day, fresh_day, quarantine_contract, set_rows
from test_ledger import run_score

DAY = "2026-01-02"
GONE = "2026-01-04"
KEYS = ["entity_id", "event_ts"]


def run_forget(lake, demo_root, *args: str, capsys) -> tuple[int, dict, str]:
    from jobs.forget import main

    code = main(["--config", str(ROOT / "conf" / "score.yaml"), f"lake.root={lake}",
                 f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", "input.key_columns=[entity_id,event_ts]",
                 *args])
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    return code, json.loads(lines[-1]), "\n".join(lines[:-1])


def scores(lake) -> pa.Table:
    return DeltaTable(str(lake / "scores")).to_pyarrow_table().sort_by(
        [("ds", "ascending"), ("model_name", "ascending"), ("entity_id", "ascending"), ("event_ts", "ascending")])


def files_by_day(lake) -> dict[str, set[str]]:
    acts = pa.table(DeltaTable(str(lake / "scores")).get_add_actions(flatten=True)).to_pylist()
    out: dict[str, set[str]] = {}
    for a in acts:
        out.setdefault(a["partition.ds"], set()).add(a["path"])
    return out


def test_forget_removes_deleted_entities_from_every_models_partitions(ray_local, lake, demo_root, capsys):
    for uri in (f"models:/{XGB}@champion", f"models:/{MLP}/1"):
        code, s = run_score(lake, demo_root, f"model.uri={uri}", capsys=capsys)
        assert code == 0, s.get("error")
    before = scores(lake)
    assert before.num_rows == 2 * DAYS * ROWS
    feats = DeltaTable(str(lake / "features"))
    day_ids = feats.to_pyarrow_table(columns=["entity_id"], filters=[("ds", "=", DAY)]).column("entity_id").to_pylist()
    deleted = sorted(day_ids)[::len(day_ids) // 50][:50]
    assert len(set(deleted)) == 50
    feats.delete(f"ds = '{DAY}' AND entity_id IN ({', '.join(map(str, deleted))})")
    DeltaTable(str(lake / "features")).delete(f"ds = '{GONE}'")
    out = DeltaTable(str(lake / "scores"))
    txns = {(d, m): out.transaction_version(f"lakescore/score/{d}/{m}/1") for d in (DAY, GONE) for m in (XGB, MLP)}
    files_before = files_by_day(lake)
    version_before = out.version()

    counts = orphan_counts(LakeConfig(root=str(lake)), "scores", KEYS)
    assert counts == {(DAY, MLP, 1): 50, (DAY, XGB, 1): 50, (GONE, MLP, 1): ROWS, (GONE, XGB, 1): ROWS}

    code, dry, text = run_forget(lake, demo_root, "--dry-run", capsys=capsys)
    assert code == 0, dry.get("error")
    assert dry["rows_to_remove"] == 2 * 50 + 2 * ROWS and DeltaTable(str(lake / "scores")).version() == version_before
    assert f"ds={DAY}/model_name={MLP}/model_version=1: 50 of {ROWS} row(s) (would-remove)" in text

    code, s, text = run_forget(lake, demo_root, capsys=capsys)
    assert code == 0, s.get("error")
    after = scores(lake)
    is_deleted = pc.and_(pc.equal(before.column("ds"), DAY), pc.is_in(before.column("entity_id"), pa.array(deleted)))
    gone = pc.or_(is_deleted, pc.equal(before.column("ds"), GONE))
    # Every other row untouched, row for row and column for column (stamps included).
    assert after.equals(before.filter(pc.invert(gone)))
    for m in (XGB, MLP):
        ids = after.filter(pc.and_(pc.equal(after.column("ds"), DAY), pc.equal(after.column("model_name"), m)))
        assert ids.num_rows == ROWS - 50 and not set(ids.column("entity_id").to_pylist()) & set(deleted)
    assert GONE not in set(after.column("ds").to_pylist())
    # Other days keep their very files; the scored-from transactions are left alone (see engine/forget.py).
    files_after = files_by_day(lake)
    for d in ("2026-01-01", "2026-01-03"):
        assert files_after[d] == files_before[d]
    out = DeltaTable(str(lake / "scores"))
    assert {k: out.transaction_version(f"lakescore/score/{k[0]}/{k[1]}/1") for k in txns} == txns
    assert out.version() == version_before + 4  # one commit per partition
    meta = [json.loads(h["userMetadata"]) for h in out.history(4)]
    assert {(m["job"], m["partition"], m["rows_removed"]) for m in meta} == {
        ("forget", f"ds={DAY}/model_name={m}/model_version=1", 50) for m in (XGB, MLP)} | {
        ("forget", f"ds={GONE}/model_name={m}/model_version=1", ROWS) for m in (XGB, MLP)}
    assert s["rows_removed"] == 2 * 50 + 2 * ROWS and s["rows_in"] - s["rows_out"] == s["rows_removed"]
    (entry,) = ledger.read(LakeConfig(root=str(lake)), job="forget").to_pylist()[-1:]
    assert entry["run_id"] == s["run_id"] and entry["output_table"] == "scores"
    assert {o["unit"]: o["rows_in"] - o["rows_out"] for o in entry["unit_outcomes"]} == {
        f"ds={d}/model_name={m}/model_version=1": n for d, n in ((DAY, 50), (GONE, ROWS)) for m in (XGB, MLP)}
    assert entry["inputs"][0]["version"] == DeltaTable(str(lake / "features")).version()

    code, again, _ = run_forget(lake, demo_root, capsys=capsys)
    assert code == 0 and again["outcomes"] == [] and again["rows_removed"] == 0
    assert DeltaTable(str(lake / "scores")).version() == version_before + 4  # no new commit
    assert orphan_counts(LakeConfig(root=str(lake)), "scores", KEYS) == {}


def test_forget_reaches_the_quarantine_table(ray_local, lake, demo_root, capsys, tmp_path):
    contract = quarantine_contract(tmp_path, 0.01)
    append_day(lake, set_rows(fresh_day(), "f03", [1, 5, 9], float("nan")))
    code, s = run_score(lake, demo_root, f"input.contract={contract}", f"input.ds={NEW_DAY}", capsys=capsys)
    assert code == 0, s.get("error")
    q = DeltaTable(str(lake / "quarantine")).to_pyarrow_table()
    assert q.num_rows == 3
    victim = json.loads(q.column("key")[0].as_py())["entity_id"]
    DeltaTable(str(lake / "features")).delete(f"ds = '{NEW_DAY}' AND entity_id = {victim}")
    code, s, _ = run_forget(lake, demo_root, "--table", "quarantine", capsys=capsys)
    assert code == 0, s.get("error")
    left = DeltaTable(str(lake / "quarantine")).to_pyarrow_table()
    assert sorted(r["key"] for r in left.to_pylist()) == sorted(k for k in q.column("key").to_pylist()
                                                                 if json.loads(k)["entity_id"] != victim)
    assert left.num_rows == 2


def test_unknown_table_or_key_column_is_exit_2(lake, demo_root, capsys):
    code, s, _ = run_forget(lake, demo_root, "--table", "nosuch", capsys=capsys)
    assert code == 2 and "table 'nosuch' not found" in s["error"]
    code, s, _ = run_forget(lake, demo_root, "--table", "features", capsys=capsys)
    assert code == 2 and "partitioned by ['ds']" in s["error"]
