"""`lakescore rollback`: move a serving alias back to the version that held it before, record the move, and say
which days to re-score.

The history is the `model_events` table (engine.tables.model_events): every promotion, rollback, person's promote
and external move of the alias, replayed as a holder stack (`model_events.holders`); the previous holder is the one
under the current holder. The registry's tags stay as a mirror, set on every move from the same answer, so a
registry that drops tags loses nothing. The tags are read only where the events do not know an earlier holder (a
project older than the table, or an alias whose recorded history starts at its current holder): then, as before,
the registered-model tag
`lakescore.promotion.<alias>.previous` names the holder before the current one, and each promoted version carries
a `lakescore.promotion` tag whose `from_version` names the holder before *it*. A rollback moves the alias to the
recorded previous holder (or to `--to`), tags the version now holding it with `lakescore.rollback` (who, when,
why, the version it replaced), and sets `…previous` to the holder before the restored version, from that version's
own promotion record. So a second rollback walks one step further back in the promotion history, never back to
the version just rolled back (no silent ping-pong); when the history has no earlier holder the tag is removed and
a further rollback asks for `--to`. A move with `--to` follows the same rule, whichever direction it goes: a
rollback never steps forward by itself; rolling forward again is an explicit `--to` (or a new promotion).

Before the move, the registry's alias is compared with the last recorded event (an `external` event is recorded
when they differ); after it, a `rollback` event (who, when, why, from and to versions, run id). An event that cannot
be written after the alias moved is a warning (the move stands, the tags record it, the next job records it as an
external move), never an error: the command's exit code says what happened to the alias.

Re-scoring: after the move, a plain score run with the alias scores the restored version. Its partitions that are
up to date (recorded from the input the day holds now) are skipped by the run itself, so the days worth naming
are those the rolled-back version scored where the restored version has no partition or a stale one. The command
printed carries no `--force`: a forced run would re-score the up-to-date days too, for nothing.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import uuid
from dataclasses import dataclass, field

from engine.lake.paths import table_uri
from engine.config.sections import LakeConfig
from engine.errors import ConfigError, short_list
from engine.evaluation.publish import PROMOTION_TAG
from engine.tables import model_events

log = logging.getLogger("lakescore")

ROLLBACK_TAG = "lakescore.rollback"  # on the version that got the alias back: who, when, why, the version replaced


def previous_tag(alias: str) -> str:
    return f"{PROMOTION_TAG}.{alias}.previous"


@dataclass
class Move:
    name: str
    alias: str
    from_version: int  # the holder rolled back
    to_version: int  # the holder now
    previous_after: int | None  # what a further rollback would restore (None: it needs --to)
    record: dict = field(default_factory=dict)
    moved: bool = True  # False: the alias already pointed at the target, nothing changed


def _client(tracking_uri: str, registry_uri: str | None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)


def _registered(client, name: str, where: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models(max_results=200))
        raise ConfigError(f"model {name!r} not found in the registry at {where}; known models: "
                          f"{short_list(known)}; fix --model") from None


def _version(client, name: str, version: int | str, what: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        known = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'", max_results=500))
        raise ConfigError(f"model {name!r} has no version {version} ({what}); versions: {short_list(known)}") from None


def _earlier_holder(mv, alias: str, exclude: set[int]) -> int | None:
    """The version that held `alias` before `mv` got it through a promotion, from `mv`'s promotion record."""
    try:
        rec = json.loads((mv.tags or {}).get(PROMOTION_TAG) or "{}")
    except ValueError:
        return None
    prev = rec.get("from_version") if rec.get("alias") == alias else None
    return None if prev is None or int(prev) in exclude else int(prev)


def current_holder(client, name: str, alias: str, where: str):
    """The registered model and the version its alias names now (exit 2 naming the model or alias if absent)."""
    rm = _registered(client, name, where)
    aliases = dict(rm.aliases or {})
    if alias not in aliases:
        known = short_list(sorted(aliases)) if aliases else "none"
        raise ConfigError(f"model {name!r} has no alias @{alias} (aliases: {known}); fix --alias")
    return rm, int(aliases[alias])


def recorded_history(lake: LakeConfig | None, name: str, alias: str, current: int, run_id: str) -> list[int]:
    """The alias's holder stack from `model_events` (empty without a lake or events), after recording an external
    move if the registry's `current` holder is not the last recorded one."""
    if lake is None:
        return []
    events = model_events.read(lake, name, alias).to_pylist()
    if not events:
        return []
    if model_events.observe(lake, name, alias, current, run_id) is not None:
        events = model_events.read(lake, name, alias).to_pylist()
    return model_events.holders(events)


