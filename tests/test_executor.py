"""One executor seam for every job (issue 19): the structure checked by machine (parsed with `ast`, nothing runs),
and what crosses the seam on the real engines: a chunk function handed in as data, its result through the pickle-free
codec, a worker's error with its class, the start notices a backtest prints, the time budget.

The structure a broken build shows: a second executor protocol (`EvalExecutor`, `BacktestExecutor`), a second
`ray.wait` loop, a job module that switches engines itself (`if cfg.engine == "spark"`), or engine code that imports
backtests to get its group function.
"""
from __future__ import annotations

import ast
import json
import time
from pathlib import Path

import pytest

from engine.errors import ContractViolation, LakescoreError, ModelRefused, UnitFailed

REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("engine", "contracts", "backtests", "jobs")


def _modules(tops=PRODUCT):
    for top in tops:
        for path in sorted((REPO / top).rglob("*.py")):
            yield path.relative_to(REPO).as_posix(), ast.parse(path.read_text(), filename=str(path))


def test_one_executor_protocol_one_ray_wait_loop_one_engine_switch():
    protocols, waits, switches = [], [], []
    for rel, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Executor") and any(
                    (isinstance(b, ast.Name) and b.id == "Protocol") or
                    (isinstance(b, ast.Attribute) and b.attr == "Protocol") for b in node.bases):
                protocols.append(f"{rel}:{node.name}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "wait" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "ray":
                waits.append(f"{rel}:{node.lineno}")
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "engine" \
                    and any(isinstance(c, ast.Constant) and c.value == "spark" for c in node.comparators):
                switches.append(f"{rel}:{node.lineno}")
    assert protocols == ["engine/executor.py:Executor"], protocols
    assert len(waits) == 1 and waits[0].startswith("engine/ray/executor.py:"), waits
    assert [s.split(":")[0] for s in switches] == ["jobs/engines.py"], switches
    for gone in ("engine/ray/score.py", "engine/ray/evaluate.py", "engine/ray/backtest.py", "engine/spark/score.py",
                 "engine/spark/evaluate.py"):
        assert not (REPO / gone).exists(), gone
    ray_files = sorted(p.name for p in (REPO / "engine" / "ray").glob("*.py"))
    spark_files = sorted(p.name for p in (REPO / "engine" / "spark").glob("*.py"))
    # Twins: the same file names; Spark adds dataframe, jars, and pythonpath with daemon (PySpark from the installed
    # package under spark-submit, on the driver and in the executors' Python daemon).
    assert set(ray_files) <= set(spark_files)
    assert set(spark_files) - set(ray_files) == {"dataframe.py", "jars.py", "pythonpath.py", "daemon.py"}


# ------------------------------------------------------------------ what crosses the seam


def _chunk_functions():
    """Chunk functions handed in as data, defined in a function so that workers get them by value (this test module
    is not importable on a Ray worker)."""

    def refuse(unit, chunk, bundle):
        """Three kinds of error, by chunk, and a result."""
        import json

        from backtests.guard import LeakageDetected
        from engine.errors import ModelRefused
        from engine.work import ChunkResult

        if chunk.index == 0:
            raise ModelRefused(f"model for {chunk.args} is a pickle; refused")
        if chunk.index == 1:  # a class engine.errors does not hold arrives as its nearest base there
            raise LeakageDetected("fold 8 reads a day at its cutoff", [])
        if chunk.index == 2:
            raise ValueError("a bug in the chunk function")
        return ChunkResult(chunk.unit, 1, 1, [], payload=json.dumps({"args": chunk.args, "unit_args": unit.args}),
                           blob=b"\x00stats\xff")

    def sleep(unit, chunk, bundle):
        import time

        time.sleep(30)

    return refuse, sleep


def _work(notify: bool = False):
    from engine.work import ChunkWork, UnitWork

    refuse = _chunk_functions()[0]
    units = {"u": UnitWork("u", "", "", None, refuse, args=("plan",), notify_start=notify, what="fold group(s)")}
    return units, [ChunkWork("u", (), i, args=f"fold-{i}") for i in range(4)]


def _outcomes(items) -> dict:
    from engine.executor import raised
    from engine.work import ChunkFailure, ChunkStarted

    out = {"started": sorted(i.chunk for i in items if isinstance(i, ChunkStarted))}
    for i in items:
        if isinstance(i, ChunkFailure):
            e = raised(i)
            out[i.chunk] = (type(e), str(e), i.contract)
        elif not isinstance(i, ChunkStarted):
            out[i.chunk] = (json.loads(i.payload), i.blob)
    return out


EXPECTED = {
    0: (ModelRefused, "model for fold-0 is a pickle; refused", False),
    1: (ContractViolation, "fold 8 reads a day at its cutoff", True),
    3: ({"args": "fold-3", "unit_args": ["plan"]}, b"\x00stats\xff"),
}


def _check(out: dict, started: list[int]) -> None:
    assert out["started"] == started
    assert {k: out[k] for k in (0, 1, 3)} == EXPECTED
    assert out[2][0] is UnitFailed and "ValueError: a bug in the chunk function" in out[2][1]


def test_codec_round_trip_keeps_payload_blob_and_the_failure_class():
    from engine.executor import decode_item, encode_item, failure
    from engine.work import ChunkResult

    r = ChunkResult("u", 3, 2, [{"path": "p"}], None, payload='{"a": [1, 2.5]}', blob=b"\x01\x02", chunk=4, node="n")
    back = decode_item(*encode_item(r), None)
    assert (back.unit, back.rows_in, back.rows_out, back.adds, back.payload, back.blob, back.chunk, back.node) == \
        ("u", 3, 2, [{"path": "p"}], '{"a": [1, 2.5]}', b"\x01\x02", 4, "n")
    f = failure("u", 5, ModelRefused("refused: pickle"))
    back = decode_item(*encode_item(f), None)
    assert back == f and back.classes[:2] == ("ModelRefused", "LakescoreError") and back.message == "refused: pickle"


def test_local_executor_keeps_error_classes_and_reports_starts():
    """In process: a LakescoreError is the chunk's failure with its class, as on the engines; any other exception is
    raised as it is (the score job turns a vanished file's OSError into exit 5 naming it)."""
    from engine.executor import LocalExecutor

    units, chunks = _work(notify=True)
    out = _outcomes(list(LocalExecutor().run(units, [c for c in chunks if c.index != 2], None, time.monotonic() + 60)))
    assert out["started"] == [0, 1, 3] and {k: out[k] for k in (0, 1, 3)} == EXPECTED
    with pytest.raises(ValueError, match="a bug in the chunk function"):
        list(LocalExecutor().run(units, chunks[2:3], None, time.monotonic() + 60))
    with pytest.raises(UnitFailed, match="^time budget exhausted"):
        list(LocalExecutor().run(units, chunks, None, time.monotonic() - 1))


@pytest.mark.parametrize("pipeline", ["tasks", "actors"])
def test_ray_keeps_a_worker_errors_class_and_reports_starts(ray_local, pipeline):
    """On Ray (both shapes, and the side tasks) a worker's LakescoreError reaches the driver as its class (ModelRefused,
    not only exit 5 that InputUnavailable shares), a backtests class as its nearest engine.errors base, a crash as
    UnitFailed naming it; a unit that asks for start notices gets one per chunk as it starts on a worker."""
    from engine.config import RayConfig
    from engine.ray.executor import executor

    ex = executor(RayConfig(num_cpus=0.5, pipeline=pipeline))
    units, chunks = _work(notify=True)
    _check(_outcomes(list(ex.run(units, chunks, None, time.monotonic() + 120))), [0, 1, 2, 3])
    units, chunks = _work(notify=False)
    _check(_outcomes(list(ex.run(units, chunks, None, time.monotonic() + 120))), [])
    if pipeline == "actors":
        _check(_outcomes(list(ex.run_side(units, chunks, None, time.monotonic() + 120))), [])


def test_ray_time_budget_cancels_and_names_what_is_left(ray_local):
    from engine.config import RayConfig
    from engine.ray.executor import executor
    from engine.work import ChunkWork, UnitWork

    units = {"u": UnitWork("u", "", "", None, _chunk_functions()[1], what="fold group(s)")}
    t = time.monotonic()
    with pytest.raises(UnitFailed, match=r"^time budget exhausted with 3 fold group\(s\) unfinished; raise "
                                         r"run.time_budget_s"):
        list(executor(RayConfig(num_cpus=0.5)).run(units, [ChunkWork("u", (), i) for i in range(3)], None,
                                                   time.monotonic() + 1))
    assert time.monotonic() - t < 20


def test_the_failure_class_is_rebuilt_from_names_not_exit_codes():
    from engine.executor import error_class

    assert error_class(["ModelRefused", "LakescoreError"]) is ModelRefused
    assert error_class(["LeakageDetected", "ContractViolation", "LakescoreError"]) is ContractViolation
    assert error_class(["Nothing"]) is UnitFailed
    assert issubclass(error_class(["InputUnavailable"]), LakescoreError)


def test_backtest_fills_the_cpus_at_its_fraction_and_score_and_evaluate_run_one_task_per_cpu(ray_local):
    """Backtest groups run CPUs ÷ ray.num_cpus at once, as before the one seam (Ray bounded them only by its
    resources); score runs one chunk per CPU (each holds a model) and so does evaluate (each task joins and
    accumulates a whole key bucket: a second one per CPU only shared the core, 16 % slower at 16 M rows);
    `ray.max_in_flight` overrides both. Broken builds caught: the shared executor bounding backtest at one group per
    CPU (half its parallelism), evaluate back at CPUs ÷ num_cpus, or max_in_flight ignored."""
    import ray

    from engine.config import BacktestConfig, EvaluateConfig, ScoreConfig
    from jobs.engines import make_executor

    cpus = int(ray.cluster_resources()["CPU"])
    quarter = {"ray": {"num_cpus": 0.25}}
    assert make_executor(BacktestConfig.model_validate(quarter), "backtest")._limit() == cpus * 4
    assert make_executor(EvaluateConfig.model_validate(quarter), "evaluate")._limit() == cpus
    score = ScoreConfig.model_validate({**quarter, "model": {"uri": "models:/m@champion"}})
    assert make_executor(score, "score")._limit() == cpus
    capped = EvaluateConfig.model_validate({"ray": {"num_cpus": 0.25, "max_in_flight": 3}})
    assert make_executor(capped, "evaluate")._limit() == 3
