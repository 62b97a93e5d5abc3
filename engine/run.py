"""A job's run: its identity, its clock and the base of its one-line JSON summary; part of the kernel.

`Run` is what every job (score, validate, evaluate, backtest) sets up the same way: a run id (stamped on every
later log record through engine.logs), the config hash, the MLflow run id where the job logs one, the deadline
of `run.time_budget_s`, the phase clock (`mark`, and `step` for finer marks inside a phase) and the progress display. `RunSummary` is the base of every
job's summary dataclass: it holds the `Run` and writes the summary line (`as_line`) with the run's identity and
the summary's own fields, never the run's internals, so the printed line and the ledger's copy keep their keys.

Imports go down only: engine.logs, engine.progress and engine.config.load (the config hash); never jobs,
contracts or backtests (they build on this).
"""
from __future__ import annotations

import copy
import dataclasses
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, ClassVar

from engine.config.load import config_hash
from engine.logs import set_run_id
from engine.progress import Progress


@dataclass
class Run:
    """One run of a job. `started` and the phase clock read `clock` (monotonic seconds)."""

    job: str
    config_hash: str
    time_budget_s: float
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    mlflow_run_id: str | None = None  # the job's MLflow run, where it logs one (evaluate, backtest)
    phases: dict[str, float] = field(default_factory=dict)  # driver phase → seconds since the previous mark
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self._last = self._step = self.clock()

    @classmethod
    def start(cls, job: str, cfg) -> Run:
        """A new run of `job` under `cfg` (its hash and its `run.time_budget_s`); its id stamps the log from now."""
        run = cls(job, config_hash(cfg), cfg.run.time_budget_s)
        set_run_id(run.run_id)
        return run

    @property
    def deadline(self) -> float:
        """When the time budget runs out, on `clock`: executors give up on what is not done by then."""
        return self.started + self.time_budget_s

    def elapsed(self) -> float:
        return self.clock() - self.started

    def mark(self, phase: str) -> None:
        """The phase clock: record `phase` as the seconds since the previous mark (or the run's start)."""
        now = self.clock()
        self.phases[phase] = round(now - self._last, 3)
        self._last = self._step = now

    def step(self, name: str) -> None:
        """A finer mark inside a phase: `name` gets the seconds since the previous step or mark, and the phase's own
        mark still counts from the previous mark (so `resolve` and `plan` keep their meaning in the ledger)."""
        now = self.clock()
        self.phases[name] = round(now - self._step, 3)
        self._step = now

    @staticmethod
    def progress(total: int, what: str) -> Progress:
        """The progress display of `total` pieces of work (`what`: units, chunks, tasks, folds)."""
        return Progress(total, what)


@dataclass
class RunSummary:
    """The base of a job's summary: the run, plus (in the subclass) the fields of the job's one JSON line.

    The line's `job`, `run_id` and `config_hash` (and `mlflow_run_id` for a job that lists it in `FROM_RUN`) are
    read from the run; fields with `OFF_LINE` metadata are the summary's working state, kept off the line."""

    run: Run = field(repr=False, compare=False, metadata={"off_line": True})
    FROM_RUN: ClassVar[tuple[str, ...]] = ("job", "run_id", "config_hash")

    @property
    def job(self) -> str:
        return self.run.job

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def config_hash(self) -> str:
        return self.run.config_hash

    @property
    def mlflow_run_id(self) -> str | None:
        return self.run.mlflow_run_id

    @mlflow_run_id.setter
    def mlflow_run_id(self, value: str | None) -> None:
        self.run.mlflow_run_id = value

    def as_line(self) -> dict:
        """The summary line's fields (plain values: the caller prints them as JSON and keeps them in the ledger)."""
        line = {name: getattr(self, name) for name in self.FROM_RUN}
        for f in dataclasses.fields(self):
            if not f.metadata.get("off_line"):
                v = getattr(self, f.name)
                line[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else copy.deepcopy(v)
        return line


OFF_LINE = {"off_line": True}  # field metadata: the summary's working state, not a key of its line
