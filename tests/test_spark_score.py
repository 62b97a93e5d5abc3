"""The score job on Spark (file-level Spark tasks, engine.spark.executor) against the same job on Ray: one table
whichever engine wrote it. Real local Spark (local[2,2]: a failed task attempt is retried), real Ray, real Delta.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from deltalake import DeltaTable

from conftest import DAYS, ROWS, XGB, score_config
from engine.ray.executor import executor
from engine.spark.executor import SparkExecutor
from jobs.score import run_score
from test_contracts import NEW_DAY, append_day, fresh_day, quarantine_contract, set_rows

pytestmark = pytest.mark.slow
DETERMINISTIC = ["model_name", "model_version", "model_run_id", "input_table", "input_version", "config_hash"]


def rows_of(path, *extra: str) -> list[dict]:
    """A deltalake read of a scores table, sorted by (ds, entity_id): the independent reference."""
    t = DeltaTable(str(path)).to_pyarrow_table(columns=["ds", "entity_id", "event_ts", "score", *DETERMINISTIC, *extra])
    return sorted(t.to_pylist(), key=lambda r: (r["ds"], r["entity_id"]))


def data_files(path) -> set[str]:
    return {str(p.resolve()) for p in path.rglob("*.parquet")}


def referenced(path) -> set[str]:
    """Files the table's log references (deltalake), as absolute local paths."""
    return {str(Path(u.removeprefix("file://")).resolve()) for u in DeltaTable(str(path)).file_uris()}


def test_ray_and_spark_write_identical_keys_scores_and_stamps(spark, ray_local, lake, demo_root):
    cfg_ray = score_config(lake, demo_root, "output.table=scores_ray")
    cfg_spark = score_config(lake, demo_root, "output.table=scores_spark", "engine=spark")
    r = run_score(cfg_ray, executor(cfg_ray.ray))
    s = run_score(cfg_spark, SparkExecutor(spark, cfg_spark.spark))
    assert r.units_committed == s.units_committed == DAYS and r.rows_out == s.rows_out == DAYS * ROWS
    ray_rows, spark_rows = rows_of(lake / "scores_ray", "run_id"), rows_of(lake / "scores_spark", "run_id")
    # run_id and scored_at differ by nature; config_hash here only because the two output tables differ in name.
    for rows, summary in ((ray_rows, r), (spark_rows, s)):
        assert {(x.pop("run_id"), x.pop("config_hash")) for x in rows} == {(summary.run_id, summary.config_hash)}
    assert ray_rows == spark_rows  # keys, scores (float32, equal), deterministic stamps
    volatile = ("run_id", "scored_at", "config_hash")
    meta = lambda p: sorted(({k: v for k, v in json.loads(h["userMetadata"]).items() if k not in volatile}
                             for h in DeltaTable(str(p)).history() if "userMetadata" in h), key=lambda m: m["ds"])
    assert meta(lake / "scores_ray") == meta(lake / "scores_spark") and len(meta(lake / "scores_ray")) == DAYS
    # No file outside what the log references: every attempt's files were kept or swept.
    out = lake / "scores_spark"
    assert data_files(out) == referenced(out)


def test_a_unit_scored_by_one_engine_is_done_for_the_other(spark, ray_local, lake, demo_root):
    cfg_ray = score_config(lake, demo_root)
    cfg_spark = score_config(lake, demo_root, "engine=spark")
    assert run_score(cfg_ray, executor(cfg_ray.ray)).units_committed == DAYS
    version = DeltaTable(str(lake / "scores")).version()
    again = run_score(cfg_spark, SparkExecutor(spark, cfg_spark.spark))
    assert (again.units_skipped, again.units_committed) == (DAYS, 0)
    append_day(lake, fresh_day())
    s = run_score(cfg_spark, SparkExecutor(spark, cfg_spark.spark))
    assert s.committed == [NEW_DAY] and s.units_skipped == DAYS
    back = run_score(cfg_ray, executor(cfg_ray.ray))
    assert (back.units_skipped, back.units_committed) == (DAYS + 1, 0)
    assert DeltaTable(str(lake / "scores")).version() == version + 1
    assert len(rows_of(lake / "scores")) == (DAYS + 1) * ROWS


