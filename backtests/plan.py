"""Fold plans for backtests, in days: pure (spec in, folds out, no I/O), printed before any work, stored with results.

Semantics (those of mlforecast's `cross_validation` windows, with a gap added):

- Data runs from `start` to `end`, both inclusive days (ISO `YYYY-MM-DD`). Every range below is inclusive.
- With `n_folds`, the LAST fold's test window ends on `end`; each earlier fold steps back by `step_days`
  (default `horizon_days`, as mlforecast's `step_size` defaults to `h`). Folds are numbered 0 (oldest) to
  n_folds − 1 (newest). With explicit `cutoffs` (they override `n_folds` and `step_days`), fold i has the
  i-th cutoff in date order.
- Fold i: `cutoff` is the first test day; test = [cutoff, cutoff + horizon_days − 1];
  train_end = cutoff − gap_days − 1 (the gap days belong to neither window: an embargo);
  train_start = `start` (expanding) or train_end − train_days + 1 (rolling).
- `train_days` is the rolling window's length, and for an expanding window its minimum (the first fold's
  length). A fold whose training window would start before `start` or hold fewer than `train_days` days is
  a ConfigError (exit 2) naming the fold and what to change; so is a test window outside [start, end].

Equivalences (tests/test_backtest_plan.py checks both): scikit-learn's `TimeSeriesSplit(n_splits=n_folds,
gap=gap_days, test_size=horizon_days, max_train_size=train_days or None)` over day indices, with
step_days = horizon_days; mlforecast's windows `n_windows=n_folds, h=horizon_days, step_size=step_days,
input_size=train_days (rolling)` whose `cutoff` (last training day) is our train_end when gap_days = 0.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Literal

from engine.errors import ConfigError, short_list

WINDOWS = ("expanding", "rolling")
PLAN_FORMAT = 1


def _day(value, what: str) -> dt.date:
    """An ISO day `YYYY-MM-DD` (nothing else: partitions and cutoffs are days)."""
    try:
        day = dt.date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        day = None
    if day is None or day.isoformat() != value:
        raise ConfigError(f"backtest {what}={value!r} is not a day; write it as YYYY-MM-DD")
    return day


def _int(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"backtest {what}={value!r} must be an integer >= {minimum}")
    return value


def _iso(day: dt.date) -> str:
    return day.isoformat()


@dataclass(frozen=True)
class FoldSpec:
    """What the user asks for; validated at construction (ConfigError, exit 2). See the module docstring."""

    window: Literal["expanding", "rolling"]
    train_days: int
    horizon_days: int
    start: str
    end: str
    gap_days: int = 0
    step_days: int | None = None  # None: horizon_days
    n_folds: int | None = None
    cutoffs: tuple[str, ...] | None = None  # overrides n_folds and step_days

    def __post_init__(self):
        if self.window not in WINDOWS:
            raise ConfigError(f"backtest window={self.window!r} is unknown; choose one of {list(WINDOWS)}")
        _int(self.train_days, "train_days", 1)
        _int(self.horizon_days, "horizon_days", 1)
        _int(self.gap_days, "gap_days", 0)
        if self.step_days is not None:
            _int(self.step_days, "step_days", 1)
        if _day(self.end, "end") < _day(self.start, "start"):
            raise ConfigError(f"backtest end={self.end} is before start={self.start}; fix the data range")
        if self.cutoffs is not None:
            if isinstance(self.cutoffs, str):
                raise ConfigError("backtest cutoffs must be a list of days (YYYY-MM-DD), not one string")
            cutoffs = tuple(self.cutoffs)
            days = [_day(c, "cutoffs[]") for c in cutoffs]
            repeated = sorted({c for c in cutoffs if cutoffs.count(c) > 1})
            if repeated:
                raise ConfigError(f"backtest cutoffs repeat {short_list(repeated)}; list each cutoff once")
            if not cutoffs:
                raise ConfigError("backtest cutoffs is empty; list at least one day or set n_folds instead")
            object.__setattr__(self, "cutoffs", tuple(_iso(d) for d in sorted(days)))
        elif self.n_folds is None:
            raise ConfigError("backtest needs n_folds or cutoffs; set one of them")
        if self.n_folds is not None:
            _int(self.n_folds, "n_folds", 1)

    @property
    def step(self) -> int:
        return self.horizon_days if self.step_days is None else self.step_days

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cutoffs"] = list(self.cutoffs) if self.cutoffs is not None else None
        return d


@dataclass(frozen=True)
class Fold:
    """One fold's windows, inclusive ISO days; `cutoff` is the first test day (= test_start)."""

    index: int
    cutoff: str
    train_start: str
    train_end: str
    test_start: str
    test_end: str

    @staticmethod
    def _range(lo: str, hi: str) -> list[str]:
        a, b = dt.date.fromisoformat(lo), dt.date.fromisoformat(hi)
        return [_iso(a + dt.timedelta(days=k)) for k in range((b - a).days + 1)]

    def train_days(self) -> list[str]:
        return self._range(self.train_start, self.train_end)

    def test_days(self) -> list[str]:
        return self._range(self.test_start, self.test_end)

    def gap_days(self) -> list[str]:
        """Days between training and test that neither window reads (empty when gap_days = 0)."""
        after = dt.date.fromisoformat(self.train_end) + dt.timedelta(days=1)
        before = dt.date.fromisoformat(self.test_start) - dt.timedelta(days=1)
        return self._range(_iso(after), _iso(before)) if after <= before else []

    @property
    def n_train_days(self) -> int:
        return (dt.date.fromisoformat(self.train_end) - dt.date.fromisoformat(self.train_start)).days + 1

    @property
    def n_test_days(self) -> int:
        return (dt.date.fromisoformat(self.test_end) - dt.date.fromisoformat(self.test_start)).days + 1


