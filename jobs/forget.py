"""`lakescore forget --table scores [--dry-run]`: remove, from every model's partitions, the rows whose key no longer
exists in the current input day, without re-scoring."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import ScoreConfig  # noqa: E402
from jobs._main import day_arg, exit_now, run_job  # noqa: E402

DOC = ("Deletion requests reach every derived table: remove, from every model's partitions of the scores (or "
       "quarantine) table, the rows whose key no longer exists in the current input day, without re-scoring.")
EXAMPLES = """examples:
  lakescore forget --table scores --dry-run          # which partitions hold rows of deleted keys, and how many
  lakescore forget --table scores
  lakescore forget --table quarantine --since 2026-01-05
  lakescore forget --table scores input.key_columns=[entity_id,event_ts]
Keys are input.key_columns (quarantine: the contract's key stored with each row), compared with the input table each
partition was scored from (its input_table stamp) at its current version. Each partition is one commit; a day whose
input is gone loses all its rows. The next score run of each model still re-scores the changed days."""


def body(cfg: ScoreConfig, args) -> dict:
    import uuid

    from contracts.quarantine import encode_keys  # the quarantine table's JSON keys, used only for such a table
    from engine.ops.forget import forget

    run_id = uuid.uuid4().hex
    r = forget(cfg.lake, args.table, cfg.input.key_columns, cfg.input.table, run_id, args.dry_run,
               cfg.run.commit_retries, args.since, cfg.output.target_file_rows, encode_keys)
    outcomes = [o.__dict__ for o in r.outcomes]
    print(render(r, args.dry_run), flush=True)
    removed = sum(o["rows_in"] - o["rows_out"] for o in outcomes)
    return {"run_id": run_id, "output_table": r.table, "dry_run": args.dry_run, "input_table": cfg.input.table,
            "input_version": r.inputs.get(cfg.input.table), "inputs": r.inputs, "units_planned": r.partitions,
            "units_committed": sum(o["outcome"] == "committed" for o in outcomes),
            "rows_in": sum(o["rows_in"] for o in outcomes), "rows_out": sum(o["rows_out"] for o in outcomes),
            "rows_removed": 0 if args.dry_run else removed, "rows_to_remove": removed if args.dry_run else 0,
            "outcomes": outcomes}


def render(r, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    total = sum(o.rows_in - o.rows_out for o in r.outcomes)
    inputs = ", ".join(f"{t}@v{v}" for t, v in sorted(r.inputs.items())) or "no input"
    lines = [f"forget {r.table} (keys checked against {inputs}): {verb} {total} row(s) from {len(r.outcomes)} of "
             f"{r.partitions} partition(s)"]
    lines += [f"  {o.unit}: {o.rows_in - o.rows_out} of {o.rows_in} row(s) ({o.outcome})" for o in r.outcomes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def extra(p):
        p.add_argument("--table", default="scores", help="scores or quarantine table (default scores)")
        p.add_argument("--since", default=None, metavar="DATE", type=day_arg, help="only days from DATE (YYYY-MM-DD) on")
        p.add_argument("--dry-run", action="store_true", help="count the rows to remove; change nothing")
        p.epilog = EXAMPLES

    return run_job("forget", DOC, ScoreConfig, body, argv, extra, default_config="conf/score.yaml",
                   config_keys=("lake.root", "input.table", "input.key_columns"))


if __name__ == "__main__":
    exit_now(main())
