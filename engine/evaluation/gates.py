"""Promotion gates, declared in config before any result, judged on the evaluation's metric and delta rows.

Fail closed: a missing metric, an undefined value, a gated slice under its minimum support, a champion without
scores on the window, an empty or immature window: each is a failed gate with its reason, never a pass.

Coverage: every day of the window that an input holds (scores, features or labels) and that some evaluated model
did not score is a failed `coverage` gate, one per day, gates configured or not. A day no model scored (the score
job failed that day) is the same failure as a day one model missed: left out silently, it would let a verdict pass
on a fraction of the window.

- `thresholds`: an absolute bound on a metric of a slice, for the challengers (the champion when there are none)
  or for every model.
- `max_regression`: how far each challenger may fall behind the champion on a metric, per slice (every slice of
  the report with `all`), on the paired difference (or on its interval's worse end with `use_interval`).
- `min_maturity`: the labels a metric needs before it can be judged: every event of the window at least `days`
  days old at `as_of` (as_of − the day after the window's last day), and at least `min_labelled_fraction` of the
  window's scored rows labelled by `as_of`. Too young or too sparse is a failed gate naming the metric (exit 4),
  whatever that metric's value: a metric judged on the early labels alone (often the easy cases) would pass or fail
  on the wrong rows. The maturity curve (engine.evaluation.maturity) shows how far a metric moves with k.
"""
from __future__ import annotations

import datetime as dt

from engine.config.jobs import GatesConfig
from engine.errors import ConfigError

HIGHER_IS_BETTER = {"roc_auc", "pr_auc", "r2"}
HIGHER_PREFIXES = ("precision@", "recall@", "f1@")
LOWER_IS_BETTER = {"log_loss", "brier", "ece", "mae", "rmse", "mape"}
DESCRIPTIVE = {"base_rate", "mean_score", "support", "positives", "bias", "mean_label", "mean_prediction"}


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is better, 0 for descriptive metrics (no better or worse)."""
    if metric in HIGHER_IS_BETTER or metric.startswith(HIGHER_PREFIXES):
        return 1
    if metric in LOWER_IS_BETTER:
        return -1
    return 0


def check_config(gates: GatesConfig, known: set[str]) -> None:
    """Refuse (exit 2, before any work) gates on metrics this evaluation cannot produce, or without a direction."""
    for g in gates.thresholds:
        if g.metric not in known:
            raise ConfigError(f"gates.thresholds: unknown metric {g.metric!r}; known: {', '.join(sorted(known))}")
        if g.min is None and g.max is None:
            raise ConfigError(f"gates.thresholds: the gate on {g.metric} ({g.slice}) has neither min nor max")
    for g in gates.max_regression:
        if g.metric not in known or direction(g.metric) == 0:
            usable = sorted(m for m in known if direction(m))
            raise ConfigError(f"gates.max_regression: {g.metric!r} cannot regress (unknown or descriptive); "
                              f"use one of {', '.join(usable)}")
    for g in gates.min_maturity:
        if g.metric not in known:
            raise ConfigError(f"gates.min_maturity: unknown metric {g.metric!r}; known: {', '.join(sorted(known))}")


def _fail(gate: str, model: str, slice_: str, metric: str, threshold, value, reason: str) -> dict:
    return {"gate": gate, "model": model, "slice": slice_, "metric": metric, "threshold": threshold, "value": value,
            "passed": False, "reason": reason}


def configured(gates: GatesConfig) -> bool:
    return bool(gates.thresholds or gates.max_regression or gates.min_maturity)


def judge(gates: GatesConfig, metrics: list[dict], deltas: list[dict], champion: str, challengers: list[str],
          window: dict) -> list[dict]:
    """Every gate's verdict (one row per gate, model and slice); `window` carries the window-level facts:
    rows_evaluated, rows_excluded, missing (ds → models without scores), end (the last day) and as_of.

    An empty window and a window day without scores fail even without gates (the report would cover less than it
    says); the immaturity check belongs to the gates and applies when any gate is configured.
    """
    out = []
    if window["rows_evaluated"] == 0:
        out.append(_fail("window", "", "overall", "support", 1, 0,
                         "no row of the window has a score from every model and a label known by as_of"))
    for ds, models in sorted(window["missing"].items()):
        if len(models) == 1 + len(challengers):
            what = "no evaluated model has scores"
        else:
            what = f"{'the champion' if champion in models else ', '.join(models)} has no scores"
        out.append(_fail("coverage", ",".join(models), "overall", "scored_days", None, None,
                         f"{what} for ds={ds}, a day of the window that the inputs hold; score it first (jobs.score) "
                         "or narrow the window"))
    if not configured(gates):
        return out
    scored = window["rows_evaluated"] + window["rows_excluded"]
    frac = window["rows_excluded"] / scored if scored else 1.0
    if scored and frac > gates.max_immature_fraction:
        out.append(_fail("immature", "", "overall", "unlabelled_fraction", gates.max_immature_fraction, round(frac, 6),
                         f"{frac:.1%} of the window's scored rows have no label known by as_of (allowed "
                         f"{gates.max_immature_fraction:.0%}); evaluate an older window or a later as_of"))
    out += [_maturity(g, window, frac) for g in gates.min_maturity]
    rows = {(m["model"], m["slice"], m["metric"]): m for m in metrics}
    for g in gates.thresholds:
        targets = challengers if (g.model == "challengers" and challengers) else [champion, *challengers]
        if g.model == "challengers" and not challengers:
            targets = [champion]
        for model in targets:
            out.append(_threshold(g, model, rows.get((model, g.slice, g.metric)), gates.min_support))
    drows = {(d["model"], d["slice"], d["metric"]): d for d in deltas}
    slices_all = sorted({m["slice"] for m in metrics})
    for g in gates.max_regression:
        watched = slices_all if g.slices == "all" else g.slices
        for model in challengers:
            for s in watched:
                out.append(_regression(g, model, s, drows.get((model, s, g.metric)), gates.min_support))
    return out


def _maturity(g, window: dict, unlabelled: float) -> dict:
    """`min_maturity` for one metric: the window's age at as_of and its fraction labelled (module docstring)."""
    name = f"min_maturity {g.metric}"
    end = dt.datetime.fromisoformat(window["end"]).replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    age = (window["as_of"] - end) / dt.timedelta(days=1)
    labelled = 1.0 - unlabelled
    if age < g.days:
        return _fail(name, "", "overall", g.metric, g.days, round(age, 6),
                     f"the window's last day {window['end']} is {max(age, 0.0):.1f} day(s) old at as_of "
                     f"{window['as_of'].isoformat()}, under the {g.days} day(s) {g.metric} needs for its labels to "
                     "mature; evaluate an older window or a later as_of")
    if labelled < g.min_labelled_fraction:
        return _fail(name, "", "overall", g.metric, g.min_labelled_fraction, round(labelled, 6),
                     f"{labelled:.1%} of the window's scored rows are labelled by as_of "
                     f"{window['as_of'].isoformat()}, under the {g.min_labelled_fraction:.0%} {g.metric} needs; "
                     "evaluate an older window or a later as_of")
    return {"gate": name, "model": "", "slice": "overall", "metric": g.metric, "threshold": g.days,
            "value": round(age, 6), "passed": True, "reason": "ok"}


