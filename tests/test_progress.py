"""engine.progress and engine.logs on their own: a fake clock, a fake terminal, records captured from the logger."""
from __future__ import annotations

import io
import json
import logging

import pytest

from engine import progress
from engine.logs import configure_logging, set_run_id
from engine.progress import Progress


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def lines():
    """Messages the `lakescore` logger emits during the test (whatever handlers earlier tests left on it)."""
    got: list[str] = []

    class Grab(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())

    logger = logging.getLogger("lakescore")
    handler, level = Grab(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield got
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(autouse=True)
def defaults():
    yield
    progress.configure()


def test_log_lines_come_at_the_interval_and_once_at_the_end_with_the_right_numbers(lines):
    clock = Clock()
    p = Progress(10, "units", clock=clock, stream=io.StringIO(), interval_s=10)
    for _ in range(3):  # 3 units of 400,000 rows, 4 s apart: the first line is due at 12 s
        clock.t += 4
        p.advance(rows=400_000)
    assert lines == ["progress: 3/10 units, 1,200,000 rows, 100,000 rows/s"]
    clock.t += 5
    p.advance(rows=100_000)  # 17 s: 5 s after the last line, none
    assert len(lines) == 1
    clock.t += 9
    p.advance(2, rows=1_100_000)  # 26 s: 14 s after the last line
    assert lines[-1] == "progress: 6/10 units, 2,400,000 rows, 92,308 rows/s"
    clock.t += 4
    p.close()
    p.close()  # once only
    assert lines[-1] == "progress: 6/10 units, 2,400,000 rows, 80,000 rows/s (done in 30.0s)" and len(lines) == 3


def test_without_rows_only_units_are_shown(lines):
    clock = Clock()
    with Progress(4, "folds", clock=clock, stream=io.StringIO(), interval_s=0) as p:
        p.advance()
    assert lines == ["progress: 1/4 folds", "progress: 1/4 folds (done in 0.0s)"]


def test_disabled_says_nothing_whatever_the_stream(lines):
    progress.configure(enabled=False)
    clock, term = Clock(), Terminal()
    for stream in (io.StringIO(), term):
        p = Progress(5, clock=clock, stream=stream, interval_s=0)
        clock.t += 60
        p.advance(5, rows=10)
        p.close()
    assert lines == [] and term.getvalue() == ""
    progress.configure(enabled=True, interval_s=0)
    p = Progress(5, clock=clock, stream=io.StringIO())  # the configured interval (0 s): a line per advance
    p.advance()
    p.advance()
    assert len(lines) == 2 and p.interval_s == 0


def test_nothing_planned_says_nothing(lines):
    Progress(0, clock=Clock(), stream=io.StringIO()).close()
    assert lines == []


def test_a_terminal_gets_a_bar_redrawn_in_place_and_no_log_lines(lines):
    clock, term = Clock(), Terminal()
    p = Progress(4, "units", clock=clock, stream=term)
    clock.t += 1
    p.advance(rows=1000)
    clock.t += 1
    p.advance(rows=1000)
    p.close()
    out = term.getvalue()
    draws = out.split("\x1b[2K")[1:]  # each draw clears the line first
    assert lines == [] and len(draws) == 3 and out.endswith("\n") and "\n" not in out[:-1]
    assert draws[0] == "[" + "#" * 6 + "-" * 18 + "] 1/4 units, 1,000 rows, 1,000 rows/s\r"
    assert draws[-1] == "[" + "#" * 12 + "-" * 12 + "] 2/4 units, 2,000 rows, 1,000 rows/s\n"


def test_json_log_lines_carry_ts_level_logger_msg_and_the_run_id():
    buf = io.StringIO()
    try:
        configure_logging("json", buf)
        set_run_id(None)  # whatever an earlier test's job in this process left
        log = logging.getLogger("lakescore")
        log.info("before %s", "run")
        set_run_id("r123")
        log.warning("progress: 1/2 units")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        set_run_id(None)
        configure_logging("text")
    recs = [json.loads(line) for line in buf.getvalue().splitlines() if not line.startswith(" ")]
    assert [r["msg"] for r in recs] == ["before run", "progress: 1/2 units", "failed"]
    assert [r["level"] for r in recs] == ["info", "warning", "error"] and {r["logger"] for r in recs} == {"lakescore"}
    assert "run_id" not in recs[0] and recs[1]["run_id"] == recs[2]["run_id"] == "r123"
    assert "ValueError: boom" in recs[2]["exc"] and recs[0]["ts"].endswith("+00:00")
    assert len(buf.getvalue().splitlines()) == 3  # the traceback is inside its record, not on lines of its own
    with pytest.raises(ValueError, match="xml"):
        configure_logging("xml")


def test_the_log_follows_stderr_after_a_job_ran_under_a_replaced_one(capfd):
    """A job run under pytest's capture (or a notebook's stderr) must not leave the logger on that closed stream."""
    import sys

    saved, captured = sys.stderr, io.StringIO()
    sys.stderr = captured
    try:
        configure_logging("text")
        logging.getLogger("lakescore").info("during the job")
    finally:
        sys.stderr = saved
    assert "during the job" in captured.getvalue()
    captured.close()
    logging.getLogger("lakescore").info("after the job")
    err = capfd.readouterr().err
    assert "after the job" in err and "Logging error" not in err


@pytest.mark.slow
def test_the_score_job_counts_committed_units_and_their_rows(lake, demo_root, lines):
    from conftest import DAYS, ROWS, score_config
    from engine.executor import LocalExecutor
    from jobs.score import run_score

    progress.configure(enabled=True, interval_s=0)  # a line per unit, then the final one
    s = run_score(score_config(lake, demo_root), LocalExecutor())
    ours = [ln for ln in lines if ln.startswith("progress: ")]
    assert s.rows_in == DAYS * ROWS and len(ours) == DAYS + 1
    units = [f"progress: {i}/{DAYS} units" for i in range(1, DAYS + 1)]
    assert [ln.split(",")[0] for ln in ours] == units + [units[-1]]
    assert all(f", {i * ROWS:,} rows, " in ln for i, ln in enumerate(ours[:-1], 1))
    assert f", {DAYS * ROWS:,} rows, " in ours[-1] and "(done in " in ours[-1]
    lines.clear()
    progress.configure(enabled=False)
    assert run_score(score_config(lake, demo_root), LocalExecutor(), force=True).rows_in == DAYS * ROWS
    assert not [ln for ln in lines if ln.startswith("progress")]
