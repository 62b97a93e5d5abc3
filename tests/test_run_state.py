"""Typed run state (issue 19), checked by machine: the job cores stay in short functions, build their dataclasses
by keyword, share one `engine.run.Run` for every job's summary, and carry a unit's failure as a typed value that
is serialised to the summary line's strings only at the edge (byte-identical to before).

The structure checks parse the code with `ast` (no import runs); the summary checks build real summaries.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 60
# Where the run-state split applies: the score job's package, the evaluate and backtest job cores, validate's core.
SHORT = [*sorted((REPO / "engine" / "score").glob("*.py")), REPO / "engine" / "evaluation" / "job.py",
         REPO / "backtests" / "runner.py", REPO / "contracts" / "validate.py"]
# Where a dataclass (or class) is never built with more than MAX_POSITIONAL positional arguments.
KEYWORDS = [*sorted((REPO / "engine" / "score").glob("*.py")), *sorted((REPO / "engine" / "evaluation").glob("*.py")),
            *sorted((REPO / "backtests").glob("*.py")), REPO / "contracts" / "validate.py"]
MAX_POSITIONAL = 5
# Calls that take a variable number of positional items by design, not fields: no keywords exist for them.
VARIADIC = {"Sequential"}  # torch.nn.Sequential(*layers) in backtests/recipes.py


def _functions(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_job_cores_have_no_function_over_60_lines():
    long = [f"{p.relative_to(REPO)}:{n.lineno} {n.name}: {n.end_lineno - n.lineno + 1} lines"
            for p in SHORT for n in _functions(p) if n.end_lineno - n.lineno + 1 > MAX_LINES]
    assert not long, f"functions over {MAX_LINES} lines (split them): {long}"


def test_no_class_is_built_with_more_than_5_positional_arguments():
    found = []
    for p in KEYWORDS:
        for node in ast.walk(ast.parse(p.read_text(), filename=str(p))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name[:1].isupper() and name not in VARIADIC and len(node.args) > MAX_POSITIONAL:
                found.append(f"{p.relative_to(REPO)}:{node.lineno} {name}(…{len(node.args)} positional)")
    assert not found, f"constructors with more than {MAX_POSITIONAL} positional arguments (use keywords): {found}"


def test_score_plan_lives_in_its_own_module():
    """The issue's sketch: engine/score/plan.py holds units, fingerprints, up to date and retract."""
    from engine.score import plan

    for name in ("plan_units", "up_to_date"):
        assert callable(getattr(plan, name, None)), f"engine.score.plan has no {name}"


