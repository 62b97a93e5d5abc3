"""Where an evaluation's results go besides `eval_metrics`: the report files under the lake, an MLflow run with
every metric, the report and the config, and (gates passed, config asking) the champion alias moved, recorded so
that it can be undone.

The move is a compare-and-set: the alias moves only if it still names the version the challenger was judged
against. Another promotion or a `lakescore rollback` may have moved it while the evaluation ran; moving it anyway
would replace a version nobody compared the challenger with, and record the wrong previous holder (a later rollback
would restore that wrong version). So the alias is re-read just before the move, and a moved alias fails closed:
`AliasMoved` (exit 4, a failed gate), the alias and its tags left as they are, the reason in the report. The MLflow
registry has no conditional write, so what is left is the moment between that re-read and the move (one sqlite or
REST round trip), not the whole evaluation.

After the move the report is rewritten to say so. If that rewrite fails (the report folder unwritable, the object
store or MLflow unreachable), the move stands and the run says so truthfully: exit 0 (DESIGN.md's "done"), its
summary line with `promoted`, and one warning line naming the failure, the move (model, alias, from and to
versions), what the report on disk still says, and what to do. Not 1 ("unexpected failure"): a scheduler would
retry, and the retry would judge the new champion against itself; not 4 ("promotion gate failed"): the promotion
happened, and a scheduler acting on 4 would treat the registry's new champion as refused. The move is recorded as a
`promotion` event in `model_events` (engine.tables.model_events: evaluate run id, MLflow run, gate verdicts, report;
the history `lakescore rollback` reads), mirrored by the registry's `lakescore.promotion` tags. An event that cannot
be written after the move is a warning too, as a run ledger that cannot be written is (jobs._main), never a new exit
code: the alias has moved, and the next job that resolves it records the move as `external`.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import re
import tempfile
from dataclasses import replace
from typing import Callable

from engine.config.load import to_json
from engine.errors import GateFailed
from engine.evaluation.report import plain, render_html, report_json
from engine.lake.reports import report_target, write_report_files
from engine.tables import model_events

log = logging.getLogger("lakescore")
EXPERIMENT = "lakescore-evaluate"
PROMOTION_TAG = "lakescore.promotion"  # on the promoted version: who, when, why, and the previous holder
# Called by `promote` after the gates passed and before it re-reads the alias (tests force a concurrent move here).
before_alias_check: Callable[[], None] | None = None
# Called by `promote` once the alias has moved and the move is recorded, before the report is rewritten (tests make
# the report's files unwritable here).
after_alias_move: Callable[[], None] | None = None


class AliasMoved(GateFailed):
    """The champion alias no longer names the version the challenger was judged against: no promotion (exit 4)."""


def write_report(cfg, report: dict, run_id: str, extra: dict[str, str] | None = None,
                 mlflow_run_id: str | None = None) -> str:
    """`<lake>/_reports/evaluate/<run_id>/report.html` (self-contained), `report.json` and `extra` files (the
    Evidently drift page, linked from the report); returns the HTML's location. With `mlflow_run_id` (a report
    rewritten after its run was logged: a promotion's outcome) the run's copies are replaced too."""
    fs, base, shown = report_target(cfg.lake.root, f"evaluate/{run_id}", cfg.lake.storage_options)
    write_report_files(fs, base, {**_files(report), **(extra or {})})
    if mlflow_run_id is not None:
        from mlflow.tracking import MlflowClient

        _log_files(MlflowClient(cfg.mlflow.tracking_uri), mlflow_run_id, _files(report))
    return f"{shown}/report.html"


def _log_files(client, rid: str, files: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="lakescore-eval-") as tmp:
        for name, text in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write(text)
            client.log_artifact(rid, os.path.join(tmp, name))


def _files(report: dict) -> dict[str, str]:
    return {"report.json": report_json(report), "report.html": render_html(report)}


def _metric_key(model: str, slice_: str, metric: str) -> str:
    """An MLflow metric name: letters, digits, `_-. /` only (slices like `segment=smb & channel=app` are rewritten)."""
    raw = f"{model}/{slice_}/{metric}".replace("=", "-").replace(" & ", "+").replace("%", "pct").replace("@", "_at_")
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", raw)


def headline(metrics: list[dict], deltas: list[dict]) -> list[tuple[str, float]]:
    """The run page's metrics: every model's overall-slice values and the overall challenger − champion deltas
    (`<challenger>/overall/delta.<metric>`); the slices, intervals and the rest are in metrics_table.json."""
    out = [(_metric_key(m["model"], "overall", m["metric"]), float(m["value"]))
           for m in metrics if m["slice"] == "overall" and m["value"] is not None]
    out += [(_metric_key(d["model"], "overall", f"delta.{d['metric']}"), float(d["value"]))
            for d in deltas if d["slice"] == "overall" and d["value"] is not None]
    return out


def log_to_mlflow(cfg, report: dict, metrics: list[dict], summary, extra: dict[str, str] | None = None) -> str | None:
    """One MLflow run per evaluation: params (models, window, as-of, versions), the headline metrics (overall slice
    and overall deltas), the full metric and delta table as one artifact (`metrics_table.json`, MLflow's table
    format: columns and data, rows with their intervals), the report, its drift page and the resolved config as artifacts. Returns the MLflow run id."""
    if not cfg.mlflow.log_reports:
        return None
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from engine.models.registry import experiment_id

    client = MlflowClient(cfg.mlflow.tracking_uri)
    exp_id = experiment_id(client, EXPERIMENT, cfg.mlflow.artifact_root)
    run = client.create_run(exp_id, run_name=f"evaluate-{summary.run_id[:8]}",
                            tags={"lakescore.run_id": summary.run_id, "lakescore.verdict": summary.verdict})
    rid = run.info.run_id
    params = {"models": ",".join(summary.models), "champion": summary.champion, "window": summary.window,
              "as_of": summary.as_of, "config_hash": summary.config_hash, "lakescore_run_id": summary.run_id,
              **{f"{k}_version": v for k, v in summary.versions.items()}}
    ts = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    values = [Metric(k, v, ts, 0) for k, v in headline(metrics, report.get("deltas") or [])]
    client.log_batch(rid, metrics=values[:900], params=[Param(k, str(v)) for k, v in params.items()])
    for i in range(900, len(values), 900):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(rid, metrics=values[i:i + 900])
    table = {"columns": ["model", "baseline", "slice", "metric", "value", "ci_low", "ci_high", "support", "status"]}
    table["data"] = [[r.get(c) for c in table["columns"]] for r in [*metrics, *(report.get("deltas") or [])]]
    files = {**_files(report), **(extra or {}), "config.json": to_json(cfg),
             "metrics_table.json": json.dumps(plain(table), allow_nan=False)}
    _log_files(client, rid, files)
    client.set_terminated(rid, "FINISHED" if summary.verdict != "fail" else "FAILED")
    return rid


def mark_failed(cfg, mlflow_run_id: str | None) -> None:
    """An evaluation's MLflow run whose verdict turned to fail after it was logged (a refused promotion)."""
    if mlflow_run_id is None:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.mlflow.tracking_uri)
    client.set_tag(mlflow_run_id, "lakescore.verdict", "fail")
    client.set_terminated(mlflow_run_id, "FAILED")


