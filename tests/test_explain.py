"""`lakescore explain`: a row traces to the exact input version and run that made it, and re-running the printed
command (pinned to that version) reproduces its score exactly."""
from __future__ import annotations

import json
import shlex

import pyarrow.compute as pc
from deltalake import DeltaTable

from conftest import XGB
from test_contracts import NEW_DAY, append_day, fresh_day
from test_ledger import ALL_DAYS, job_argv, run_score, runs


def explain(lake, demo_root, capsys, where: str, *extra: str) -> tuple[int, dict, str]:
    from jobs.explain import main

    code = main([*job_argv(lake, demo_root), "--where", where, *extra])
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    return code, json.loads(lines[-1]), out.err


def test_explain_traces_a_row_to_its_input_version_and_reproduces_its_score(ray_local, lake, demo_root, capsys):
    from jobs.score import main as score_main

    assert run_score(lake, demo_root, capsys=capsys)[0] == 0
    first_version = DeltaTable(str(lake / "features")).version()
    # The input moves on (a new day), and a second run scores it: old days stay from the first version.
    append_day(lake, fresh_day())
    code, summary = run_score(lake, demo_root, capsys=capsys)
    assert code == 0 and summary["committed"] == [NEW_DAY], summary["error"]
    first_run, _second = runs(lake)
    day = ALL_DAYS[1]
    scores = DeltaTable(str(lake / "scores")).to_pyarrow_table(filters=[("ds", "=", day)])
    entity = scores.column("entity_id")[7].as_py()
    expected = scores.filter(pc.equal(scores.column("entity_id"), entity)).column("score")[0].as_py()

    code, result, _ = explain(lake, demo_root, capsys, f"entity_id = {entity} AND ds = '{day}'")
    assert code == 0 and result["matched"] == 1
    (row,) = result["rows"]
    assert row["input"] == f"features@v{first_version}" and row["run_id"] == first_run["run_id"]
    assert row["ledger"]["run_id"] == first_run["run_id"] and row["ledger"]["status"] == "ok"
    assert first_run["inputs"][0]["version"] == first_version
    assert row["model"].startswith(f"models:/{XGB}/") and row["code"]
    assert float(row["row"]["score"]) == expected

    # The printed command, run as is, recomputes the row from the pinned version into a scratch table.
    argv = shlex.split(row["reproduce"])
    assert argv[:2] == ["lakescore", "score"] and f"input.version={first_version}" in argv
    assert score_main(argv[2:]) == 0
    capsys.readouterr()
    repro = DeltaTable(str(lake / "scores_repro")).to_pyarrow_table()
    again = repro.filter(pc.equal(repro.column("entity_id"), entity))
    assert again.column("score").to_pylist() == [expected]
    assert again.column("input_version").to_pylist() == [first_version]
    assert repro.num_rows == scores.num_rows  # the whole day, nothing else


def test_explain_errors_name_the_problem(ray_local, lake, demo_root, capsys):
    assert run_score(lake, demo_root, capsys=capsys)[0] == 0
    code, summary, err = explain(lake, demo_root, capsys, "no_such_column = 1")
    assert code == 2 and "no_such_column" in summary["error"] and "\n" not in summary["error"]
    code, summary, _ = explain(lake, demo_root, capsys, "ds = '2026-01-02'", "--table", "nope")
    assert code == 2 and "table 'nope' not found" in summary["error"]
    code, summary, _ = explain(lake, demo_root, capsys, "entity_id = -1")
    assert code == 0 and summary["matched"] == 0


def write_scores_shaped(lake) -> None:
    """A small table with the scores table's partitioning, written with deltalake directly (no engine needed)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    write_deltalake(str(lake / "scores"), pa.table({
        "entity_id": pa.array([1, 2], pa.int64()), "score": [0.1, 0.9], "ds": ["2026-01-05", "2026-01-06"],
        "model_name": ["m", "m"], "model_version": pa.array([1, 1], pa.int64())}),
        partition_by=["ds", "model_name", "model_version"])


def test_explain_unquoted_date_is_a_bad_argument_with_a_hint_to_quote_it(lake, demo_root, capsys):
    write_scores_shaped(lake)
    code, summary, err = explain(lake, demo_root, capsys, "ds = 2026-01-05")
    assert code == 2, err
    assert "this is a bug" not in err and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if "error:" in ln]
    assert "quote" in line and "ds = '2026-01-05'" in line, line
    # Another predicate the SQL engine rejects at run time (a cast): exit 2 naming the predicate, no traceback.
    code, summary, err = explain(lake, demo_root, capsys, "entity_id = 'abc'")
    assert code == 2 and "Traceback" not in err and "entity_id = 'abc'" in summary["error"], err
    assert "\n" not in summary["error"]
