"""Contract hardening (issue 7): PII across overlapping patterns, string flavours, unknown row counts, odd partition
values, an unreadable drift reference, reports on a lake URL, the freshness guard.

Unit tests need no Ray; the job tests run the score job on a real local Ray and real Delta tables.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import DAYS, ROWS, score_config
from contracts.checks import row_masks
from contracts.spec import _TYPE_TESTS, Contract
from engine.errors import ConfigError, ContractViolation, InputUnavailable
from test_contracts import CONTRACT, NEW_DAY, append_day, fresh_day, reports, score, set_rows

PLANTED = "overlay.pii.5150@example.com"
BASE = {"table": "t", "key": ["id"]}


def contract(columns: dict, **kw) -> Contract:
    return Contract.model_validate({**BASE, "columns": {"id": {"type": "int", "nullable": False}, **columns}, **kw})


def schema(**cols) -> pa.Schema:
    return pa.schema([("id", pa.int64()), *cols.items()])


# --------------------------------------------------------------------------- 7: PII across overlapping patterns


def test_pii_tag_holds_when_an_earlier_pattern_matches_the_column():
    c = contract({"c_*": {"type": "string"}, "c_email": {"type": "string", "pii": True}})
    rc = c.resolve(schema(c_name=pa.string(), c_email=pa.string()))
    assert rc.pii == {"c_email"} and not rc.schema_problems


def test_pii_overlay_without_a_type_takes_the_type_of_the_other_pattern():
    c = contract({"c_*": {"type": "string", "nullable": False}, "c_email": {"pii": True}})
    rc = c.resolve(schema(c_name=pa.string(), c_email=pa.string()))
    assert rc.pii == {"c_email"}
    e = rc.columns["c_email"]
    assert (e.type, e.nullable, e.pii) == ("string", False, True)
    assert (rc.columns["c_name"].type, rc.columns["c_name"].pii) == ("string", False)


def test_compatible_specs_merge():
    c = contract({"c_f*": {"type": "float", "finite": True}, "c_f1": {"min": 0, "nullable": False},
                  "c_?1": {"max": 9}})
    rc = c.resolve(schema(c_f1=pa.float64(), c_f2=pa.float64()))
    f1, f2 = rc.columns["c_f1"], rc.columns["c_f2"]
    assert (f1.type, f1.finite, f1.min, f1.max, f1.nullable) == ("float", True, 0, 9, False)
    assert (f2.type, f2.finite, f2.min, f2.max, f2.nullable) == ("float", True, None, None, True)


@pytest.mark.parametrize("first, second, field", [
    ({"type": "string"}, {"type": "int"}, "type"),
    ({"type": "float", "min": 0}, {"min": 1}, "min"),
    ({"type": "float", "max": 5}, {"max": 6}, "max"),
    ({"type": "string", "categories": ["a", "b"]}, {"categories": ["a"]}, "categories"),
    ({"type": "string", "nullable": True}, {"nullable": False}, "nullable"),
])
def test_conflicting_specs_are_a_config_error_naming_the_column_and_both_patterns(first, second, field):
    c = contract({"c_*": first, "c_x": second})
    with pytest.raises(ConfigError) as e:
        c.resolve(schema(c_x=pa.string()))
    msg = str(e.value)
    assert e.value.exit_code == 2 and "'c_x'" in msg and "'c_*'" in msg and field in msg, msg


def test_a_column_whose_specs_name_no_type_is_a_config_error():
    c = contract({"c_e*": {"pii": True}})
    with pytest.raises(ConfigError, match="c_email.*type"):
        c.resolve(schema(c_email=pa.string()))


def test_quarantine_rows_of_an_overlay_pii_column_carry_no_pii():
    from contracts.quarantine import quarantine_batch

    c = contract({"c_*": {"type": "string", "nullable": False}, "c_email": {"pii": True}})
    batch = pa.record_batch({"id": pa.array([1, 2]), "c_name": pa.array(["a", None]),
                             "c_email": pa.array(["x@example.com", PLANTED])})
    rc = c.resolve(batch.schema)
    masks = row_masks(batch, rc, NEW_DAY)
    assert list(masks) == ["not_null:c_name"]
    import datetime as dt

    q = quarantine_batch(batch, masks["not_null:c_name"], masks, rc, 1, "r", dt.datetime.now(dt.timezone.utc))
    assert q.num_rows == 1 and PLANTED not in json.dumps(q.to_pylist(), default=str)
    assert json.loads(q.column("values")[0].as_py()) == {"id": 2, "c_name": None}


def overlay_contract(tmp_path) -> str:
    """features.yaml, quarantine mode, with email declared by a pattern first and tagged pii by its own entry."""
    text = Path(CONTRACT).read_text().replace("mode: fail_closed", "mode: quarantine")
    text = text.replace("  email: {type: string, pii: true}", '  "emai?": {type: string}\n  email: {type: string, pii: true}')
    assert '"emai?"' in text
    p = tmp_path / "overlay.yaml"
    p.write_text(text + "bad_row_budget: 0.01\n")
    return str(p)


def test_job_keeps_an_overlay_pii_column_out_of_quarantine_and_reports(ray_local, lake, demo_root, tmp_path):
    bad = set_rows(set_rows(fresh_day(), "email", [6], PLANTED), "f05", [6], 1e6)
    append_day(lake, bad)
    feats = DeltaTable(str(lake / "features")).to_pyarrow_table(filters=[("ds", "=", NEW_DAY)]).to_pylist()
    assert [r["f05"] for r in feats if r["email"] == PLANTED] == [1e6]  # positive control: planted in a failing row
    s = score(score_config(lake, demo_root, f"input.contract={overlay_contract(tmp_path)}", f"input.ds={NEW_DAY}"))
    assert s.rows_quarantined == 1 and s.committed == [NEW_DAY]
    q = DeltaTable(str(lake / "quarantine")).to_pyarrow_table().to_pylist()
    assert len(q) == 1 and json.loads(q[0]["values"])["f05"] == 1e6  # the row is there, with its non-PII values
    assert PLANTED not in json.dumps(q, default=str)
    assert all(PLANTED not in p.read_text() for p in (lake / "_reports").rglob("*.*"))


# --------------------------------------------------------------------------- 8: string flavours


@pytest.mark.parametrize("typ", [pa.string(), pa.large_string(), pa.string_view()])
def test_category_check_covers_every_string_flavour(typ):
    c = contract({"c_region": {"type": "string", "categories": ["north", "south"]}})
    batch = pa.record_batch({"id": pa.array([1, 2, 3]),
                             "c_region": pa.array(["north", "atlantis", None], pa.string()).cast(typ)})
    rc = c.resolve(batch.schema)
    assert not rc.schema_problems and _TYPE_TESTS["string"](typ)
    assert row_masks(batch, rc, NEW_DAY)["category:c_region"].tolist() == [False, True, False]


def test_large_string_values_out_of_the_category_list_fail_the_job(ray_local, lake, demo_root):
    t = set_rows(fresh_day(), "region", [11, 12], "atlantis")
    t = t.set_column(t.schema.get_field_index("region"), "region", t.column("region").cast(pa.large_string()))
    append_day(lake, t)
    dtab = DeltaTable(str(lake / "features"))
    new = [f for f in dtab.file_uris() if f"ds={NEW_DAY}" in f]
    import pyarrow.parquet as pq

    assert [pq.read_schema(f).field("region").type for f in new] == [pa.large_string()]  # the file carries it
    with pytest.raises(ContractViolation):
        score(score_config(lake, demo_root, f"input.contract={CONTRACT}", f"input.ds={NEW_DAY}"))
    (rep,) = reports(lake)
    assert {v["check"]: v["rows"] for v in rep["units"][0]["violations"]} == {"category:region": 2}
    assert not (lake / "scores").exists() or DeltaTable(str(lake / "scores")).to_pyarrow_table().num_rows == 0


# --------------------------------------------------------------------------- 10: unknown row counts


def test_volume_leaves_unknown_counts_out_of_the_median():
    from contracts.partition import volume, volume_note

    rc = Contract.model_validate({**_features_contract(), "volume": {"lookback": 3}}).resolve(pa.schema([]))
    hist = {"2026-01-01": 3000, "2026-01-02": None, "2026-01-03": None, "2026-01-04": 2900}
    assert volume(rc, "2026-01-05", 3000, hist) is None
    assert volume(rc, "2026-01-05", 300, hist).check == "volume"  # the known counts still guard the day
    assert "2 of the previous 3" in volume_note(rc, "2026-01-05", hist)
    unknown = {d: None for d in hist}
    assert volume(rc, "2026-01-05", 3000, unknown) is None
    assert "3 of the previous 3 partition(s)" in volume_note(rc, "2026-01-05", unknown)
    assert volume_note(rc, "2026-01-05", {"2026-01-04": 10}) is None


def _features_contract() -> dict:
    import yaml

    return yaml.safe_load(Path(CONTRACT).read_text())


def strip_stats(table_dir: Path, versions: int | None = None) -> int:
    """Rewrite the table's log (its first `versions` commits) without `stats` in its add actions, as a table
    converted to Delta or written without statistics has."""
    n = 0
    for p in sorted((table_dir / "_delta_log").glob("*.json"))[:versions]:
        actions = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        for a in actions:
            if "add" in a and a["add"].pop("stats", None) is not None:
                n += 1
        p.write_text("".join(json.dumps(a) + "\n" for a in actions))
    return n


def test_volume_passes_normal_days_when_the_log_has_no_row_counts(ray_local, lake, demo_root):
    assert strip_stats(lake / "features") == DAYS
    assert DeltaTable(str(lake / "features")).get_add_actions(flatten=True).column("num_records").to_pylist() == [None] * DAYS
    s = score(score_config(lake, demo_root, f"input.contract={CONTRACT}"))
    assert s.units_committed == DAYS and not s.violations
    (rep,) = reports(lake)
    assert [u["status"] for u in rep["units"]] == ["pass"] * DAYS
    notes = [u["notes"] for u in rep["units"]]
    assert notes[0] == [] and all("no row count in the log" in n[0] for n in notes[1:]), notes
    assert "3 of the previous 3 partition(s)" in notes[3][0]


def test_volume_with_some_unknown_counts_still_fails_a_tenfold_drop(ray_local, lake, demo_root):
    assert strip_stats(lake / "features", versions=2) == 2  # days 1 and 2 unknown, days 3 and 4 known
    append_day(lake, fresh_day(rows=ROWS // 10))
    with pytest.raises(ContractViolation, match=r"the median 3000 of the previous 2 partition\(s\); 2 more had no row"):
        score(score_config(lake, demo_root, f"input.contract={CONTRACT}", f"input.ds={NEW_DAY}"))
    (rep,) = reports(lake)
    assert rep["units"][0]["notes"] == [
        "2 of the previous 4 partition(s) have no row count in the log (a table converted to Delta or written without "
        "statistics): left out of the volume check; the median uses the other 2"]


# --------------------------------------------------------------------------- 11: odd partition values


@pytest.mark.parametrize("bad", [None, "2026-1-5", "20260105", "2026-02-30", "yesterday"])
def test_open_snapshot_refuses_a_null_or_non_iso_ds(tmp_path, bad):
    from engine.lake.snapshot import open_snapshot

    t = pa.table({"x": pa.array([1, 2, 3]), "ds": pa.array(["2026-01-01", bad, bad], pa.string())})
    write_deltalake(str(tmp_path / "t"), t, partition_by=["ds"])
    with pytest.raises(ContractViolation) as e:
        open_snapshot("feats", str(tmp_path / "t"))
    msg = str(e.value)
    named = "1 with a null ds" if bad is None else f"1 with ds [{bad!r}]"
    assert e.value.exit_code == 3 and "feats@v0" in msg and "1 data file(s)" in msg and named in msg, msg


def test_score_job_refuses_a_null_ds_and_writes_nothing(ray_local, lake, demo_root):
    t = fresh_day(rows=50)
    append_day(lake, t.set_column(t.schema.get_field_index("ds"), "ds", pa.nulls(t.num_rows, pa.string())))
    with pytest.raises(ContractViolation, match=r"features@v4.*null or invalid partition value") as e:
        score(score_config(lake, demo_root, f"input.contract={CONTRACT}", "input.ds=2026-01-04"))
    assert e.value.exit_code == 3
    assert not (lake / "scores").exists()


# --------------------------------------------------------------------------- 12: drift reference


def _reference_file(lake: Path, day: str) -> Path:
    (f,) = [Path(u) for u in DeltaTable(str(lake / "features")).file_uris() if f"ds={day}" in u]
    return f


@pytest.mark.parametrize("damage", ["vacuumed", "corrupt"])
def test_unreadable_drift_reference_is_input_unavailable_and_writes_nothing(ray_local, lake, demo_root, damage):
    f = _reference_file(lake, "2026-01-01")
    if damage == "vacuumed":
        f.unlink()
    else:
        f.write_bytes(b"PAR1 not a parquet file at all PAR1")
    with pytest.raises(InputUnavailable) as e:
        score(score_config(lake, demo_root, f"input.contract={CONTRACT}", "input.ds=2026-01-04"))
    msg = str(e.value)
    assert e.value.exit_code == 5 and "drift reference" in msg and "2026-01-01..2026-01-03" in msg, msg
    assert not (lake / "scores").exists()


def test_reference_is_streamed_exactly_when_small_and_from_a_bounded_sample_when_large():
    from engine.drift import stream_reference

    rng = np.random.default_rng(5)
    x = rng.standard_normal(10_000)
    x[::97] = np.nan
    tables = [pa.table({"f": x[i:i + 1234]}) for i in range(0, len(x), 1234)]

    def batches():
        for t in tables:
            yield from t.to_batches(max_chunksize=500)

    finite = x[np.isfinite(x)]
    exact = np.unique(np.quantile(finite, np.linspace(0, 1, 11)[1:-1]))  # the independent reference: numpy
    edges, hist = stream_reference(batches, ["f"], 10, sample_rows=100_000)
    assert np.array_equal(edges["f"], exact)
    assert hist["f"].tolist() == np.histogram(finite, bins=[-np.inf, *exact, np.inf])[0].tolist()
    small_edges, small_hist = stream_reference(batches, ["f"], 10, sample_rows=1000)
    assert np.abs(small_edges["f"] - exact).max() < 0.15  # a bounded sample: close to the exact edges
    assert small_hist["f"].tolist() == np.histogram(finite, bins=[-np.inf, *small_edges["f"], np.inf])[0].tolist()
    again = stream_reference(batches, ["f"], 10, sample_rows=1000)
    assert np.array_equal(again[0]["f"], small_edges["f"]) and np.array_equal(again[1]["f"], small_hist["f"])
    rebatched = stream_reference(lambda: pa.table({"f": x}).to_batches(max_chunksize=333), ["f"], 10, sample_rows=1000)
    assert np.array_equal(rebatched[0]["f"], small_edges["f"])  # batch sizes do not move the sample


# --------------------------------------------------------------------------- 13: reports on a lake URL


def _enforcer(lake: Path):
    from contracts.enforce import Enforcer
    from engine.lake.snapshot import open_snapshot

    snap = open_snapshot("features", str(lake / "features"))
    enf = Enforcer(CONTRACT, snap, ["entity_id"], [])
    enf.verdict("2026-01-04", ROWS, None)
    return enf


def test_report_on_a_file_uri_lake_lands_in_the_lake_not_in_a_local_file_colon_dir(lake, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    path = _enforcer(lake).write_report(f"file://{lake}", "score", "run1")
    assert os.listdir(cwd) == []  # nothing named "file:" under the working directory
    rep = json.loads((lake / "_reports" / "score" / "run1.json").read_text())
    assert rep["units"][0]["ds"] == "2026-01-04" and (lake / "_reports" / "score" / "run1.txt").exists()
    assert path.endswith("_reports/score/run1.json")


def test_report_for_an_object_store_root_is_written_on_the_lakes_filesystem(lake, tmp_path, monkeypatch):
    """memory:// is delta-rs's in-memory object store: the same handler as s3:// and gs://, without a network."""
    monkeypatch.chdir(tmp_path)
    shown = _enforcer(lake).write_report("memory:///lake", "score", "run1")
    assert os.listdir(tmp_path) == ["lake"]  # no local "memory:" directory beside the test's lake
    assert shown == "memory:///lake/_reports/score/run1.json"
    from contracts.enforce import report_target, write_report_files

    fs, base, folder = report_target("memory:///lake", "score")
    assert not isinstance(fs, pafs.LocalFileSystem) and base == "_reports/score" and folder.startswith("memory:///")
    write_report_files(fs, base, {"run2.json": '{"ok": 1}', "run2.txt": "ok\n"})
    with fs.open_input_stream("_reports/score/run2.json") as f:
        assert json.loads(f.read()) == {"ok": 1}
    # The same relative paths on a local stand-in for a bucket
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    write_report_files(pafs.SubTreeFileSystem(str(bucket), pafs.LocalFileSystem()), base, {"run3.json": "{}"})
    assert [p.name for p in (bucket / "_reports" / "score").iterdir()] == ["run3.json"]