def _threshold(g, model: str, row: dict | None, min_support: int) -> dict:
    name = f"threshold {g.metric}" + (f" >= {g.min}" if g.min is not None else "") + \
        (f" <= {g.max}" if g.max is not None else "")
    bound = g.min if g.min is not None else g.max
    if row is None:
        return _fail(name, model, g.slice, g.metric, bound, None, f"metric {g.metric} for slice {g.slice!r} is "
                     "missing from the evaluation (unknown slice, or no rows)")
    value = row["value"]
    if row["support"] < min_support:
        return _fail(name, model, g.slice, g.metric, bound, value,
                     f"slice {g.slice!r} has {row['support']} rows, under the gates' minimum support {min_support}")
    if value is None:
        return _fail(name, model, g.slice, g.metric, bound, None, f"{g.metric} is undefined on slice {g.slice!r}")
    if g.min is not None and value < g.min:
        return _fail(name, model, g.slice, g.metric, bound, value, f"{g.metric} {value:.4f} < {g.min} on {g.slice}")
    if g.max is not None and value > g.max:
        return _fail(name, model, g.slice, g.metric, g.max, value, f"{g.metric} {value:.4f} > {g.max} on {g.slice}")
    return {"gate": name, "model": model, "slice": g.slice, "metric": g.metric, "threshold": bound, "value": value,
            "passed": True, "reason": "ok"}


def _regression(g, model: str, slice_: str, row: dict | None, min_support: int) -> dict:
    name = f"max_regression {g.metric} {g.max_drop}"
    if row is None:
        return _fail(name, model, slice_, g.metric, g.max_drop, None,
                     f"no paired {g.metric} difference against the champion for slice {slice_!r}")
    if row["support"] < min_support:
        return _fail(name, model, slice_, g.metric, g.max_drop, row["value"],
                     f"slice {slice_!r} has {row['support']} rows, under the gates' minimum support {min_support}")
    sign = direction(g.metric)
    if g.use_interval:
        worse_end = row["ci_low"] if sign > 0 else row["ci_high"]
        value = None if worse_end is None else worse_end
    else:
        value = row["value"]
    if value is None:
        return _fail(name, model, slice_, g.metric, g.max_drop, None,
                     f"the {g.metric} difference is undefined on slice {slice_!r}" +
                     (" (no interval: metrics.bootstrap is 0)" if g.use_interval else ""))
    drop = -sign * value  # how much worse the challenger is (negative: better)
    if drop > g.max_drop:
        return _fail(name, model, slice_, g.metric, g.max_drop, value,
                     f"{g.metric} is {drop:.4f} worse than the champion on {slice_} (allowed {g.max_drop})")
    return {"gate": name, "model": model, "slice": slice_, "metric": g.metric, "threshold": g.max_drop,
            "value": value, "passed": True, "reason": "ok"}


def promotion_refused(champion: str, challenger: str, reason: str) -> dict:
    """The gate row of a promotion refused after the gates passed (the champion alias moved meanwhile)."""
    return _fail("promotion", challenger, "overall", "champion_alias", champion, None, reason)


def verdict(results: list[dict], gates: GatesConfig) -> str:
    if any(not r["passed"] for r in results):
        return "fail"
    return "pass" if configured(gates) else "no gates"
