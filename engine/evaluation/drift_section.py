"""The evaluation's drift section: feature and score drift between a reference window and the evaluated window.

- Reference histograms (quantile edges and counts) of the features' drift columns, and of each model's scores,
  come from the `drift_reference` table (engine.tables.drift_reference): computed once per (table, window, files,
  columns, bins) and reused, so a daily evaluation does not re-read its reference window; the features' histograms
  per slice over the same edges come from its sibling `drift_reference_slices`. Both are built by the executor's
  side tasks (one per reference file), never on the driver.
- Current histograms over the same edges are accumulated by the evaluation's own tasks, beside the metric
  statistics (no second pass over the window, nothing on the driver).
- PSI per column (engine.drift.feature_drift), and an Evidently `DataDriftPreset` page (`EvidentlyPage`: built in a
  thread while the tasks run) on a bounded, seeded sample
  of both windows (no PII column ever reaches it: only float features and the slice columns).

Columns the features' contract tags `pii` are never drift columns (engine.pii): a pattern or the default leaves
them out, and naming one is a ConfigError checked by the job before anything is read.
"""
from __future__ import annotations

import fnmatch
import html
import logging
import os
import tempfile

import pyarrow as pa

from engine import drift as drift_core
from engine.tables import drift_reference, drift_reference_slices
from engine.lake.paths import table_uri
from engine.errors import ConfigError
from engine.evaluation.join import SCORE_PREFIX
from engine.pii import without_pii
from engine.lake.snapshot import select_partitions

log = logging.getLogger("lakescore")


def drift_columns(cfg, schema: pa.Schema, pii: frozenset[str] = frozenset()) -> list[str]:
    """The float feature columns matching `drift.columns` (every float feature when empty), never a PII column."""
    floats = without_pii([f.name for f in schema if pa.types.is_floating(f.type) and f.name not in cfg.key_columns],
                         set(pii))
    pats = cfg.drift.columns
    cols = [c for c in floats if not pats or any(fnmatch.fnmatchcase(c, p) for p in pats)]
    if pats and not cols:
        raise ConfigError(f"drift.columns {pats} match no non-PII float column of the features table; fix drift.columns")
    return cols


def reference(cfg, snaps: dict, files: dict, models: list[str], run_id: str, pii: frozenset[str] = frozenset(), *,
              run, deadline: float) -> dict:
    """Edges of every drift column ("score:<model>" for scores), the reference histograms and the features' histograms
    per slice (`cfg.slices`), from `drift_reference` and `drift_reference_slices` (built and stored on first use).
    A reference not stored yet is read by the executor's side tasks (`run`: engine.executor.side_run), never on the
    driver: its work is O(files + days). Returns {"edges", "hist", "slices", "reused", …}."""
    opts = cfg.lake.storage_options
    feats = snaps["features"]
    days, _absent = select_partitions(feats, cfg.drift.reference)
    if not days:
        raise ConfigError(f"drift.reference {cfg.drift.reference} has no partitions in {feats.where()}; fix it")
    uri = table_uri(cfg.lake, "drift_reference")
    cols = drift_columns(cfg, feats.schema, pii)
    window, bins = cfg.drift.reference, cfg.drift.bins
    where = f"drift reference window {window} of {feats.where()}"
    edges, hist, reused = {}, {}, []
    e, h, r = drift_reference.load_or_build(
        uri, feats, window, days, cols, bins,
        lambda: drift_reference.build_reference(feats, days, cols, bins, run, deadline, where, opts), opts, run_id)
    edges.update(e), hist.update(h)
    reused += [feats.name] if r else []
    groups = [tuple(g) for g in cfg.slices]
    key = drift_reference.reference_key(feats, window, days, cols, bins)
    slices, r = drift_reference_slices.load_or_build(
        table_uri(cfg.lake, drift_reference_slices.TABLE), key, feats.version, groups, e,
        lambda: drift_reference_slices.build_slices(feats, days, e, groups, run, deadline, where, opts), opts, run_id)
    reused += [f"{feats.name} slices"] if r else []
    scores = snaps["scores"]
    sdays = [d for d in days if d in scores.files]
    for model in models:
        name = SCORE_PREFIX + model
        entries = [f for d in sdays for f in files.get(d, {}).get(model, ())]
        if not entries:
            continue  # the model scored none of the reference days: no score drift for it (reported as missing)
        swhere = f"drift reference window {window} of {model}'s scores in {scores.where()}"
        e, h, r = drift_reference.load_or_build(
            uri, scores, window, sdays, [name], bins,
            lambda entries=entries, name=name, swhere=swhere: drift_reference.build_reference(
                scores, sdays, [name], bins, run, deadline, swhere, opts, files=entries,
                source={name: cfg.score_column}), opts, run_id)
        edges.update(e), hist.update(h)
        reused += [name] if r else []
    return {"edges": edges, "hist": hist, "slices": slices, "reference_id": key.reference_id, "reused": reused,
            "days": days, "columns": cols, "pii": sorted(pii)}