def test_no_failure_string_is_parsed_back():
    """`"ds=D: msg"` strings split again with partition(": ") are gone: a failure travels typed."""
    hits = [f"{p.relative_to(REPO)}:{i}" for top in ("engine", "contracts", "backtests", "jobs")
            for p in sorted((REPO / top).rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if 'partition(": ")' in line]
    assert not hits, f"failure strings parsed back: {hits}"


def test_unit_context_fields_are_typed():
    from engine.score.units import UnitContext

    hints = typing.get_type_hints(UnitContext)
    loose = [k for k, t in hints.items() if t is object or typing.get_args(t)[:1] == (object,)]
    assert not loose, f"UnitContext fields typed `object`: {loose}"


# The summary line's keys per job, as they were before the refactor (jobs print them; the ledger keeps them whole).
LINE_KEYS = {
    "score": {"job", "run_id", "config_hash", "input_table", "input_version", "model", "model_version",
              "output_table", "units_planned", "units_skipped", "units_committed", "units_already_done",
              "units_retracted", "units_failed", "rows_in", "rows_out", "failed", "skipped", "committed",
              "already_done", "superseded", "unchanged", "retracted", "restored", "violations", "rows_quarantined",
              "report", "phases", "latency_ms", "rows_per_s", "nodes", "outcomes",
              "driver_cpu_s"},
    "validate": {"job", "run_id", "config_hash", "input_table", "input_version", "units_planned", "units_passed",
                 "units_failed", "rows", "passed", "failed", "violations", "report", "phases", "rows_per_s",
                 "outcomes"},
    "evaluate": {"job", "run_id", "config_hash", "engine", "models", "champion", "window", "days", "as_of",
                 "versions", "rows_evaluated", "rows_without_label", "rows_label_after_as_of",
                 "scores_without_features", "features_without_scores", "rows_missing_a_model_score",
                 "missing_scores", "tasks", "verdict", "gates_failed", "units_committed", "units_already_done",
                 "units_restored", "report", "mlflow_run_id", "promoted"},
    "backtest": {"job", "run_id", "config_hash", "backtest_id", "versions", "pins", "folds", "folds_committed",
                 "folds_resumed", "folds_restored", "folds_failed", "report", "mlflow_run_id"},
}


def _summary_classes():
    from backtests.runner import BacktestSummary
    from contracts.validate import ValidateSummary
    from engine.evaluation.job import EvalSummary
    from engine.score.units import Summary

    return {"score": Summary, "validate": ValidateSummary, "evaluate": EvalSummary, "backtest": BacktestSummary}


@pytest.mark.parametrize("job", sorted(LINE_KEYS))
def test_every_summary_is_built_from_one_run(job):
    from engine.run import Run, RunSummary

    cls = _summary_classes()[job]
    assert issubclass(cls, RunSummary), f"{cls.__name__} does not use engine.run.Run"
    run = Run(job, "cafe" * 4, time_budget_s=60.0)
    s = cls(run)
    line = s.as_line()
    assert set(line) == LINE_KEYS[job]  # the summary line keeps its keys: no Run internals leak into it
    assert (line["job"], line["run_id"], line["config_hash"]) == (job, run.run_id, "cafe" * 4)
    assert len(run.run_id) == 32 and run.deadline == pytest.approx(run.started + 60.0)
    json.dumps(line, sort_keys=True, default=str)
    if "mlflow_run_id" in line:
        s.mlflow_run_id = "abc"
        assert s.as_line()["mlflow_run_id"] == run.mlflow_run_id == "abc"


def test_run_phase_clock_marks_each_phase_since_the_previous():
    from engine.run import Run

    now = iter([10.0, 12.5, 13.0])
    run = Run("score", "h", time_budget_s=5.0, clock=lambda: next(now))
    assert run.started == 10.0 and run.deadline == 15.0
    run.mark("resolve")
    run.mark("plan")
    assert run.phases == {"resolve": 2.5, "plan": 0.5}


def test_run_steps_split_a_phase_without_changing_its_mark():
    """Finer marks inside a phase (where the score job's fixed cost goes: model, snapshot, engine start…) each count
    from the previous step or mark, and the phase's mark still counts from the previous mark (the ledger's
    resolve_s and plan_s keep their meaning)."""
    from engine.run import Run

    now = iter([10.0, 11.0, 11.5, 13.0, 13.25, 14.0])
    run = Run("score", "h", time_budget_s=5.0, clock=lambda: next(now))
    run.step("model_ref")
    run.step("snapshot")
    run.mark("resolve")
    run.step("outputs")
    run.mark("plan")
    assert run.phases == {"model_ref": 1.0, "snapshot": 0.5, "resolve": 3.0, "outputs": 0.25, "plan": 1.0}


def test_score_failures_are_typed_and_serialised_as_before():
    """A unit failure is a `UnitFailure`; the summary line's `failed` strings and `outcomes` are what the job
    printed before: "ds=D: message" and {"unit": D, "message": message}, the message kept whole (colons too)."""
    from engine.run import Run
    from engine.score.units import Summary, UnitFailure, fail_unit

    s = Summary(Run("score", "h", time_budget_s=1.0))
    s.fail(UnitFailure("2026-01-02", "commit failed: OSError: gone: really"))
    fail_unit(s, "2026-01-01", [{"check": "volume", "rows": 0, "message": "no rows: empty"},
                                {"check": "schema", "rows": None, "message": "x"}])
    s.committed.append("2026-01-03")
    line = s.finish().as_line()
    assert line["failed"] == ["ds=2026-01-02: commit failed: OSError: gone: really",
                              "ds=2026-01-01: volume: no rows: empty; schema: x"]
    assert line["units_failed"] == 2 and line["units_committed"] == 1
    failed = [o for o in line["outcomes"] if o["outcome"] == "failed"]
    assert failed == [
        {"unit": "2026-01-01", "outcome": "failed", "rows_in": None, "rows_out": None, "input_version": None,
         "message": "volume: no rows: empty; schema: x"},
        {"unit": "2026-01-02", "outcome": "failed", "rows_in": None, "rows_out": None, "input_version": None,
         "message": "commit failed: OSError: gone: really"}]
    assert all(isinstance(f, UnitFailure) for f in s.failures)
    assert dataclasses.is_dataclass(UnitFailure)
