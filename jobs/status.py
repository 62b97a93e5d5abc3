"""`lakescore status [--table scores] [--since DATE]`: per day and model version, what is scored, from which input
version, and what needs attention (unscored, stale, scored under another config, failed in the last run)."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import ScoreConfig  # noqa: E402
from jobs._main import day_arg, run_job  # noqa: E402

DOC = "Per day and model version: what is scored, from which input version, and what needs attention."
EXAMPLES = """examples:
  lakescore status                                  # the scores table of conf/score.yaml's lake
  lakescore status --table scores --since 2026-01-05
  lakescore status --config conf/score.yaml lake.root=/data/lake
states: ok; stale (the input day changed since it was scored: a score run re-scores it); gone (the input day was
removed: a score run or `lakescore forget` removes it); unscored; failed (in the model's latest run, with why)."""


IGNORED = ("input.ds", "input.version")  # status reads every day of the current snapshot: --since selects days


def body(cfg: ScoreConfig, args) -> dict:
    from engine.errors import ConfigError
    from engine.ops.status import as_dict, table_status

    ignored = [o.split("=", 1)[0] for o in args.overrides if o.split("=", 1)[0] in IGNORED]
    if ignored:
        raise ConfigError(f"status does not take {', '.join(ignored)} (it compares every day with the input's current "
                          "snapshot); use --since YYYY-MM-DD to start at a day")

    states, head = table_status(cfg.lake, args.table, args.since, _day_changed(), list(cfg.input.key_columns))
    print(render(states, head), flush=True)
    return {**head, "attention": [as_dict(s) for s in states if s.state != "ok" or s.notes]}


def _day_changed():
    """Whether an input day's rows changed between two versions, from the commits in between (a compaction's
    rewrite is no change); None where the log cannot say."""
    from engine.lake.delta_log import CommitLog

    logs: dict[str, CommitLog] = {}

    def changed(uri: str, ds: str, old: int, new: int, opts: dict) -> bool | None:
        days = logs.setdefault(uri, CommitLog(uri, opts)).changed_days(old, new, [ds])
        return None if days is None else ds in days

    return changed


def render(states, head: dict) -> str:
    lines = [f"{head['table']} v{head['version']}: " + ", ".join(f"{n} {k}" for k, n in sorted(head["counts"].items()))]
    rows = [("ds", "model", "version", "rows", "input", "state", "")]
    for s in states:
        rows.append((s.ds, s.model_name, str(s.model_version), "" if s.rows is None else f"{s.rows:,}",
                     "" if s.input_version is None else f"{s.input_table}@v{s.input_version}", s.state,
                     "; ".join(s.notes)))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + ("  " + r[6] if r[6] else ""))
    return "\n".join(line.rstrip() for line in lines)


def main(argv: list[str] | None = None) -> int:
    def extra(p):
        p.add_argument("--table", default="scores", help="the scores table (default scores)")
        p.add_argument("--since", default=None, metavar="DATE", type=day_arg, help="only days from DATE (YYYY-MM-DD) on")
        p.epilog = EXAMPLES

    return run_job("status", DOC, ScoreConfig, body, argv, extra, default_config="conf/score.yaml", record=False)


if __name__ == "__main__":
    sys.exit(main())
