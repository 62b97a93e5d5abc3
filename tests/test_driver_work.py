"""Driver work that does not grow with the rows (issue 20, item 4): what the driver itself spends, measured by itself.

Real parts: the score job on real Delta tables and the shared MLflow registry; the bench's own parsing of a job log.
"""
from __future__ import annotations

import json
import resource
import sys

import numpy as np
import pytest

from conftest import ROOT, score_config
from engine.executor import LocalExecutor
from jobs.score import run_score

sys.path.insert(0, str(ROOT / "benchmarks"))


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def test_the_summary_line_reports_the_driver_process_cpu_seconds(lake, demo_root):
    cfg = score_config(lake, demo_root, "input.ds=2026-01-04", "input.contract=null")
    before = _cpu()
    s = run_score(cfg, LocalExecutor())
    after = _cpu()
    line = json.loads(json.dumps(s.as_line(), default=str))  # as the job prints it
    assert s.units_committed == 1
    # The process's own CPU clock (every thread), read by this test around the run: the line's figure lies between.
    assert before - 0.01 <= line["driver_cpu_s"] <= after + 0.01


def test_the_bench_reads_the_drivers_cpu_seconds_and_compares_the_sizes():
    import job
    import report

    summary = {"job": "score", "elapsed_s": 3.0, "driver_cpu_s": 2.5}
    lines = ["2026-01-01 12:00:00,000 INFO lakescore: config abc", json.dumps(summary)]
    assert job._profile(lines, 0.0, 10.0)["driver_cpu_s"] == 2.5
    small = {"rows": 1_000_000, "profile": {"driver_cpu_s": 2.0}}
    fine = report.driver_cpu({"rss_small": small, "rss_large": {"rows": 16_000_000, "profile": {"driver_cpu_s": 2.3}}})
    assert fine == {"driver_cpu_s_small": 2.0, "driver_cpu_s_large": 2.3, "driver_cpu_ratio_large_small": 1.15,
                    "driver_cpu_ratio_ok": True}
    grown = report.driver_cpu({"rss_small": small, "rss_large": {"rows": 16_000_000, "profile": {"driver_cpu_s": 5.0}}})
    assert grown["driver_cpu_ratio_large_small"] == 2.5 and grown["driver_cpu_ratio_ok"] is False
    assert report.driver_cpu({"rss_small": None, "rss_large": None})["driver_cpu_ratio_ok"] is None


def _committed_days(uri) -> list[str]:
    """The days the score table's commits carry (their userMetadata), oldest first: read from the Delta log."""
    from deltalake import DeltaTable

    history = reversed(DeltaTable(str(uri)).history()) if (uri / "_delta_log").exists() else []
    return [json.loads(h["userMetadata"])["ds"] for h in history if "userMetadata" in h]


def test_a_days_key_uniqueness_stage_never_stalls_the_commit_of_another_day(lake, demo_root):
    """Day A (three files: three chunks, so its key uniqueness needs the second stage) is held inside that stage until
    day B, planned after it, has committed (seen in the table's Delta history). A second stage run inline in the result
    loop would wait forever for a commit it blocks: the hook gives up after HOLD_S and says so."""
    import time

    import pandas as pd

    from conftest import DAYS
    from engine.demo.data import make_day
    from engine.errors import ContractViolation
    from engine.score.units import Hooks
    from test_contracts import CONTRACT, set_rows
    from test_pipelines import append

    day_a, day_b, hold_s = "2026-01-05", "2026-01-06", 60
    a = set_rows(make_day(DAYS, day_a, 3000, 50, seed=21)[0], "entity_id", [10], 0)
    a = set_rows(a, "entity_id", [2900], 0)  # one key in the first and the last file: only the second stage sees it
    expected = int(pd.Series(a.column("entity_id").to_pylist()).duplicated(keep=False).sum())
    assert expected == 2
    append(lake, a, files=3)
    append(lake, make_day(DAYS + 1, day_b, 3000, 50, seed=21)[0])
    held: list[str] = []

    def hold(ds: str) -> None:
        if ds != day_a:
            return
        end = time.monotonic() + hold_s
        while time.monotonic() < end:
            if day_b in _committed_days(lake / "scores"):
                held.append("released: day B committed while day A's second stage was held")
                return
            time.sleep(0.2)
        held.append(f"timed out: day B did not commit within {hold_s}s while day A's second stage was held")

    cfg = score_config(lake, demo_root, f"input.contract={CONTRACT}", f"input.ds={day_a}..{day_b}",
                       "output.target_file_rows=1000")
    with pytest.raises(ContractViolation) as e:
        run_score(cfg, LocalExecutor(), hooks=Hooks(before_second_stage=hold))
    assert held == ["released: day B committed while day A's second stage was held"]
    s = e.value.summary
    assert s.committed == [day_b] and [f.ds for f in s.failures] == [day_a]
    assert [(v["check"], v["rows"]) for v in s.violations if v["ds"] == day_a] == [("unique_key", expected)]
    assert _committed_days(lake / "scores") == [day_b]
    assert not (lake / "_scratch").exists()