def _cutoffs(spec: FoldSpec, end: dt.date) -> list[dt.date]:
    if spec.cutoffs is not None:
        return [dt.date.fromisoformat(c) for c in spec.cutoffs]
    last = end - dt.timedelta(days=spec.horizon_days - 1)
    return [last - dt.timedelta(days=(spec.n_folds - 1 - i) * spec.step) for i in range(spec.n_folds)]


def plan_folds(spec: FoldSpec) -> list[Fold]:
    """The folds of `spec`, oldest first; ConfigError (exit 2) on the first fold that does not fit the data.

    Generated cutoffs end on the data's last day, so too many folds push the first ones out of the data: then the
    error names the largest n_folds that fits (the fix), not the window sizes."""
    try:
        return _plan(spec)
    except ConfigError as e:
        if spec.cutoffs is not None or not spec.n_folds or spec.n_folds < 2:
            raise
        fits = next((n for n in range(spec.n_folds - 1, 0, -1) if _fits(replace(spec, n_folds=n))), None)
        if fits is None:
            raise
        reason = str(e).rsplit("; ", 1)[0]  # what does not fit, without the advice about window sizes
        raise ConfigError(f"{reason}; n_folds={spec.n_folds} folds stepping {spec.step} day(s) back from {spec.end} "
                          f"do not fit the data: at most {fits} fold(s) fit, set folds.n_folds={fits}") from None


def _fits(spec: FoldSpec) -> bool:
    try:
        _plan(spec)
    except ConfigError:
        return False
    return True


