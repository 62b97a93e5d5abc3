"""`lakescore forget`: entities deleted from an input day disappear from every model's partitions of that day, a day
whose input is gone loses all its rows, every other row stays exactly as it was (compared row for row with the table
read before, directly with deltalake), a second forget is a no-op, and the ledger records what was removed. A key is
every key column (one entity's two events are two keys), and a score run that commits while forget works keeps its
rows."""
from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from deltalake import write_deltalake

from conftest import DAYS, MLP, ROOT, ROWS, XGB
from engine.tables import ledger
from engine.config import LakeConfig
from engine.ops.forget import forget, orphan_counts
from test_contracts import CONTRACT, NEW_DAY, append_day, fresh_day, quarantine_contract, set_rows
from test_ledger import run_score

DAY = "2026-01-02"
GONE = "2026-01-04"
RACE_DAY = "2026-01-04"  # outside the contract's drift reference window: a change there rescores that day only
KEYS = ["entity_id", "event_ts"]


def run_forget(lake, demo_root, *args: str, capsys) -> tuple[int, dict, str]:
    from jobs.forget import main

    code = main(["--config", str(ROOT / "conf" / "score.yaml"), f"lake.root={lake}",
                 f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", "input.key_columns=[entity_id,event_ts]",
                 *args])
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    return code, json.loads(lines[-1]), "\n".join([*lines[:-1], *out.err.splitlines()])  # the log lines too


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
    removed = [ln for ln in text.splitlines() if "row(s) whose key is gone" in ln]
    assert len(removed) == 4 and all(" INFO " in ln for ln in removed), removed  # routine work, not a warning
    after = scores(lake)
    is_deleted = pc.and_(pc.equal(before.column("ds"), DAY), pc.is_in(before.column("entity_id"), pa.array(deleted)))
    gone = pc.or_(is_deleted, pc.equal(before.column("ds"), GONE))
    # Every other row untouched, row for row and column for column (stamps included).
    assert after.equals(before.filter(pc.invert(gone)))
    for m in (XGB, MLP):
        ids = after.filter(pc.and_(pc.equal(after.column("ds"), DAY), pc.equal(after.column("model_name"), m)))
        assert ids.num_rows == ROWS - 50 and not set(ids.column("entity_id").to_pylist()) & set(deleted)
    assert GONE not in set(after.column("ds").to_pylist())
    # Other days keep their very files; the scored-from transactions are left alone (see engine/ops/forget.py).
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

    # status still calls the day stale (its input changed), and says forget already took the deleted keys out.
    from jobs.status import main as status_main

    assert status_main(["--config", str(ROOT / "conf" / "score.yaml"), f"lake.root={lake}",
                        f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
                        "input.key_columns=[entity_id,event_ts]"]) == 0
    attention = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["attention"]
    stale = [a for a in attention if a["ds"] == DAY]
    assert len(stale) == 2 and all(a["state"] == "stale" for a in stale)
    assert all(any("forget" in n and "optional" in n for n in a["notes"]) for a in stale), stale


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


def input_rows(lake) -> Counter:
    t = DeltaTable(str(lake / "features")).to_pyarrow_table(columns=["ds", *KEYS])
    return Counter(zip(*(t.column(c).to_pylist() for c in ["ds", *KEYS])))


def scored_rows(lake, model: str) -> Counter:
    t = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds", *KEYS], filters=[("model_name", "=", model)])
    return Counter(zip(*(t.column(c).to_pylist() for c in ["ds", *KEYS])))


def day_table(lake, ds: str) -> pa.Table:
    return DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "=", ds)])


def copy_row(day: pa.Table, entity_id: int, event_ts: dt.datetime) -> pa.Table:
    """The day's first row under another key."""
    row = day.slice(0, 1)
    row = row.set_column(row.schema.get_field_index("entity_id"), "entity_id", pa.array([entity_id], pa.int64()))
    return row.set_column(row.schema.get_field_index("event_ts"), "event_ts",
                          pa.array([event_ts], row.schema.field("event_ts").type))