def rollback(tracking_uri: str, registry_uri: str | None, name: str, alias: str = "champion",
             to: int | None = None, why: str = "rollback", lake: LakeConfig | None = None,
             run_id: str | None = None) -> Move:
    """Move `models:/<name>@<alias>` back to its recorded previous holder (or to `to`), from `lake`'s `model_events`
    where they know one, else from the registry's tags; see the module docstring."""
    client = _client(tracking_uri, registry_uri)
    rm, current = current_holder(client, name, alias, tracking_uri)
    run_id = run_id or uuid.uuid4().hex
    stack = recorded_history(lake, name, alias, current, run_id)
    source = "--to"
    if to is None:
        if len(stack) > 1:
            to, source = stack[-2], f"recorded in {model_events.TABLE}"
        else:
            recorded = (rm.tags or {}).get(previous_tag(alias))
            if recorded is None:
                raise ConfigError(f"model {name!r} @{alias} (version {current}) has no recorded previous holder "
                                  f"({model_events.TABLE} or registered-model tag {previous_tag(alias)}); pass --to "
                                  "VERSION")
            to, source = int(recorded), f"recorded in {previous_tag(alias)}"
    target = _version(client, name, to, source)
    if to == current:
        after = stack[-2] if len(stack) > 1 else _int((rm.tags or {}).get(previous_tag(alias)))
        return Move(name, alias, current, current, after, moved=False)
    by, now = os.environ.get("LAKESCORE_USER") or getpass.getuser(), dt.datetime.now(dt.timezone.utc)
    event = model_events.Event(model_name=name, alias=alias, from_version=current, to_version=to, kind="rollback",
                               run_id=run_id, by=by, why=why, evidence={"source": source, "previous_holder": current},
                               at=now)
    after_stack = model_events.holders([event.row()], start=stack)
    after = after_stack[-2] if len(after_stack) > 1 else _earlier_holder(target, alias, {to, current})
    record = {"alias": alias, "from_version": current, "to_version": to, "previous_holder": current, "by": by,
              "at": now.isoformat(timespec="seconds"), "why": why, "next_rollback_to": after}
    client.set_registered_model_alias(name, alias, str(to))
    client.set_model_version_tag(name, str(to), ROLLBACK_TAG, json.dumps(record, sort_keys=True))
    mirror_previous(client, name, alias, after, rm.tags or {})
    record_event(lake, event, after)
    return Move(name, alias, current, to, after, record)


def mirror_previous(client, name: str, alias: str, after: int | None, tags: dict) -> None:
    """The registered-model tag that mirrors the events' answer to "what would a rollback restore"."""
    if after is None:
        if previous_tag(alias) in tags:
            client.delete_registered_model_tag(name, previous_tag(alias))
    else:
        client.set_registered_model_tag(name, previous_tag(alias), str(after))


def record_event(lake: LakeConfig | None, event, after: int | None = None) -> bool:
    """Write a move lakescore made to `model_events`; a failure is one warning line (the alias has moved)."""
    from dataclasses import replace

    if lake is None:
        return False
    try:
        seq = model_events.read(lake, event.model_name, event.alias).num_rows
        model_events.record(lake, replace(event, seq=seq, evidence={**event.evidence, "next_rollback_to": after}))
        return True
    except Exception as e:  # noqa: BLE001 - the move happened; its record failing must not say otherwise
        log.warning("model_events not written to %s: %s: %s; %s@%s moved from version %s to version %s all the same "
                    "(the registry's tags record it; the next job records it as an external move)",
                    model_events.events_uri(lake), type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "",
                    event.model_name, event.alias, event.from_version, event.to_version)
        return False


def _int(v) -> int | None:
    return None if v is None else int(v)


@dataclass
class Rescore:
    days: list[str]  # the rolled-back version scored them; the restored version has nothing current there
    up_to_date: list[str]  # the restored version's partition is current: a score run skips them
    gone: list[str]  # the input day is gone: nothing to score (`lakescore forget` removes the old rows)


def rescore_plan(lake: LakeConfig, table: str, name: str, from_version: int, to_version: int) -> Rescore:
    """Which days of `table` the move leaves without a current partition of the restored version."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from engine.ops.status import table_status

    try:
        DeltaTable(table_uri(lake, table), storage_options=lake.storage_options or None)
    except TableNotFoundError:
        return Rescore([], [], [])  # nothing scored yet, by either version
    states, _head = table_status(lake, table)
    old = {s.ds: s for s in states
           if s.model_name == name and s.model_version == from_version and s.state != "unscored"}
    new = {s.ds: s for s in states if s.model_name == name and s.model_version == to_version}
    plan = Rescore([], [], [])
    for d, s in sorted(old.items()):
        if s.state == "gone":
            plan.gone.append(d)
        elif d in new and new[d].state == "ok":
            plan.up_to_date.append(d)
        else:
            plan.days.append(d)
    return plan


def day_ranges(days: list[str]) -> list[str]:
    """Consecutive calendar days merged into `a..b` ranges (the score job's `input.ds` syntax)."""
    out: list[list[dt.date]] = []
    for d in sorted({dt.date.fromisoformat(x) for x in days}):
        if out and d - out[-1][1] == dt.timedelta(days=1):
            out[-1][1] = d
        else:
            out.append([d, d])
    return [a.isoformat() if a == b else f"{a.isoformat()}..{b.isoformat()}" for a, b in out]


def rescore_commands(config: str, overrides: list[str], name: str, alias: str, days: list[str]) -> list[str]:
    """One `lakescore score` command per run of consecutive days, scoring with the alias just moved."""
    import shlex

    keep = [o for o in overrides if not o.startswith(("model.uri=", "input.ds="))]
    return [shlex.join(["lakescore", "score", "--config", config, *keep, f"model.uri=models:/{name}@{alias}",
                        f"input.ds={r}"]) for r in day_ranges(days)]