def test_quarantine_on_spark_gives_the_same_rows_as_on_ray(spark, ray_local, lake, demo_root, tmp_path):
    bad = set_rows(set_rows(fresh_day(), "f03", [2, 8], float("nan")), "region", [8, 9], "mars")
    append_day(lake, bad)
    contract = quarantine_contract(tmp_path, 0.01)
    got = {}
    for name in ("ray", "spark"):
        cfg = score_config(lake, demo_root, f"input.contract={contract}", f"input.ds={NEW_DAY}", f"engine={name}",
                           f"output.table=scores_{name}", f"output.quarantine_table=quarantine_{name}")
        ex = SparkExecutor(spark, cfg.spark) if name == "spark" else executor(cfg.ray)
        s = run_score(cfg, ex)
        assert (s.rows_in, s.rows_out, s.rows_quarantined, s.committed) == (ROWS, ROWS - 3, 3, [NEW_DAY])
        q = DeltaTable(str(lake / f"quarantine_{name}")).to_pyarrow_table()
        got[name] = sorted((r["key"], sorted(r["failed_checks"]), r["values"], r["source_version"], r["ds"],
                            r["source_table"]) for r in q.to_pylist())
        assert data_files(lake / f"quarantine_{name}") == referenced(lake / f"quarantine_{name}")
    ids = bad.column("entity_id").to_pylist()
    assert got["ray"] == got["spark"] and {json.loads(k)["entity_id"] for k, *_ in got["spark"]} == {ids[2], ids[8], ids[9]}
    drop_hash = lambda rows: [{k: v for k, v in x.items() if k != "config_hash"} for x in rows]  # table names differ
    assert drop_hash(rows_of(lake / "scores_ray")) == drop_hash(rows_of(lake / "scores_spark"))


class FlakyFirstAttempt:
    """Runs the Spark executor with every unit's chunk function wrapped: chunk 0's first attempt writes its files,
    leaves a marker, then raises (a task that dies after writing); Spark retries it."""

    def __init__(self, inner: SparkExecutor, marker_dir):
        self.inner, self.marker_dir = inner, str(marker_dir)

    def warm_up(self) -> None:
        self.inner.warm_up()

    def run(self, units, chunks, bundle, deadline):
        marker_dir = self.marker_dir

        def flaky(unit, chunk, bundle):
            import os

            from pyspark import TaskContext

            from engine.score.scoring import score_chunk

            result = score_chunk(unit, chunk, bundle)
            if chunk.index == 0 and TaskContext.get().attemptNumber() == 0:
                open(os.path.join(marker_dir, f"failed-{chunk.index}"), "w").close()
                raise RuntimeError("injected failure after writing")
            return result

        wrapped = {name: dataclasses.replace(u, task=flaky) for name, u in units.items()}
        return self.inner.run(wrapped, chunks, bundle, deadline)


def test_a_failed_task_attempt_leaves_one_copy_of_the_rows_and_no_orphan_files(spark, lake, demo_root, tmp_path):
    cfg = score_config(lake, demo_root, "engine=spark", "input.ds=2026-01-01")
    marks = tmp_path / "marks"
    marks.mkdir()
    s = run_score(cfg, FlakyFirstAttempt(SparkExecutor(spark, cfg.spark), marks))
    assert [p.name for p in marks.iterdir()] == ["failed-0"]  # the first attempt did fail, after writing
    assert s.committed == ["2026-01-01"] and s.rows_out == ROWS
    out = lake / "scores"
    t = DeltaTable(str(out)).to_pyarrow_table(columns=["entity_id"])
    ids = t.column("entity_id").to_pylist()
    assert len(ids) == len(set(ids)) == ROWS  # exactly one copy
    assert data_files(out) == referenced(out)  # the failed attempt's files were swept


class WaitForFirstCommit:
    """The last unit's chunks wait (bounded) for a marker that the job's before-commit hook writes for the first
    commit: if units were committed only when the whole Spark run ends, the last unit would time out and fail."""

    def __init__(self, inner: SparkExecutor, marker: str, last: str):
        self.inner, self.marker, self.last = inner, marker, last

    def warm_up(self) -> None:
        self.inner.warm_up()

    def run(self, units, chunks, bundle, deadline):
        marker, last = self.marker, self.last

        def gated(unit, chunk, bundle):
            import os
            import time

            from engine.score.scoring import score_chunk

            if unit.ds == last:
                give_up = time.monotonic() + 90
                while not os.path.exists(marker):
                    if time.monotonic() > give_up:
                        raise RuntimeError("no unit was committed while this one ran")
                    time.sleep(0.2)
            return score_chunk(unit, chunk, bundle)

        wrapped = {name: dataclasses.replace(u, task=gated) for name, u in units.items()}
        return self.inner.run(wrapped, chunks, bundle, deadline)


def test_spark_units_are_committed_as_their_jobs_finish_not_at_the_end(spark, lake, demo_root, tmp_path):
    from engine.score.run import Hooks

    cfg = score_config(lake, demo_root, "engine=spark", "spark.units_in_flight=2")
    marker = str(tmp_path / "first-commit")
    last = f"2026-01-0{DAYS}"
    order = []

    def before_commit(unit):
        order.append(unit.partition_values["ds"])
        open(marker, "a").close()

    s = run_score(cfg, WaitForFirstCommit(SparkExecutor(spark, cfg.spark), marker, last), hooks=Hooks(before_commit=before_commit))
    # The last day ran only after another day was committed; the finishing order of the others is free.
    assert s.units_committed == DAYS and sorted(order) == [f"2026-01-0{i + 1}" for i in range(DAYS)] and order[0] != last


