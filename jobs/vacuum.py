"""`lakescore vacuum --table T --retain-days N [--dry-run]`: remove files no longer referenced, never those of the
current version or of a version that a recent run in the ledger pinned as its input."""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import ScoreConfig  # noqa: E402
from jobs._main import exit_now, run_job  # noqa: E402

DOC = ("Remove a table's files that are no longer referenced, keeping the current version and every version that a "
       "run in the ledger started inside the retention window pinned as input.")
EXAMPLES = """examples:
  lakescore vacuum --table features --retain-days 7 --dry-run   # what would go, and which versions stay and why
  lakescore vacuum --table features --retain-days 7
  lakescore vacuum --table scores --retain-days 30 lake.root=/data/lake
The window counts whole UTC days, today included (--retain-days 0 keeps what today's runs pinned). Files never
committed are only removed once a week old: a job writing right now has such files until it commits. Versions that
running runs pinned (their running rows in the ledger) are always kept; a window shorter than the oldest running
run's age is refused (exit 2) unless --force."""


def body(cfg: ScoreConfig, args) -> dict:
    import uuid

    from engine.ops.vacuum import render, vacuum

    run_id = uuid.uuid4().hex
    r = vacuum(cfg.lake, args.table, args.retain_days, args.dry_run, run_id, force=args.force)
    print(render(r), flush=True)
    listed = r.files[:1000]
    return {"run_id": run_id, "output_table": r.table, "table_version": r.version, "retain_days": r.retain_days,
            "dry_run": r.dry_run, "files_removed": 0 if r.dry_run else len(r.files),
            "files_to_remove": len(r.files) if r.dry_run else 0, "bytes": r.bytes, "files": listed,
            "files_listed": len(listed),
            "kept_versions": [{"version": k.version, "why": k.why, "run_ids": k.run_ids} for k in r.kept],
            "unreadable_pins": {str(v): runs for v, runs in r.unreadable_pins.items()},
            "scratch_removed" if not r.dry_run else "scratch_to_remove": r.scratch_removed,
            "references_removed" if not r.dry_run else "references_to_remove": r.references.removed,
            "references_kept_unsure": r.references.kept_unsure}


def main(argv: list[str] | None = None) -> int:
    def extra(p):
        p.add_argument("--table", required=True, help="table of lake.root to vacuum (e.g. features, scores)")
        p.add_argument("--retain-days", type=int, required=True, metavar="N",
                       help="keep files removed from the log less than N days ago, and the versions runs of the "
                            "last N days pinned")
        p.add_argument("--dry-run", action="store_true", help="list what would be removed; remove nothing")
        p.add_argument("--force", action="store_true",
                       help="vacuum even though a run still running started before the retention window (its "
                            "pinned versions stay protected)")
        p.epilog = EXAMPLES

    return run_job("vacuum", DOC, ScoreConfig, body, argv, extra, default_config="conf/score.yaml",
                   config_keys=("lake.root",))


if __name__ == "__main__":
    exit_now(main())
