"""`lakescore explain --table scores --where "entity_id = 123 AND ds = '2026-01-05'"`: for each matching row, the
model, the run, the input table and version, the config hash, the code revision, the run's ledger entry, and the
command that reproduces it."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import ScoreConfig  # noqa: E402
from jobs._main import run_job  # noqa: E402

DOC = "Trace scored rows to their model, run, input version, config and code, and print how to reproduce them."
EXAMPLES = """examples:
  lakescore explain --table scores --where "entity_id = 1000123 AND ds = '2026-01-05'"
  lakescore explain --where "ds = '2026-01-05' AND score > 0.99" --limit 3
The predicate is SQL (DataFusion) over the table's columns; the reproduce command writes to <table>_repro."""


def body(cfg: ScoreConfig, args) -> dict:
    from engine.ops.explain import explain

    result = explain(cfg.lake, args.table, args.where, args.limit)
    print(render(result), flush=True)
    return result


def render(result: dict) -> str:
    lines = [f"{result['matched']} row(s) of {result['table']} match {result['where']!r}"
             + (f"; showing {result['shown']}" if result["shown"] < result["matched"] else "")]
    for r in result["rows"]:
        part = r["partition"]
        lines.append("")
        lines.append(f"row      {', '.join(f'{k}={v}' for k, v in r['row'].items())}")
        lines.append(f"         (ds={part['ds']})")
        lines.append(f"model    {r['model']} (MLflow run {r['model_run_id']})")
        lines.append(f"input    {r['input']}")
        lines.append(f"run      {r['run_id']} at {r['scored_at']}, config {r['config_hash']}")
        if r["ledger"] is None:
            lines.append("ledger   no entry for this run (scored before the ledger, or the ledger was not writable)")
        else:
            e = r["ledger"]
            lines.append(f"code     {r['code']}")
            lines.append(f"ledger   {e['status']} (exit {e['exit_code']}), {e['engine']}, started {e['started_at']}, "
                         f"{e['duration_s']} s, {e['units_committed']} unit(s), {e['rows_scored']} rows: {e['command']}")
        for a in r["aliases"]:
            lines.append(f"alias    {alias_line(a, r['partition']['model_version'])}")
        lines.append(f"redo     {r['reproduce']}")
    return "\n".join(lines)


def alias_line(a: dict, version) -> str:
    """Which version held the alias when the row was scored, and whether it still does (model_events)."""
    if a["held_at_scoring"] is None:
        return f"@{a['alias']}: no event recorded before the row was scored (model_events)"
    then = f"@{a['alias']} was held by version {a['held_at_scoring']} when scored (since {a['since']}, {a['kind']})"
    by = "" if a["scored_by_holder"] else f"; this row was scored by version {version}, not the holder"
    now = ("still holds it" if a["still_holds"] else f"now held by version {a['holds_now']}")
    return f"{then}{by}; {now}"


def main(argv: list[str] | None = None) -> int:
    def extra(p):
        p.add_argument("--table", default="scores", help="the scores table (default scores)")
        p.add_argument("--where", required=True, help="SQL predicate, e.g. \"entity_id = 123 AND ds = '2026-01-05'\"")
        p.add_argument("--limit", type=int, default=10, help="rows to explain at most (default 10)")
        p.epilog = EXAMPLES

    return run_job("explain", DOC, ScoreConfig, body, argv, extra, default_config="conf/score.yaml", record=False)


if __name__ == "__main__":
    sys.exit(main())