def test_a_ray_run_and_a_spark_run_of_one_unit_at_once_leave_one_copy_and_both_succeed(spark, ray_local, lake,
                                                                                         demo_root):
    import threading

    from engine.score.run import Hooks

    day = "2026-01-03"
    cfg_ray = score_config(lake, demo_root, f"input.ds={day}")
    cfg_spark = score_config(lake, demo_root, f"input.ds={day}", "engine=spark")
    barrier = threading.Barrier(2, timeout=180)
    results, errors = {}, []

    def run(name, cfg, make_executor):
        try:
            results[name] = run_score(cfg, make_executor(), hooks=Hooks(after_check=lambda units: units and barrier.wait()))
        except Exception as e:  # surfaced by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run, args=("ray", cfg_ray, lambda: executor(cfg_ray.ray))),
               threading.Thread(target=run, args=("spark", cfg_spark, lambda: SparkExecutor(spark, cfg_spark.spark)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    # Both passed the "already done?" check; exactly one committed the day, the other found it done.
    outcomes = sorted((r.committed, r.already_done) for r in results.values())
    assert outcomes == [([], [day]), ([day], [])], outcomes
    winner = next(r for r in results.values() if r.committed)
    t = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds", "entity_id", "run_id"])
    assert t.num_rows == ROWS and set(t.column("ds").to_pylist()) == {day}
    assert set(t.column("run_id").to_pylist()) == {winner.run_id}
    commits = [json.loads(h["userMetadata"]) for h in DeltaTable(str(lake / "scores")).history() if "userMetadata" in h]
    assert [m["run_id"] for m in commits if m.get("ds") == day] == [winner.run_id]
    out = lake / "scores"
    assert data_files(out) == referenced(out)  # the loser's files were dropped


def test_spark_sql_reads_the_table_the_spark_engine_wrote_with_its_history_and_time_travel(spark, lake, demo_root):
    first_days, all_days = "2026-01-01..2026-01-02", [f"2026-01-0{i + 1}" for i in range(DAYS)]
    cfg = score_config(lake, demo_root, "engine=spark", f"input.ds={first_days}")
    s1 = run_score(cfg, SparkExecutor(spark, cfg.spark))
    path = str(lake / "scores")
    v1 = DeltaTable(path).version()
    cfg = score_config(lake, demo_root, "engine=spark")
    s2 = run_score(cfg, SparkExecutor(spark, cfg.spark))
    assert (s1.units_committed, s2.units_committed, s2.units_skipped) == (2, DAYS - 2, 2)
    dt = DeltaTable(path)
    src = f"delta.`{path}`"

    # Time travel: every version's count and per-partition counts as deltalake reads them at that version.
    for v in range(dt.version() + 1):
        expected = DeltaTable(path, version=v).to_pyarrow_table(columns=["ds", "model_name", "model_version"])
        got = spark.sql(f"SELECT ds, model_name, model_version, count(*) AS n FROM {src} VERSION AS OF {v} "
                        "GROUP BY ds, model_name, model_version").collect()
        want = expected.group_by(["ds", "model_name", "model_version"]).aggregate([([], "count_all")]).to_pylist()
        assert ({(r["ds"], r["model_name"], r["model_version"]): r["n"] for r in got}
                == {(r["ds"], r["model_name"], r["model_version"]): r["count_all"] for r in want}), f"version {v}"
    at_v1 = spark.sql(f"SELECT count(*) AS n FROM {src} VERSION AS OF {v1}").first()["n"]
    assert at_v1 == DeltaTable(path, version=v1).to_pyarrow_dataset().count_rows() == 2 * ROWS
    assert spark.sql(f"SELECT count(*) AS n FROM {src}").first()["n"] == dt.to_pyarrow_dataset().count_rows() == DAYS * ROWS

    # DESCRIBE HISTORY: one commit per unit, its stamps in userMetadata, as deltalake's history() has them.
    hist = spark.sql(f"DESCRIBE HISTORY {src}").select("version", "userMetadata").collect()
    spark_meta = {r["version"]: json.loads(r["userMetadata"]) for r in hist if r["userMetadata"]}
    assert spark_meta == {h["version"]: json.loads(h["userMetadata"]) for h in dt.history() if "userMetadata" in h}
    assert sorted(m["ds"] for m in spark_meta.values()) == all_days
    run_of = {d: (s1.run_id if d <= "2026-01-02" else s2.run_id) for d in all_days}
    for m in spark_meta.values():
        assert (m["model_name"], m["model_version"], m["input_table"], m["input_version"], m["rows"]) == (
            XGB, 1, "features", DAYS - 1, ROWS)
        assert m["run_id"] == run_of[m["ds"]] and m["job"] == "score"
    assert max(v for v, m in spark_meta.items() if m["run_id"] == s1.run_id) == v1
    # The rows' own stamps, read by Spark SQL, agree with each unit's commit metadata.
    stamps = spark.sql(f"SELECT DISTINCT ds, run_id, model_run_id, input_version, config_hash FROM {src}").collect()
    assert sorted(tuple(r) for r in stamps) == sorted(
        (m["ds"], m["run_id"], m["model_run_id"], m["input_version"], m["config_hash"]) for m in spark_meta.values())
