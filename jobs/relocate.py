"""`lakescore relocate [--from OLD_ROOT] [--dry-run]`: point a moved or copied project's MLflow store (local sqlite)
at its own mlflow.artifact_root (engine.models.relocate)."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import ScoreConfig  # noqa: E402
from jobs._main import exit_now, run_job  # noqa: E402

DOC = ("After moving or copying a project folder: point its MLflow tracking store's experiments, runs and model "
       "versions, which record absolute artifact locations, at mlflow.artifact_root, where their files now are.")
EXAMPLES = """examples:
  lakescore relocate --dry-run                 # which old root, and how many locations would move
  lakescore relocate
  lakescore relocate --from /old/project/mlartifacts mlflow.artifact_root=/new/project/mlartifacts
Without --from, the old root is where lakescore's experiments (lakescore-*) keep their artifacts, when that is not
mlflow.artifact_root. Nothing changes unless the files are under mlflow.artifact_root already (copy or move the
folder first). Works on a local sqlite tracking store (mlflow.tracking_uri=sqlite:///…)."""


def body(cfg: ScoreConfig, args) -> dict:
    from engine.models.relocate import relocate

    r = relocate(cfg.mlflow.tracking_uri, cfg.mlflow.artifact_root, args.old, args.dry_run)
    verb = "would point" if r.dry_run else "pointed"
    if not r.changed:
        print(f"{cfg.mlflow.tracking_uri}: every artifact location already lies under {r.new}; nothing to do",
              flush=True)
    else:
        print(f"{cfg.mlflow.tracking_uri}: {verb} {sum(r.changed.values())} artifact location(s) from {r.old} to "
              f"{r.new} ({', '.join(f'{k} {n}' for k, n in sorted(r.changed.items()))})", flush=True)
    return {"from": r.old, "to": r.new, "dry_run": r.dry_run, "changed": r.changed}


def main(argv: list[str] | None = None) -> int:
    def extra(p):
        p.add_argument("--from", dest="old", metavar="OLD_ROOT",
                       help="the artifact root the project had before it moved (default: found in the store)")
        p.add_argument("--dry-run", action="store_true", help="say what would change; change nothing")
        p.epilog = EXAMPLES

    return run_job("relocate", DOC, ScoreConfig, body, argv, extra, default_config="conf/score.yaml",
                   config_keys=("mlflow.tracking_uri", "mlflow.artifact_root"))


if __name__ == "__main__":
    exit_now(main())