# ------------------------------------------------------------------ the drift reference, built in the workers

WINDOW = ["2026-01-01", "2026-01-02", "2026-01-03"]  # the contract's drift.reference (one file per day here)


def _window_values(lake, column: str) -> np.ndarray:
    """The window's values of `column` in the reference's row order (days in order; one file each), read with
    deltalake directly."""
    from deltalake import DeltaTable

    dt = DeltaTable(str(lake / "features"))
    return np.concatenate([dt.to_pyarrow_table(columns=[column], filters=[("ds", "=", d)]).column(column)
                           .to_numpy().astype(np.float64) for d in WINDOW])


def _numpy_reference(lake, column: str, bins: int, sample_rows: int):
    """Independent numpy: edges from every s-th row (s the smallest power of two leaving at most `sample_rows`
    rows), histogram over every finite row with np.histogram."""
    v = _window_values(lake, column)
    s = 1
    while -(-len(v) // s) > sample_rows:
        s *= 2
    sample = v[::s]
    sample = sample[np.isfinite(sample)]
    edges = np.unique(np.quantile(sample, np.linspace(0, 1, bins + 1)[1:-1]))
    return edges, np.histogram(v[np.isfinite(v)], bins=[-np.inf, *edges, np.inf])[0], s


class _DriverReads:
    """Rows read from Parquet files in this process (the driver): every pyarrow ParquetFile batch and table read."""

    def __init__(self, monkeypatch):
        import pyarrow.parquet as pq

        self.rows = 0
        for name in ("iter_batches", "read", "read_row_group", "read_row_groups"):
            original = getattr(pq.ParquetFile, name)
            monkeypatch.setattr(pq.ParquetFile, name, self._counting(original, name == "iter_batches"))

    def _counting(self, original, streaming: bool):
        def wrapper(pf, *args, **kwargs):
            out = original(pf, *args, **kwargs)
            if not streaming:
                self.rows += out.num_rows
                return out
            return self._count(out)

        return wrapper

    def _count(self, batches):
        for b in batches:
            self.rows += b.num_rows
            yield b


def _ray_executor(lake, demo_root, **kw):
    from engine.ray.executor import RayTasksExecutor

    return RayTasksExecutor(score_config(lake, demo_root).ray, **kw)


def _enforcer(lake, run=None, **kw):
    import time

    from contracts.enforce import Enforcer
    from engine.lake.snapshot import open_snapshot
    from test_contracts import CONTRACT

    snap = open_snapshot("features", str(lake / "features"))
    return Enforcer(CONTRACT, snap, ["entity_id"], [], run=run, deadline=time.monotonic() + 600, **kw)


def test_the_contract_reference_is_built_by_the_workers_and_the_driver_reads_no_row(ray_local, lake, demo_root,
                                                                                   monkeypatch):
    from engine.tables.drift_reference import TABLE

    reads = _DriverReads(monkeypatch)
    enf = _enforcer(lake, _ray_executor(lake, demo_root).run, reference_table=str(lake / TABLE))
    assert reads.rows == 0  # every row of the window was read in Ray workers
    assert not enf.reference_reused
    for c in ("f00", "f07", "f49"):
        edges, counts, stride = _numpy_reference(lake, c, 10, 100_000)
        assert stride == 1
        assert np.array_equal(enf.edges[c], edges) and enf.ref_hist[c].tolist() == counts.tolist()
    again = _enforcer(lake, lambda *a: pytest.fail("a stored reference is reused, not rebuilt"),
                      reference_table=str(lake / TABLE))
    assert again.reference_reused and all(np.array_equal(again.ref_hist[c], h) for c, h in enf.ref_hist.items())
    local = _DriverReads(monkeypatch)  # positive control: in process, the hook sees every row, once per stage
    _enforcer(lake)
    assert local.rows == 2 * len(_window_values(lake, "f00"))


@pytest.mark.parametrize("sample_rows", [100_000, 1_000, 333])
def test_worker_built_edges_and_histograms_equal_numpy_and_the_old_driver_pass_whatever_the_workers(
        ray_local, lake, demo_root, sample_rows):
    """Stride 1 (every row), 16 and 32: the same numbers from numpy over a direct deltalake read, from the driver's
    former single pass (engine.drift.stream_reference over the same files), and from 1, 2 or in-process workers."""
    import time

    from engine.drift import stream_reference
    from engine.executor import LocalExecutor
    from engine.lake.snapshot import file_path, filesystem, iter_file_batches, open_snapshot
    from engine.tables.drift_reference import build_reference

    snap = open_snapshot("features", str(lake / "features"))
    cols = ["f00", "f13", "f49"]
    runs = {"in process": LocalExecutor().run, "ray, 2 CPUs": _ray_executor(lake, demo_root).run,
            "ray, 1 in flight": _one_in_flight(lake, demo_root).run}
    built = {name: build_reference(snap, WINDOW, cols, 10, run, time.monotonic() + 600, "test", sample_rows=sample_rows)
             for name, run in runs.items()}
    fs, base = filesystem(snap.uri, {})
    paths = [file_path(base, f.path) for d in WINDOW for f in snap.files[d]]
    old = stream_reference(lambda: (b for p in paths for b in iter_file_batches(fs, p, cols, 4096)), cols, 10,
                           sample_rows=sample_rows)
    for c in cols:
        edges, counts, stride = _numpy_reference(lake, c, 10, sample_rows)
        assert stride == {100_000: 1, 1_000: 16, 333: 32}[sample_rows]
        for name, (e, h) in {**built, "old driver pass": old}.items():
            assert np.array_equal(e[c], edges), (name, c)
            assert h[c].dtype == np.int64 and h[c].tolist() == counts.tolist(), (name, c)


def _one_in_flight(lake, demo_root):
    from engine.config.sections import RayConfig
    from engine.ray.executor import RayTasksExecutor

    cfg = score_config(lake, demo_root).ray
    return RayTasksExecutor(RayConfig(**{**cfg.model_dump(), "max_in_flight": 1}))


def test_without_row_counts_in_the_log_the_tasks_count_the_files_and_the_numbers_stay_the_same(lake, monkeypatch):
    """A log without `numRecords` statistics: stage 0 (each file's footer, read by its task) positions the sample; the
    edges and histograms are those of the log's counts, and the driver still reads no row."""
    import dataclasses
    import time

    from engine.executor import LocalExecutor
    from engine.lake.snapshot import open_snapshot
    from engine.tables.drift_reference import build_reference

    snap = open_snapshot("features", str(lake / "features"))
    cols = ["f00", "f31"]
    with_counts = build_reference(snap, WINDOW, cols, 10, LocalExecutor().run, time.monotonic() + 600, "test",
                                  sample_rows=1_000)
    snap.files.update({d: [dataclasses.replace(f, num_records=None) for f in snap.files[d]] for d in WINDOW})
    stages: list[str] = []

    def run(units, chunks, bundle, deadline):
        stages.append(json.loads(next(iter(units.values())).args[0])["stage"])
        return LocalExecutor().run(units, chunks, bundle, deadline)

    without = build_reference(snap, WINDOW, cols, 10, run, time.monotonic() + 600, "test", sample_rows=1_000)
    assert stages == ["rows", "sample", "hist"]
    for c in cols:
        edges, counts, _stride = _numpy_reference(lake, c, 10, 1_000)
        for e, h in (with_counts, without):
            assert np.array_equal(e[c], edges) and h[c].tolist() == counts.tolist()