# --------------------------------------------------------------------------- 18: freshness


def test_stale_newest_partition_fails_freshness_and_writes_nothing(ray_local, lake, demo_root, tmp_path):
    import datetime as dt

    newest = dt.date.fromisoformat("2026-01-04")
    age = (dt.datetime.now(dt.timezone.utc).date() - newest).days
    assert age > 1, "the demo days must be in the past"
    stale = tmp_path / "stale.yaml"
    stale.write_text(Path(CONTRACT).read_text().replace("max_age_days: null", f"max_age_days: {age - 1}"))
    with pytest.raises(ContractViolation, match="freshness") as e:
        score(score_config(lake, demo_root, f"input.contract={stale}", "input.ds=2026-01-04"))
    assert e.value.exit_code == 3 and f"{age} days old" in str(e.value)
    assert not (lake / "scores").exists() or DeltaTable(str(lake / "scores")).to_pyarrow_table().num_rows == 0
    (rep,) = reports(lake)
    assert [v["check"] for v in rep["units"][0]["violations"]] == ["freshness"]


# --------------------------------------------------------------------------- issue 18, 13: null keys


def key_contract(typ: str, nullable: bool) -> Contract:
    return Contract.model_validate({"table": "t", "key": ["id"], "columns": {"id": {"type": typ, "nullable": nullable},
                                                                             "v": {"type": "float"}}})


