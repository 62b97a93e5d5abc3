"""A Delta RESTORE (time travel back) of an output table, then a plain run (issue 18, item 6).

Delta keeps the newest application transaction of each app id across a restore, so after `RESTORE scores TO
VERSION n` the unit's transaction still names the newest input fingerprint while the partition holds older rows,
or none. The next plain run must trust the files (their stamps' statistics in the log), redo those units and say
so. Checked against direct `deltalake` reads of the input: every input row scored exactly once, no stale row.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from backtests.runner import run_backtest
from conftest import DAYS, ROOT, score_config
from engine.demo.data import make_day
from engine.evaluation.job import run_evaluate
from engine.executor import LocalExecutor
from engine.ray.executor import executor
from jobs.score import run_score
from test_backtest import bt_config
from test_evaluate import eval_config, scored  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow
FIRST = "2026-01-01"
GROWN = "2026-01-02"  # the day whose input changes between the two runs
LAST = f"2026-01-{DAYS:02d}"  # scored only by the second run


def score(cfg, force=False):
    return run_score(cfg, executor(cfg.ray), force=force)


def keys_by_day(uri: str) -> dict[str, list[tuple]]:
    """(entity_id, event_ts) of every row, per day, sorted: duplicates stay visible."""
    t = DeltaTable(uri).to_pyarrow_table(columns=["ds", "entity_id", "event_ts"])
    out: dict[str, list[tuple]] = {}
    for ds, e, ts in zip(*(t.column(c).to_pylist() for c in ("ds", "entity_id", "event_ts"))):
        out.setdefault(str(ds), []).append((e, ts))
    return {d: sorted(v) for d, v in out.items()}


def assert_scores_match_input(lake) -> None:
    want, got = keys_by_day(str(lake / "features")), keys_by_day(str(lake / "scores"))
    assert sorted(got) == sorted(want), f"days scored {sorted(got)} != input days {sorted(want)}"
    for d in want:
        assert len(got[d]) == len(want[d]), f"ds={d}: {len(got[d])} score rows for {len(want[d])} input rows"
        assert got[d] == want[d], f"ds={d}: scored keys differ from the input's"
    version = DeltaTable(str(lake / "features")).version()
    stamps = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["input_version"])
    assert pc.max(stamps.column("input_version")).as_py() <= version


def new_entity(lake, ds: str) -> int:
    """Append rows of new entities to an existing input day; returns the new input version."""
    extra, _ = make_day(DAYS + 91, ds, 300, 50, seed=91)
    write_deltalake(str(lake / "features"), extra, partition_by=["ds"], mode="append")
    return DeltaTable(str(lake / "features")).version()


def test_a_restored_scores_table_is_rescored_to_match_its_input(ray_local, lake, demo_root):
    first = score(score_config(lake, demo_root, f"input.ds={FIRST}..2026-01-{DAYS - 1:02d}"))
    assert sorted(first.committed) == [f"2026-01-{d:02d}" for d in range(1, DAYS)]
    good = DeltaTable(str(lake / "scores")).version()
    new_entity(lake, GROWN)
    second = score(score_config(lake, demo_root))
    assert sorted(second.committed) == [GROWN, LAST]
    assert_scores_match_input(lake)

    # The operator rolls `scores` back to before the second run: GROWN holds its old rows (an older fingerprint
    # than its transaction says) and LAST holds nothing (scored after the restored version); both transactions stay.
    DeltaTable(str(lake / "scores")).restore(good)
    restored = DeltaTable(str(lake / "scores"))
    assert restored.transaction_version(f"lakescore/score/{LAST}/t-xgb/1") is not None
    assert keys_by_day(str(lake / "scores")).get(LAST) is None

    third = score(score_config(lake, demo_root))
    assert_scores_match_input(lake)
    assert sorted(third.committed) == [GROWN, LAST], third.committed
    assert sorted(third.restored) == [GROWN, LAST], third.restored
    assert {o["unit"] for o in third.outcomes if o.get("restored")} == {GROWN, LAST}

    fourth = score(score_config(lake, demo_root))  # the restored units are trusted again once redone
    assert fourth.committed == [] and fourth.restored == [] and fourth.units_skipped == DAYS
    assert_scores_match_input(lake)


def test_a_restore_to_rows_of_another_contract_is_rescored(ray_local, lake, demo_root, tmp_path):
    """Same input version, another contract: the rows' input_version agrees with the transaction, only the
    fingerprint stamp (which covers the contract's hash) tells that the restored rows were not scored under it."""
    contract = ROOT / "conf" / "contracts" / "features.yaml"
    changed = tmp_path / "changed.yaml"
    changed.write_text(contract.read_text().replace("psi_max: 0.25", "psi_max: 0.3"))
    assert changed.read_text() != contract.read_text()
    day = f"input.ds={FIRST}"
    assert score(score_config(lake, demo_root, day, f"input.contract={contract}")).committed == [FIRST]
    good = DeltaTable(str(lake / "scores")).version()
    assert score(score_config(lake, demo_root, day, f"input.contract={changed}")).committed == [FIRST]
    DeltaTable(str(lake / "scores")).restore(good)

    again = score(score_config(lake, demo_root, day, f"input.contract={changed}"))
    run_ids = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["run_id"]).column("run_id")
    assert set(run_ids.to_pylist()) == {again.run_id}  # the day's rows are this run's, not the restored ones
    assert again.committed == [FIRST] and again.restored == [FIRST]
    assert score(score_config(lake, demo_root, day, f"input.contract={changed}")).committed == []


