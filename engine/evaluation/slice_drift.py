"""Drift where it concentrates: PSI and Wasserstein-1 per (feature, slice), judged by effect size, ranked, stored.

- The slices are the evaluation's (`slices`, crosses included, and the overall slice). The reference's histograms
  per slice over the global quantile edges come from `drift_reference_slices` (built by the executor's side tasks);
  the evaluated window's are accumulated by the evaluation's own tasks beside the overall ones
  (engine.evaluation.join: `SliceHistograms` per task, merged on the driver by addition).
- Thresholds by effect size, never by p-value: with a billion rows any shift is "significant", so a test's p-value
  would flag every feature. A (feature, slice) pair is flagged ("drift") when both effect sizes are material: PSI >
  `drift.psi_max` (how much the distribution's shape moved over the reference's bins) and the Wasserstein-1 distance
  > `drift.wasserstein_max` (how far the mass moved, in standard deviations of the reference's binned distribution:
  engine.drift.binned_wasserstein), and the slice has at least `min_support` rows in both windows. Neither figure
  shrinks as the rows grow. A slice under support is reported "under_support" with its figures and never flagged
  (a small slice's histogram is noise); a side without a finite value is "missing".
- Ranking: flagged pairs first, then by PSI, then by Wasserstein, descending; the report draws the top
  `drift.top_slices` with both histograms (engine.evaluation.report_slice_drift), and every pair goes to the
  `drift_metrics` table (engine.tables.drift_metrics) with its rank, so analysts query drift history per slice.
"""
from __future__ import annotations

import datetime as dt
import logging

import numpy as np

from engine.drift import OVERALL, SliceHistograms, binned_wasserstein, psi
from engine.lake.paths import table_uri
from engine.tables import drift_metrics, eval_metrics

log = logging.getLogger("lakescore")


def compare(ref: SliceHistograms, cur: SliceHistograms | None, psi_max: float, wasserstein_max: float,
            min_support: int) -> list[dict]:
    """Every (feature, slice) of either window, ranked; each with PSI, Wasserstein, supports, flag and status."""
    out = []
    cur_slices = cur.slices if cur is not None else {}
    for name in sorted(set(ref.slices) | set(cur_slices)):
        r, c = ref.slices.get(name), cur_slices.get(name)
        meta = r or c
        for col in sorted(ref.edges):
            rh = r["counts"][col] if r else np.zeros(len(ref.edges[col]) + 1, np.int64)
            ch = c["counts"][col] if c else np.zeros(len(ref.edges[col]) + 1, np.int64)
            row = {"feature": col, "slice": name, "slice_columns": ",".join(meta["columns"]),
                   "slice_values": ",".join(meta["values"]), "support_reference": int(r["rows"]) if r else 0,
                   "support_current": int(c["rows"]) if c else 0, "psi": None, "wasserstein": None,
                   "reference_hist": rh.tolist(), "current_hist": ch.tolist()}
            if rh.sum() and ch.sum():
                row["psi"], row["wasserstein"] = psi(rh, ch), binned_wasserstein(rh, ch, ref.edges[col])
            supported = min(row["support_reference"], row["support_current"]) >= min_support
            row["flagged"] = bool(supported and row["psi"] is not None and row["psi"] > psi_max
                                  and row["wasserstein"] is not None and row["wasserstein"] > wasserstein_max)
            row["status"] = ("under_support" if not supported else "missing" if row["psi"] is None else
                             "drift" if row["flagged"] else "ok")
            out.append(row)
    out.sort(key=lambda p: (p["status"] == "under_support", p["status"] == "missing", not p["flagged"],
                            -(p["psi"] or 0.0), -(p["wasserstein"] or 0.0), p["feature"], p["slice"]))
    for i, p in enumerate(out, start=1):
        p["rank"] = i
    return out


def section(cfg, ref: dict, current: SliceHistograms | None) -> dict:
    """The report's per-slice drift: the limits, every pair ranked (without histograms), the top pairs with theirs."""
    pairs = compare(ref["slices"], current, cfg.drift.psi_max, cfg.drift.wasserstein_max, cfg.min_support)
    supported = [p for p in pairs if p["status"] in ("drift", "ok")]
    top = [{**p, "edges": ref["slices"].edges[p["feature"]].tolist()} for p in supported[:cfg.drift.top_slices]]
    flagged = [p for p in pairs if p["flagged"]]
    log.info("drift per slice: %d (feature, slice) pair(s), %d flagged%s", len(pairs), len(flagged),
             f"; first: {flagged[0]['feature']} in {flagged[0]['slice']} (PSI {flagged[0]['psi']:.3f})" if flagged else "")
    return {"psi_max": cfg.drift.psi_max, "wasserstein_max": cfg.drift.wasserstein_max,
            "min_support": cfg.min_support, "reference_id": ref["reference_id"],
            "flagged": len(flagged), "under_support": sum(p["status"] == "under_support" for p in pairs),
            "overall_flagged": [p["feature"] for p in flagged if p["slice"] == OVERALL],
            "pairs": [{k: v for k, v in p.items() if not k.endswith("_hist")} for p in pairs], "top": top}


def commit(cfg, summary, as_of: dt.datetime, days: list[str], features, section_: dict | None) -> str | None:
    """One `drift_metrics` unit for this evaluation (engine.tables.drift_metrics); the protocol's outcome (None
    without a per-slice drift section: drift off)."""
    if section_ is None:
        return None
    evaluation = eval_metrics.evaluation_key(days[0], days[-1], as_of, summary.models)
    fp = drift_metrics.fingerprint([*(f"{d}\t{features.fingerprint(d)}" for d in days), section_["reference_id"],
                                    cfg.drift.reference, repr((cfg.drift.psi_max, cfg.drift.wasserstein_max,
                                                               cfg.min_support)), summary.config_hash])
    common = {"psi_max": cfg.drift.psi_max, "wasserstein_max": cfg.drift.wasserstein_max,
              "min_support": cfg.min_support, "window_start": days[0], "window_end": days[-1], "as_of": as_of,
              "reference_window": cfg.drift.reference, "reference_id": section_["reference_id"],
              "features_table": features.name, "features_version": features.version, "run_id": summary.run_id,
              "config_hash": summary.config_hash, "input_fingerprint": fp,
              "evaluated_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0)}
    uri = table_uri(cfg.lake, drift_metrics.TABLE)
    unit = drift_metrics.unit(evaluation, fp, features.name, features.version)
    outcome = drift_metrics.commit(uri, unit, drift_metrics.rows_batch(section_["pairs"], common), summary.run_id,
                                   cfg.lake.storage_options, cfg.run.commit_retries)
    log.info("drift_metrics %s: %s (%d row(s))", outcome, unit.app_id, len(section_["pairs"]))
    return outcome
