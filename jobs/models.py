"""`lakescore models --history NAME [--alias ALIAS] [--at TIMESTAMP]`: a model's alias timeline from the
`model_events` table (engine.tables.model_events), and which version held an alias at a given time."""
from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import ScoreConfig  # noqa: E402
from engine.errors import ConfigError  # noqa: E402
from jobs._main import run_job  # noqa: E402

DOC = "A model's alias history (promotions, rollbacks, people's moves, external moves) and who held an alias when."
EXAMPLES = """examples:
  lakescore models --history lakescore-demo-xgb
  lakescore models --history lakescore-demo-xgb --alias champion --at 2026-01-05T12:00:00Z
One line per event: when (UTC), alias, from -> to version, kind, by, why, evidence. --at answers "which version held
@ALIAS at that time" from the same table (the last event at or before it)."""


def timestamp(value: str) -> dt.datetime:
    """An ISO 8601 time (a date alone is its midnight); without a zone it is UTC. Else a one-line argument error."""
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--at {value!r} is not a time; use ISO 8601, e.g. --at 2026-01-05T12:00:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _version(v) -> str:
    return "-" if v is None else f"v{v}"


def line(e: dict) -> str:
    evidence = json.loads(e["evidence"] or "{}")
    shown = {k: v for k, v in evidence.items() if k in ("evaluate_run_id", "report", "source") and v}
    gates = evidence.get("gates") or []
    if gates:
        shown["gates"] = f"{sum(1 for g in gates if g.get('passed'))}/{len(gates)} passed"
    return (f"{e['at'].isoformat(timespec='seconds')}  @{e['alias']}  {_version(e['from_version'])} -> "
            f"{_version(e['to_version'])}  {e['kind']}  by {e['by'] or 'unknown'}  why {e['why'] or 'unknown'}"
            + (f"  evidence {json.dumps(shown, sort_keys=True)}" if shown else ""))


def body(cfg: ScoreConfig, args) -> dict:
    from engine.tables import model_events

    at = timestamp(args.at) if args.at else None
    if at is not None and args.alias is None:
        raise ConfigError("--at needs --alias (which alias's holder), e.g. --alias champion")
    events = model_events.read(cfg.lake, args.history, args.alias).to_pylist()
    where = model_events.events_uri(cfg.lake)
    if not events:
        print(f"no events recorded for model {args.history}" + (f" @{args.alias}" if args.alias else "")
              + f" in {where} (moves are recorded by evaluate promotions, promote, rollback, and jobs that resolve "
              "an alias)", flush=True)
    for e in events:
        print(line(e), flush=True)
    out = {"model": args.history, "alias": args.alias, "table": where, "events": len(events)}
    if at is not None:
        held = model_events.holder_at(cfg.lake, args.history, args.alias, at)
        out.update(at=at.isoformat(), held_by=None if held is None else held["to_version"],
                   since=None if held is None else str(held["at"]))
        print(f"models:/{args.history}@{args.alias} at {at.isoformat()}: "
              + ("no version recorded (before the first event)" if held is None else
                 f"version {held['to_version']} (since {held['at'].isoformat(timespec='seconds')}, {held['kind']})"),
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    def extra(p):
        p.add_argument("--history", required=True, metavar="NAME", help="registered model name")
        p.add_argument("--alias", default=None, help="only this alias (default: every alias of the model)")
        p.add_argument("--at", default=None, metavar="TIMESTAMP",
                       help="which version held --alias at this time (ISO 8601, UTC unless a zone is given)")
        p.epilog = EXAMPLES

    return run_job("models", DOC, ScoreConfig, body, argv, extra, default_config="conf/score.yaml", record=False)


if __name__ == "__main__":
    sys.exit(main())