def replace_day(lake, ds: str, day: pa.Table) -> None:
    write_deltalake(str(lake / "features"), day, partition_by=["ds"], mode="overwrite", predicate=f"ds = '{ds}'")


def test_a_score_run_that_commits_while_forget_works_keeps_its_rows(ray_local, lake, demo_root, capsys):
    """Forget reads the day's keys, then a score run re-scores the day from a newer input (one entity deleted, a new
    one added) before forget rewrites the partition: forget must not judge the new rows by the keys it read before
    them. After a plain score run, every input row has exactly one score (direct deltalake reads)."""
    code, s = run_score(lake, demo_root, capsys=capsys)
    assert code == 0, s.get("error")
    day = day_table(lake, RACE_DAY)
    ids = day.column("entity_id").to_pylist()
    victim, newcomer = ids[7], 42  # make_day's ids start at 1_000_000
    assert newcomer not in ids
    replace_day(lake, RACE_DAY, day.filter(pc.not_equal(day.column("entity_id"), victim)))
    newer = pc.max(day.column("event_ts")).as_py()
    rival = []

    def score_meanwhile(part) -> None:
        if rival:
            return
        append_day(lake, copy_row(day, newcomer, newer))
        rival.append(run_score(lake, demo_root, capsys=capsys))

    r = forget(LakeConfig(root=str(lake)), "scores", KEYS, "features", "forget-race", before_rewrite=score_meanwhile)
    assert rival and rival[0][0] == 0, rival
    assert [(o.unit, o.rows_in) for o in r.outcomes] == [(f"ds={RACE_DAY}/model_name={XGB}/model_version=1", ROWS)]
    mine = scored_rows(lake, XGB)
    assert (RACE_DAY, newcomer, newer) in mine and not [k for k in mine if k[:2] == (RACE_DAY, victim)]
    code, s = run_score(lake, demo_root, capsys=capsys)
    assert code == 0, s.get("error")
    assert scored_rows(lake, XGB) == input_rows(lake)
    assert set(input_rows(lake).values()) == {1}
    assert r.inputs["features"] == rival[0][1]["input_version"]  # forget read the keys again, at the rival's version


def test_forget_matches_every_key_column_one_entitys_two_events_are_two_keys(ray_local, lake, demo_root, capsys,
                                                                              tmp_path):
    """An entity with two events in one day; one event is deleted from the input: exactly that row goes, from every
    model. A forget keyed on entity_id alone keeps it (the entity still has an event that day)."""
    contract = tmp_path / "two-events.yaml"
    contract.write_text(open(CONTRACT).read().replace("key: [entity_id]", "key: [entity_id, event_ts]"))
    day = day_table(lake, DAY)
    twin_id = day.column("entity_id")[0].as_py()
    first = day.column("event_ts")[0].as_py()
    replace_day(lake, DAY, pa.concat_tables([day, copy_row(day, twin_id, first + dt.timedelta(minutes=1))]))
    for uri in (f"models:/{XGB}@champion", f"models:/{MLP}/1"):
        code, s = run_score(lake, demo_root, f"model.uri={uri}", f"input.contract={contract}", capsys=capsys)
        assert code == 0, s.get("error")
    before = scores(lake)
    events = before.filter(pc.and_(pc.equal(before.column("ds"), DAY), pc.equal(before.column("entity_id"), twin_id)))
    assert events.num_rows == 4  # positive control: both events scored by both models
    day = day_table(lake, DAY)
    ts = pa.scalar(first, day.schema.field("event_ts").type)
    gone = pc.and_(pc.equal(day.column("entity_id"), twin_id), pc.equal(day.column("event_ts"), ts))
    replace_day(lake, DAY, day.filter(pc.invert(gone)))

    code, s, _ = run_forget(lake, demo_root, capsys=capsys)
    assert code == 0, s.get("error")
    assert s["rows_removed"] == 2
    removed = pc.and_(pc.and_(pc.equal(before.column("ds"), DAY), pc.equal(before.column("entity_id"), twin_id)),
                      pc.equal(before.column("event_ts"), ts))
    assert scores(lake).equals(before.filter(pc.invert(removed)))