def section(cfg, ref: dict, current: drift_core.Histograms | None, eval_days: list[str], models: list[str],
            report_files: dict[str, str], evidently: "EvidentlyPage | None" = None) -> dict:
    """The report's drift dict; the Evidently page (`evidently`'s, when `drift.sample_rows` > 0) is added to
    `report_files`."""
    cur = current.counts if current is not None else {}
    psi = drift_core.feature_drift(ref["hist"], ref["edges"], cur, cfg.drift.psi_max)
    for m in models:
        if SCORE_PREFIX + m not in ref["hist"]:
            psi.append({"column": SCORE_PREFIX + m, "psi": None, "status": "missing"})
    for p in psi:
        p["kind"] = "score" if p["column"].startswith(SCORE_PREFIX) else "feature"
        p["threshold"] = cfg.drift.psi_max
    page, cols = None, list(ref["columns"])
    window = f"{eval_days[0]}..{eval_days[-1]}"
    text = evidently.result() if evidently is not None else None
    if text is not None:
        report_files["drift.html"] = text
        page = "drift.html"
    log.info("drift: %d column(s), %d drifted; reference reused for %s", len(psi),
             sum(p["status"] == "drift" for p in psi), ref["reused"] or "none (built now)")
    return {"psi": psi, "psi_max": cfg.drift.psi_max, "evidently_html": page, "evidently_columns": cols if page else [],
            "sample_rows": cfg.drift.sample_rows, "reference": cfg.drift.reference, "window": window,
            "reference_reused": ref["reused"]}


class EvidentlyPage:
    """The Evidently page of one evaluation, built in a thread from the moment its inputs are known (the reference,
    the evaluated days) while the evaluation's tasks run; `result()` waits for it and raises what the build raised.

    Evidently's import alone costs ~5.5 s of CPU (hundreds of pydantic models) and its report a few more seconds; in
    line after the tasks that was wall time the driver added to every evaluation, at the end, with the cores idle.
    The page needs only the features' two bounded samples and the settings, not the tasks' results, and the driver's
    own thread mostly waits on the engine meanwhile. A daemon thread: a job that fails its tasks exits without
    waiting for the page. None of it is started when `drift.sample_rows` is 0 or there is no drift column."""

    def __init__(self, cfg, features, ref: dict, eval_days: list[str], models: list[str]):
        from concurrent.futures import Future
        import threading

        self._future: Future | None = None
        if cfg.drift.sample_rows <= 0 or not ref["columns"]:
            return
        self._future = Future()
        args = (cfg, features, ref, eval_days, models)
        threading.Thread(target=self._work, args=args, name="lakescore-drift-page", daemon=True).start()

    def _work(self, *args) -> None:
        try:
            self._future.set_result(_page(*args))
        except BaseException as e:  # noqa: BLE001 - raised by result(), on the job's thread, where the page is asked
            self._future.set_exception(e)

    def result(self) -> str | None:
        return None if self._future is None else self._future.result()


def _page(cfg, feats, ref: dict, eval_days: list[str], models: list[str]) -> str:
    """Evidently's DataDriftPreset on seeded samples of the reference and evaluated days, with lakescore's header."""
    cols, opts, window = list(ref["columns"]), cfg.lake.storage_options, f"{eval_days[0]}..{eval_days[-1]}"
    reference_sample = drift_core.sample_rows(feats, ref["days"], cols, cfg.drift.sample_rows, cfg.metrics.seed, opts)
    current_sample = drift_core.sample_rows(feats, eval_days, cols, cfg.drift.sample_rows, cfg.metrics.seed, opts)
    with tempfile.TemporaryDirectory(prefix="lakescore-drift-") as tmp:
        out = os.path.join(tmp, "drift.html")
        drift_core.evidently_report(reference_sample, current_sample, cols, out, pii=ref["pii"],
                                    title=f"lakescore drift: {feats.name} {cfg.drift.reference} vs {window}",
                                    method="psi", threshold=cfg.drift.psi_max)
        with open(out, encoding="utf-8") as f:
            return with_header(f.read(), feats.where(), cfg.drift.reference, window, models, cfg.drift.psi_max,
                               cfg.drift.sample_rows)


def with_header(page: str, table: str, reference: str, window: str, models: list[str], psi_max: float,
                sample_rows: int) -> str:
    """Evidently's page with a lakescore header right after <body>: what was compared (table, reference and
    evaluated windows, models), the test and threshold, and a link back to the report beside it."""
    esc = html.escape
    head = (f'<div style="font-family:system-ui,sans-serif;padding:10px 16px;background:#f4f6f8;'
            f'border-bottom:1px solid #ccc"><a href="report.html">← back to the evaluation report</a>'
            f"<h2 style=\"margin:6px 0\">Feature drift: {esc(table)}</h2>"
            f"<div>reference window {esc(reference)} vs evaluated window {esc(window)}; models "
            f"{esc(', '.join(models))}</div><div>Test per column: PSI (population stability index, how far the "
            f"column's distribution moved over the reference's quantile bins), drift above {psi_max:g}, here on a "
            f"seeded sample of {sample_rows:,} rows per window. The evaluation report's table (every row) gives "
            "the verdict per column; this page is for looking at the distributions.</div></div>")
    i = page.find(">", page.lower().find("<body")) + 1 if "<body" in page.lower() else 0
    return page[:i] + head + page[i:]