def promote(cfg, champ, challenger, summary, gates: list[dict] | None = None) -> str:
    """Move the champion's alias to the challenger if it still names `champ` (else `AliasMoved`, nothing changed);
    the move is recorded as a `promotion` event in `model_events` (evidence: the evaluate run, its MLflow run, the
    gate verdicts `gates`, the report) and mirrored as tags on the challenger's version and on the registered model
    (who, when, why, previous holder), so `lakescore rollback` can undo it. An event that cannot be written is one
    warning line: the move stands (module docstring), and the next job records it as an `external` move."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    alias = cfg.models.champion.split("@", 1)[1]
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri, registry_uri=cfg.mlflow.registry_uri or cfg.mlflow.tracking_uri)
    if before_alias_check is not None:
        before_alias_check()
    try:
        holder = f"version {client.get_model_version_by_alias(champ.name, alias).version}"
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # the latter from sqlite
            raise  # not an answer about the alias (e.g. the registry is unreachable): exit 1, nothing moved
        holder = "no version (the alias was removed)"
    if holder != f"version {champ.version}":
        raise AliasMoved(f"not promoted: {champ.name}@{alias} now names {holder}, not version {champ.version} "
                         f"that challenger version {challenger.version} was judged against (another promotion or a "
                         f"rollback moved it during the evaluation); the alias is left as it is: re-run the "
                         f"evaluation against the current champion")
    by, now = os.environ.get("LAKESCORE_USER") or getpass.getuser(), dt.datetime.now(dt.timezone.utc)
    why = f"evaluate run {summary.run_id}: gates passed on {summary.window} as of {summary.as_of}"
    record = json.dumps({"alias": alias, "from_version": champ.version, "to_version": challenger.version,
                         "by": by, "at": now.isoformat(timespec="seconds"), "why": why,
                         "evaluation_report": summary.report}, sort_keys=True)
    client.set_registered_model_alias(champ.name, alias, str(challenger.version))
    client.set_model_version_tag(champ.name, str(challenger.version), PROMOTION_TAG, record)
    client.set_registered_model_tag(champ.name, f"{PROMOTION_TAG}.{alias}.previous", str(champ.version))
    evidence = {"evaluate_run_id": summary.run_id, "mlflow_run_id": getattr(summary, "mlflow_run_id", None),
                "report": summary.report, "window": summary.window, "as_of": summary.as_of,
                "gates": [{k: g.get(k) for k in ("gate", "model", "slice", "metric", "passed")} for g in gates or []]}
    _record_event(cfg, model_events.Event(model_name=champ.name, alias=alias, from_version=int(champ.version),
                                          to_version=int(challenger.version), kind="promotion", run_id=summary.run_id,
                                          by=by, why=why, evidence=evidence, at=now))
    log.info("promoted %s version %s to @%s (previous holder: version %s)", champ.name, challenger.version, alias,
             champ.version)
    if after_alias_move is not None:
        after_alias_move()
    return f"models:/{champ.name}/{challenger.version}@{alias} (was {champ.version})"


def _record_event(cfg, event) -> None:
    """The promotion in `model_events` (a lake-less config, as in unit tests of the registry side, records none)."""
    lake = getattr(cfg, "lake", None)
    if lake is None:
        return
    try:
        model_events.record(lake, replace(event, seq=model_events.read(lake, event.model_name, event.alias).num_rows))
    except Exception as e:  # noqa: BLE001 - the alias has moved: a record that failed is a warning, never an error
        log.warning("model_events not written to %s: %s: %s; %s@%s moved from version %s to version %s all the same "
                    "(the registry's tags record it; the next job records it as an external move)",
                    model_events.events_uri(lake), type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "",
                    event.model_name, event.alias, event.from_version, event.to_version)


def rewrite_after_promotion(cfg, report: dict, summary, extra_files: dict) -> str:
    """The report (and its MLflow copies) rewritten with the promotion's outcome; returns its location. The alias has
    moved by now: a rewrite that fails is one warning line, never an error (module docstring)."""
    from mlflow.exceptions import MlflowException

    try:
        return write_report(cfg, report, summary.run_id, extra_files, summary.mlflow_run_id)
    except (OSError, MlflowException) as e:  # pyarrow's filesystem errors are OSErrors
        p = report["promotion"]
        folder = summary.report.rsplit("/", 1)[0] if summary.report else f"_reports/evaluate/{summary.run_id}"
        log.warning("report rewrite failed: %s: %s; %s@%s moved from version %s to version %s all the same "
                    "(recorded in the registry); the report.json in %s still says the promotion is %r (read back), "
                    "and its copy in MLflow run %s was not rewritten; the registry is the record: to undo the move run "
                    "`lakescore rollback --model %s --alias %s`, and fix the report folder's storage before the next "
                    "evaluation", type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "", p["model"],
                    p["alias"], p["from_version"], p["to_version"], folder, _outcome_written(cfg, summary.run_id),
                    summary.mlflow_run_id, p["model"], p["alias"])
        return summary.report


def _outcome_written(cfg, run_id: str) -> str:
    """The promotion outcome that the report.json on the lake says, read back ("unreadable" if it cannot be)."""
    fs, base, _ = report_target(cfg.lake.root, f"evaluate/{run_id}", cfg.lake.storage_options)
    try:
        with fs.open_input_stream(f"{base}/report.json") as f:
            return str(json.loads(f.read().decode("utf-8"))["promotion"]["outcome"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable"


def record_refused_promotion(cfg, summary, report: dict, extra_files: dict, reason: str) -> None:
    """The gates passed but the alias moved under the evaluation: the verdict becomes fail, with the reason in the
    summary, the report (rewritten in place) and the MLflow run."""
    from engine.evaluation import gates as gating

    row = gating.promotion_refused(summary.champion, summary.models[1], reason)
    report["gates"] = [*report["gates"], row]
    report["promotion"].update(outcome="refused", reason=reason)
    summary.verdict = report["verdict"] = "fail"
    summary.gates_failed.append(f"{row['gate']} [{row['model']} {row['slice']}]: {reason}")
    summary.report = write_report(cfg, report, summary.run_id, extra_files, summary.mlflow_run_id)
    mark_failed(cfg, summary.mlflow_run_id)
