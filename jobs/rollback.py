"""`lakescore rollback --model NAME [--to VERSION] [--alias champion]`: move a serving alias back, record the move,
print the commands that re-score the affected days."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import ScoreConfig  # noqa: E402
from jobs._main import exit_now, run_job  # noqa: E402

DOC = ("Move a model's serving alias back to the version that held it before (from the model_events table, else the "
       "registry's tags) or to --to, record the move in model_events (tags mirror it), and print the score commands "
       "for the days to re-score.")
EXAMPLES = """examples:
  lakescore rollback --model lakescore-demo-xgb              # @champion back to its previous holder
  lakescore rollback --model lakescore-demo-xgb --to 3       # @champion to version 3
  lakescore rollback --model lakescore-demo-xgb --alias canary --why "latency regression"
A second rollback steps further back through the promotion history (never back to the version just rolled back);
to roll forward again, pass --to. The version now holding the alias gets the tag lakescore.rollback (who, when, why,
the version it replaced). The printed score commands re-score only the days the rolled-back version scored where
the restored version has no current partition; a plain score run skips the rest by itself."""


def body(cfg: ScoreConfig, args) -> dict:
    import uuid

    from engine.ops.rollback import rescore_commands, rescore_plan, rollback

    run_id = uuid.uuid4().hex
    move = rollback(cfg.mlflow.tracking_uri, cfg.mlflow.registry_uri, args.model, args.alias, args.to, args.why,
                    lake=cfg.lake, run_id=run_id)
    plan = rescore_plan(cfg.lake, args.table, move.name, move.from_version, move.to_version)
    commands = rescore_commands(args.config, args.overrides, move.name, move.alias, plan.days)
    print(render(move, plan, commands, args.table), flush=True)
    return {"run_id": run_id, "model": move.name, "model_version": move.to_version, "alias": move.alias, "moved": move.moved,
            "from_version": move.from_version, "next_rollback_to": move.previous_after, "output_table": args.table,
            "rescore_days": plan.days, "up_to_date_days": plan.up_to_date, "gone_days": plan.gone,
            "commands": commands}


def render(move, plan, commands: list[str], table: str) -> str:
    at = f"models:/{move.name}@{move.alias}"
    if not move.moved:
        lines = [f"{at} already points at version {move.to_version}; nothing moved"]
    else:
        lines = [f"{at}: version {move.from_version} -> version {move.to_version} (recorded in model_events, tag "
                 f"lakescore.rollback on version {move.to_version}); a further rollback goes to "
                 + (f"version {move.previous_after}" if move.previous_after is not None else "--to VERSION")]
    if plan.days:
        lines.append(f"re-score {len(plan.days)} day(s) of {table} that version {move.from_version} scored and version "
                     f"{move.to_version} has no current partition for:")
        lines += [f"  {c}" for c in commands]
    else:
        lines.append(f"no day of {table} needs re-scoring for version {move.to_version}")
    if plan.up_to_date:
        lines.append(f"up to date for version {move.to_version} (a score run skips them): {', '.join(plan.up_to_date)}")
    if plan.gone:
        lines.append(f"input gone (lakescore forget --table {table} removes version {move.from_version}'s rows): "
                     + ", ".join(plan.gone))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def extra(p):
        p.add_argument("--model", required=True, metavar="NAME", help="registered model name")
        p.add_argument("--to", type=int, default=None, metavar="VERSION",
                       help="version to move the alias to (default: the previous holder recorded when it moved)")
        p.add_argument("--alias", default="champion", help="the serving alias (default champion)")
        p.add_argument("--why", default="rollback", help="reason recorded with the move (default rollback)")
        p.add_argument("--table", default="scores", help="scores table to plan re-scoring for (default scores)")
        p.epilog = EXAMPLES

    return run_job("rollback", DOC, ScoreConfig, body, argv, extra, default_config="conf/score.yaml",
                   config_keys=("lake.root", "mlflow.tracking_uri", "input.table"))


if __name__ == "__main__":
    exit_now(main())