NULL_KEYS = {"int": [1, None, 2, None, None, 3, 3, 4], "string": ["a", None, "None", None, None, "c", "c", "d"]}


@pytest.mark.parametrize("nullable", [False, True])
@pytest.mark.parametrize("typ", ["int", "string"])
def test_null_keys_are_not_null_failures_never_duplicates(tmp_path, typ, nullable):
    """Three null keys, two rows sharing a real key (and, for strings, the text "None"): 3 not_null failures and 2
    duplicate rows, in one chunk and spilled over two, with no RuntimeWarning (an int key was cast from NaN)."""
    import warnings

    import pandas as pd

    from contracts.enforce import ContractCheck
    from engine.executor import LocalExecutor
    from engine.work import ChunkWork, UnitWork

    ids = NULL_KEYS[typ]
    batch = pa.record_batch({"id": pa.array(ids, pa.int64() if typ == "int" else pa.string()),
                             "v": pa.array(np.arange(len(ids), dtype=np.float64))})
    ref = pd.Series(ids, dtype=object)
    want_null, want_dups = int(ref.isna().sum()), int(ref.dropna().duplicated(keep=False).sum())
    assert (want_null, want_dups) == (3, 2)  # the reference, with pandas
    check = ContractCheck(key_contract(typ, nullable).resolve(batch.schema), {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole = check.new_stats()
        check.check(batch, NEW_DAY, whole)
        whole = check.seal(whole, UnitWork("u", NEW_DAY, "", None, None, row_check=check), ChunkWork("u", ()))
        assert whole.failed == {"not_null:id": want_null} and whole.duplicate_keys() == want_dups
        unit = UnitWork("u", NEW_DAY, "", None, None, row_check=check, scratch_uri=str(tmp_path / "keys"),
                        key_buckets=2, key_salt=bytes(range(16)))
        merged = check.new_stats()
        for i, part in enumerate([batch.slice(0, 4), batch.slice(4)]):
            stats = check.new_stats()
            check.check(part, NEW_DAY, stats)
            merged.merge(check.seal(stats, unit, ChunkWork("u", (), i)))
        check.complete(merged, unit, LocalExecutor().run, float("inf"))
        assert merged.failed == {"not_null:id": want_null} and merged.duplicate_keys() == want_dups


def test_a_day_with_null_keys_fails_not_null_and_reports_no_duplicates(ray_local, lake, demo_root):
    append_day(lake, set_rows(fresh_day(), "entity_id", [1, 5, 9], None))
    with pytest.raises(ContractViolation) as e:
        score(score_config(lake, demo_root, f"input.contract={CONTRACT}", f"input.ds={NEW_DAY}"))
    assert e.value.exit_code == 3
    (unit,) = [u for u in reports(lake)[-1]["units"] if u["ds"] == NEW_DAY]
    assert {v["check"]: v["rows"] for v in unit["violations"]} == {"not_null:entity_id": 3}
    scores = lake / "scores"
    assert not scores.exists() or DeltaTable(str(scores)).to_pyarrow_table(columns=["ds"]).num_rows == 0