def _plan(spec: FoldSpec) -> list[Fold]:
    start, end = dt.date.fromisoformat(spec.start), dt.date.fromisoformat(spec.end)
    one = dt.timedelta(days=1)
    folds = []
    for i, cutoff in enumerate(_cutoffs(spec, end)):
        where = f"backtest fold {i} (cutoff {_iso(cutoff)})"
        test_end = cutoff + dt.timedelta(days=spec.horizon_days - 1)
        if cutoff < start or test_end > end:
            raise ConfigError(
                f"{where}: test window {_iso(cutoff)}..{_iso(test_end)} lies outside the data "
                f"{spec.start}..{spec.end}; use cutoffs inside the data (the last one at most horizon_days − 1 days "
                "before end) or lower horizon_days"
            )
        train_end = cutoff - dt.timedelta(days=spec.gap_days) - one
        if train_end < start:
            raise ConfigError(
                f"{where}: no training day left: training would end on {_iso(train_end)} (cutoff − "
                f"gap_days={spec.gap_days} − 1 day), before the data's first day {spec.start}; lower gap_days or "
                "n_folds/step_days, or use a later cutoff"
            )
        rolling_start = train_end - dt.timedelta(days=spec.train_days - 1)
        train_start = start if spec.window == "expanding" else rolling_start
        available = (train_end - start).days + 1
        if train_start < start or available < spec.train_days:
            raise ConfigError(
                f"{where}: the {spec.window} training window needs train_days={spec.train_days} but only "
                f"{available} day(s) exist from {spec.start} to train_end {_iso(train_end)}; lower train_days, "
                "n_folds, step_days or gap_days, or use a later cutoff"
            )
        folds.append(Fold(index=i, cutoff=_iso(cutoff), train_start=_iso(train_start), train_end=_iso(train_end),
                          test_start=_iso(cutoff), test_end=_iso(test_end)))
    return folds


def describe(folds: list[Fold], spec: FoldSpec | None = None) -> str:
    """A readable table of the plan (printed before any work)."""
    lines = []
    if spec is not None:
        how = (f"cutoffs {short_list(spec.cutoffs)}" if spec.cutoffs is not None
               else f"{spec.n_folds} fold(s) stepping {spec.step} day(s), the last ending on {spec.end}")
        size = (f"{spec.train_days}-day rolling" if spec.window == "rolling"
                else f"expanding (>= {spec.train_days} days)")
        lines.append(f"backtest plan: data {spec.start}..{spec.end}; {size} training window, "
                     f"gap {spec.gap_days} day(s), horizon {spec.horizon_days} day(s); {how}")
    header = ("fold", "cutoff", "train", "days", "gap", "test", "days")
    rows = [header] + [
        (str(f.index), f.cutoff, f"{f.train_start}..{f.train_end}", str(f.n_train_days), str(len(f.gap_days())),
         f"{f.test_start}..{f.test_end}", str(f.n_test_days))
        for f in folds
    ]
    widths = [max(len(r[k]) for r in rows) for k in range(len(header))]
    numeric = {0, 3, 4, 6}
    for r in rows:
        cells = [c.rjust(w) if k in numeric else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def to_json(spec: FoldSpec, folds: list[Fold]) -> str:
    """The plan as JSON (sorted keys, so the same plan gives the same bytes), stored with the results."""
    doc = {"format": PLAN_FORMAT, "spec": spec.to_dict(), "folds": [asdict(f) for f in folds]}
    return json.dumps(doc, sort_keys=True, indent=1)


def from_json(text: str) -> tuple[FoldSpec, list[Fold]]:
    """Read a stored plan back; its folds must be what its spec plans today (else ConfigError)."""
    try:
        doc = json.loads(text)
        if doc.get("format") != PLAN_FORMAT:
            raise ConfigError(f"stored backtest plan has format {doc.get('format')!r}; this version reads "
                              f"format {PLAN_FORMAT}: re-plan it")
        spec_doc = dict(doc["spec"])
        known = {f.name for f in fields(FoldSpec)}
        unknown = sorted(set(spec_doc) - known)
        if unknown:
            raise ConfigError(f"stored backtest plan's spec has unknown keys {unknown}; known: {sorted(known)}")
        if spec_doc.get("cutoffs") is not None:
            spec_doc["cutoffs"] = tuple(spec_doc["cutoffs"])
        spec = FoldSpec(**spec_doc)
        folds = [Fold(**f) for f in doc["folds"]]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"stored backtest plan cannot be read ({type(e).__name__}: {e}); re-run the backtest "
                          "from its config") from e
    planned = plan_folds(spec)
    if folds != planned:
        raise ConfigError(f"stored backtest plan lists {len(folds)} fold(s) that differ from what its spec plans "
                          f"({len(planned)} fold(s)); the file was edited or written by another version: re-plan it")
    return spec, folds