def test_a_table_written_before_the_stamp_is_migrated_and_redone_once(ray_local, lake, demo_root, tmp_path):
    """An earlier release's `scores` (no input_fingerprint column, transactions recorded) stays usable: the column
    is added, and since no file carries a stamp, nothing is trusted: every unit is redone once, then skipped."""
    first = score(score_config(lake, demo_root))
    assert len(first.committed) == DAYS
    uri = str(lake / "scores")
    t = DeltaTable(uri)
    rows = t.to_pyarrow_table().drop_columns(["input_fingerprint"])
    txns = []
    for d in first.committed:
        app = f"lakescore/score/{d}/t-xgb/1"
        txns += [Transaction(a, t.transaction_version(a)) for a in (app, f"{app}#input=features", f"{app}#context")]
    old = str(tmp_path / "old_scores")
    write_deltalake(old, rows, partition_by=["ds", "model_name", "model_version"],
                    commit_properties=CommitProperties(app_transactions=txns))
    shutil.rmtree(uri)
    shutil.copytree(old, uri)
    assert "input_fingerprint" not in DeltaTable(uri).schema().to_arrow().names

    again = score(score_config(lake, demo_root))
    assert "input_fingerprint" in DeltaTable(uri).schema().to_arrow().names
    assert_scores_match_input(lake)
    assert sorted(again.committed) == sorted(again.restored) == sorted(first.committed)
    assert score(score_config(lake, demo_root)).committed == []
    assert_scores_match_input(lake)


def test_a_restored_backtest_metrics_table_redoes_the_missing_fold(lake, demo_root):
    """`backtest_metrics` rolled back to after its first fold's commit: the fold committed after it is gone though
    its transaction stays. A re-run of the same backtest must redo it (not report it resumed) and say so."""
    cfg = bt_config(lake, demo_root, "baseline.kind=base_rate", "mlflow.log_reports=false")
    first = run_backtest(cfg, LocalExecutor())
    assert first.folds_committed == [0, 1]
    uri = str(lake / "backtest_metrics")
    want = metric_rows(uri)
    assert sorted(want) == [0, 1]
    history = [h for h in DeltaTable(uri).history() if h.get("operation") != "CREATE TABLE"]
    assert len(history) == 2
    DeltaTable(uri).restore(min(h["version"] for h in history))
    gone = sorted(set(want) - set(metric_rows(uri)))
    assert len(gone) == 1

    again = run_backtest(cfg, LocalExecutor())
    assert metric_rows(uri) == want  # every fold's rows, once each, as the first run computed them
    assert again.folds_committed == gone and again.folds_restored == gone
    assert again.folds_resumed == sorted(set(want) - set(gone))
    assert [f["fold"] for f in json.loads(Path(again.report).with_name("report.json").read_text())["folds"]] == [0, 1]


def metric_rows(uri: str) -> dict[int, list[tuple]]:
    """fold → its rows (without the run's own id and time), sorted: duplicates stay visible."""
    t = DeltaTable(uri).to_pyarrow_table().drop_columns(["run_id", "created_at", "fold_info"])
    out: dict[int, list[tuple]] = {}
    for r in t.to_pylist():
        out.setdefault(r["fold"], []).append(tuple(sorted((k, str(v)) for k, v in r.items())))
    return {f: sorted(v) for f, v in out.items()}


def test_a_restored_eval_metrics_table_redoes_the_unit_restored_away(scored, demo_root, tmp_path):  # noqa: F811
    """`eval_metrics` rolled back to after the first model's unit: the second model's unit is gone though its
    transaction stays. Re-running the same evaluation must commit it again (not call it already done)."""
    lake = tmp_path / "lake"
    shutil.copytree(scored, lake)
    cfg = eval_config(lake, demo_root)
    first = run_evaluate(cfg, LocalExecutor())
    assert len(first.units_committed) == 2
    uri = str(lake / "eval_metrics")
    want = eval_rows(uri)
    DeltaTable(uri).restore(1)  # version 0 created the table, 1 and 2 committed one model's unit each
    assert len(eval_rows(uri)) == 1

    again = run_evaluate(cfg, LocalExecutor())
    assert eval_rows(uri) == want  # both models' rows, once each, as the first run computed them
    gone = sorted(set(first.units_committed) - set(again.units_already_done))
    assert len(gone) == 1 and again.units_committed == gone and again.units_restored == gone


def eval_rows(uri: str) -> dict[str, list[tuple]]:
    """model → its rows (without the run's own id and time), sorted: duplicates stay visible."""
    t = DeltaTable(uri).to_pyarrow_table().drop_columns(["run_id", "evaluated_at"])
    out: dict[str, list[tuple]] = {}
    for r in t.to_pylist():
        r.pop("input_fingerprint", None)
        out.setdefault(f"{r['model_name']}/{r['model_version']}", []).append(tuple(sorted((k, str(v)) for k, v in r.items())))
    return {m: sorted(v) for m, v in out.items()}
