"""`lakescore evaluate --follow`: a scheduler's daily run that re-evaluates only the windows whose labels changed.

The windows: every window that `eval_metrics` holds an evaluation of for this model set (the champion alias and the
challengers resolved now; engine.evaluation.history compares the evaluation keys' model-set part), plus the
configured `window`. For each, the labels version its newest evaluation recorded is compared with the labels table
now: the commits in between (engine.lake.delta_log, add and remove actions that change data, by their `ds`
partition value) say which days gained or revised labels. Then, per window:

- a day of the window changed → re-evaluated (engine.evaluation.job, as of `as_of`, labels pinned to the version
  the log was read up to): a new as-of is a new `eval_metrics` partition, so the history keeps every earlier one;
- no day changed → skipped: nothing written;
- the log cannot say (the recorded version's commits were vacuumed or checkpointed away, the range is longer than
  the log reader's bound, or the table was restored to an older version) → re-evaluated, and the summary says
  why: fail safe, never skipped silently;
- the configured window never evaluated for these models → evaluated.

A compaction (`dataChange: false`) is not a change; a schema change counts as changing every day. Labels that
changed without moving `as_of` (a backfill whose `label_ts` are all at or before it) give the same evaluation key:
the commit protocol replaces that evaluation (its inputs' fingerprint changed), since its old numbers no longer
describe the labels known by that as-of. A window whose
gates fail is still evaluated and recorded (its metrics are the evidence), the others run on, and the run ends
with exit 4 naming the failed windows; any other error stops the run with its own exit code. The summary line lists
the windows evaluated and skipped, each with its reason.
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

from engine.config.jobs import EvaluateConfig
from engine.errors import GateFailed
from engine.evaluation import history, inputs
from engine.lake.delta_log import CommitLog
from engine.lake.paths import require_root, table_uri
from engine.lake.snapshot import open_snapshot
from engine.tables.eval_metrics import evaluation_key

log = logging.getLogger("lakescore")


def _days(start: str, end: str) -> list[str]:
    d0, d1 = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]


def recorded_windows(cfg: EvaluateConfig, models: list[str]) -> dict[tuple[str, str], int]:
    """(window start, end) → the labels version of the newest evaluation of that window with these models."""
    t = history.read(table_uri(cfg.lake, cfg.output.table), cfg.lake.storage_options, [models[0].rsplit("/", 1)[0]],
                     ["window_start", "window_end", "labels_version", "evaluated_at"])
    if t is None:
        return {}
    suffix = history.model_set(evaluation_key("x", "x", dt.datetime.now(dt.timezone.utc), models))
    newest: dict[tuple[str, str], tuple] = {}
    for r in t.to_pylist():
        if f"{r['model_name']}/{r['model_version']}" != models[0] or history.model_set(r["evaluation"]) != suffix:
            continue
        w, this = (r["window_start"], r["window_end"]), (r["evaluated_at"], r["labels_version"])
        newest[w] = max(newest.get(w, this), this)
    return {w: v for w, (_, v) in newest.items()}


def plan(cfg: EvaluateConfig, models: list[str], labels_version: int, configured: tuple[str, str] | None
         ) -> tuple[list[dict], list[dict]]:
    """(windows to evaluate, windows skipped), each {"window", "reason"}: the module docstring's rules."""
    labels_uri = table_uri(cfg.lake, cfg.labels.table)
    commits = CommitLog(labels_uri, cfg.lake.storage_options)
    evaluate, skipped = [], []
    recorded = recorded_windows(cfg, models)
    for (start, end), was in sorted(recorded.items()):
        window = f"{start}..{end}"
        changed = commits.changed_days(was, labels_version, _days(start, end))
        if changed is None:
            evaluate.append({"window": window, "reason": (
                f"the labels table's log cannot say which days changed between labels v{was} (recorded by its last "
                f"evaluation) and v{labels_version}: a commit not in the labels table's log any more (vacuumed or "
                "checkpointed away), a restore, or too many commits; re-evaluated to be safe")})
        elif changed:
            evaluate.append({"window": window, "reason": f"labels changed for ds={','.join(sorted(changed))} between "
                                                         f"labels v{was} and v{labels_version}"})
        else:
            skipped.append({"window": window, "reason": f"no labels changed in its days since labels v{was} "
                                                        f"(now v{labels_version})"})
    if configured is not None and configured not in recorded:
        evaluate.append({"window": f"{configured[0]}..{configured[1]}",
                         "reason": "the configured window, not evaluated yet for these models"})
    return evaluate, skipped


def run_follow(cfg: EvaluateConfig, evaluate: Callable[[EvaluateConfig], object]) -> dict:
    """Re-evaluate the windows whose labels changed (module docstring); the summary as a dict. `evaluate` runs one
    evaluation of a config and returns its summary (jobs.evaluate hands in engine.evaluation.job's, with its
    executor and PII reader: only jobs import the job core)."""
    opts = cfg.lake.storage_options
    require_root(cfg.lake)
    champ, challengers = inputs.resolve_models(cfg.models.champion, cfg.models.challengers, cfg.mlflow.tracking_uri,
                                               cfg.mlflow.registry_uri)
    models = [inputs.model_key(champ), *map(inputs.model_key, challengers)]
    snaps = {name: open_snapshot(getattr(cfg, name).table, table_uri(cfg.lake, getattr(cfg, name).table),
                                 getattr(cfg, name).version, opts, setting=name)
             for name in ("scores", "labels", "features")}
    labels_version = snaps["labels"].version
    days = inputs.window_days(snaps, cfg.window)
    due, skipped = plan(cfg, models, labels_version, (days[0], days[-1]) if days else None)
    summary = {"follow": True, "models": models, "labels_version": labels_version, "evaluated": [],
               "skipped": skipped}
    for s in skipped:
        log.info("evaluate --follow: window %s skipped: %s", s["window"], s["reason"])
    failed = []
    for w in due:
        log.info("evaluate --follow: window %s re-evaluated: %s", w["window"], w["reason"])
        one = cfg.model_copy(update={"window": w["window"],
                                     "labels": cfg.labels.model_copy(update={"version": labels_version})})
        try:
            s = evaluate(one)
        except GateFailed as e:
            s = e.summary
            failed.append(f"{w['window']}: {e}")
        except Exception as e:
            if getattr(e, "exit_code", None) is not None:
                e.summary = {**summary, "failed_window": w["window"]}
            raise
        summary["evaluated"].append({**w, "run_id": s.run_id, "as_of": s.as_of, "verdict": s.verdict,
                                     "units_committed": s.units_committed, "report": s.report})
    if failed:
        e = GateFailed(f"evaluate --follow: {len(failed)} window(s) failed their gates: {failed[0]}")
        e.summary = summary
        raise e
    return summary
