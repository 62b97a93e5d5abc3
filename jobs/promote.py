"""`lakescore promote --model NAME --to VERSION --why TEXT [--alias champion] [--expect VERSION]`: a person moves a
serving alias, recorded in the `model_events` table (engine.ops.promote)."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import ScoreConfig  # noqa: E402
from jobs._main import exit_now, run_job  # noqa: E402

DOC = ("Move a model's serving alias to a version by hand, with a reason: recorded in model_events (kind promote: "
       "who, when, why, from and to versions) and mirrored on the registry's tags, so `lakescore rollback` undoes it.")
EXAMPLES = """examples:
  lakescore promote --model lakescore-demo-xgb --to 2 --why "retrained on December data, signed off by risk"
  lakescore promote --model lakescore-demo-xgb --to 2 --expect 1 --why "..."   # only if @champion still names 1
  lakescore promote --model lakescore-demo-xgb --alias canary --to 3 --why "canary for the new features"
A move to the version that already holds the alias is a no-op (exit 0, nothing recorded). If the alias moves while
the command runs, or does not name --expect, nothing moves (exit 4). `lakescore models --history NAME` shows the
timeline."""


def body(cfg: ScoreConfig, args) -> dict:
    from engine.ops.promote import promote

    p = promote(cfg.mlflow.tracking_uri, cfg.mlflow.registry_uri, cfg.lake, args.model, args.to, args.why,
                args.alias, args.expect)
    at = f"models:/{p.name}@{p.alias}"
    if not p.moved:
        print(f"{at} already points at version {p.to_version}; nothing moved, nothing recorded", flush=True)
    else:
        was = "no version" if p.from_version is None else f"version {p.from_version}"
        print(f"{at}: {was} -> version {p.to_version}"
              + (" (recorded in model_events)" if p.recorded else " (NOT recorded in model_events: see the warning)"),
              flush=True)
    return {"run_id": p.run_id, "model": p.name, "alias": p.alias, "model_version": p.to_version,
            "from_version": p.from_version, "moved": p.moved, "recorded": p.recorded}


def main(argv: list[str] | None = None) -> int:
    def extra(p):
        p.add_argument("--model", required=True, metavar="NAME", help="registered model name")
        p.add_argument("--to", type=int, required=True, metavar="VERSION", help="version to move the alias to")
        p.add_argument("--why", required=True, help="the reason, recorded with the move")
        p.add_argument("--alias", default="champion", help="the serving alias (default champion)")
        p.add_argument("--expect", type=int, default=None, metavar="VERSION",
                       help="move only if the alias names this version now (compare-and-set; else exit 4)")
        p.epilog = EXAMPLES

    return run_job("promote", DOC, ScoreConfig, body, argv, extra, default_config="conf/score.yaml",
                   config_keys=("lake.root", "mlflow.tracking_uri"))


if __name__ == "__main__":
    exit_now(main())
