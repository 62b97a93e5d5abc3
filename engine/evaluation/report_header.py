"""The top of the evaluation report: the verdict banner, the promotion outcome in one sentence, what changed (from
engine.evaluation.report_changed), the run's facts (pinned versions, window, as-of, interval method) and the gate
table, failed gates highlighted. The page reads top-down from here: the answer before the detail.
"""
from __future__ import annotations

from engine.evaluation.report_changed import what_changed
from engine.evaluation.svg import DASH, count, esc, html_table, num


def banner(rep: dict) -> str:
    verdict = str(rep["verdict"])
    gates = rep.get("gates") or []
    failed = sum(not g["passed"] for g in gates)
    cls = {"pass": "verdict-pass", "fail": "verdict-fail"}.get(verdict, "verdict-other")
    detail = f" — {failed} of {len(gates)} gate(s) failed" if gates else ""
    return f'<div class="verdict {cls}">Verdict: {esc(verdict.upper())}{esc(detail)}</div>'


def promotion_line(promo: dict | None) -> str:
    """The promotion outcome in one sentence ("" when the run says nothing about it)."""
    if not promo:
        return ""
    target = f"{promo.get('model', '')}@{promo.get('alias', '')}"
    outcome = promo.get("outcome")
    if outcome == "promoted":
        return (f"Promoted: {target} moved from version {promo.get('from_version')} to version "
                f"{promo.get('to_version')}.")
    if outcome == "refused":
        return f"Not promoted: {promo.get('reason', '')}"
    if outcome == "pending":
        return (f"Promotion of {target} from version {promo.get('from_version')} to version {promo.get('to_version')} "
                "was due after this page was written; the run's summary line says whether it happened.")
    if not promo.get("requested"):
        return "Not promoted: gates.promote is false, no alias was moved."
    return f"Not promoted: the verdict is not PASS, so {target} still names version {promo.get('from_version')}."


def drift_line(drift: dict | None) -> str:
    """Where the drift is, in one sentence with a link down to it ("" without drift or when nothing is flagged): the
    flagged columns, then the flagged (feature, slice) pairs, largest PSI first. Not a gate: drift informs a reader
    deciding on a promotion, it does not decide it."""
    if not drift:
        return ""
    cols = [p["column"] for p in drift.get("psi") or [] if p.get("status") == "drift"]
    pairs = [p for p in (drift.get("slices") or {}).get("pairs") or [] if p.get("flagged")]
    if not cols and not pairs:
        return ""
    more = ", …" if len(cols) > 5 else ""
    parts = [f"{len(cols)} column(s) drifted overall ({', '.join(cols[:5])}{more})"] if cols else []
    if pairs:
        top = ", ".join(f"{p['feature']} in {p['slice']} (PSI {num(p['psi'])})" for p in pairs[:3])
        parts.append(f"{len(pairs)} (feature, slice) pair(s) flagged: {top}{', …' if len(pairs) > 3 else ''}")
    return (f'<p class="promo">Drift: {esc("; ".join(parts))} — <a href="#{"slice-drift" if pairs else "drift"}">'
            "details</a>.</p>")


def header(rep: dict) -> str:
    promo = promotion_line(rep.get("promotion"))
    return (f"<h1>Evaluation report</h1>{banner(rep)}"
            + (f'<p class="promo">{esc(promo)}</p>' if promo else "") + drift_line(rep.get("drift"))
            + what_changed(rep))


def run_facts(rep: dict) -> str:
    win, ver = rep["window"], rep["versions"]
    days = len(win.get("days") or [])
    facts = [
        ("run id", rep["run_id"]), ("config hash", rep["config_hash"]), ("created at", rep.get("created_at") or DASH),
        ("task", rep["task"]), ("window", f"{win['start']} → {win['end']} ({days} day(s))"), ("as-of", rep["as_of"]),
        ("pinned versions", f"scores v{ver['scores']}, labels v{ver['labels']}, features v{ver['features']}"),
        ("models", ", ".join(rep["models"])), ("champion", rep.get("champion") or DASH),
        ("challenger", rep.get("challenger") or DASH), ("minimum support", count(rep.get("min_support"))),
        ("interval", f"{num(rep.get('confidence', 0) * 100, 1)}% bootstrap, {count(rep.get('bootstrap'))} replicates"),
    ]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return f'<h2 id="run">The run</h2><dl class="facts">{dl}</dl>'


def gates_section(rep: dict) -> str:
    gates = rep.get("gates") or []
    if not gates:
        return '<h2 id="gates">Gates</h2><p class="note">No gates configured: nothing was checked for promotion.</p>'
    rows = [("" if g["passed"] else "fail",
             [esc(g["gate"]), esc(g["model"]), esc(g["slice"]), esc(g["metric"]), num(g.get("threshold")),
              num(g.get("value")), "yes" if g["passed"] else '<span class="bad">no</span>', esc(g.get("reason", ""))])
            for g in gates]
    head = ["gate", "model", "slice", "metric", "threshold", "value", "passed", "reason"]
    return f'<h2 id="gates">Gates</h2>{html_table(head, rows, {4, 5})}'
