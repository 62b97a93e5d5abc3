"""`lakescore rollback`: move a serving alias back to the version that held it before, record the move, and say
which days to re-score.

The history is the one `engine.evaluation.publish.promote` records: the registered-model tag
`lakescore.promotion.<alias>.previous` names the holder before the current one, and each promoted version carries
a `lakescore.promotion` tag whose `from_version` names the holder before *it*. A rollback moves the alias to the
recorded previous holder (or to `--to`), tags the version now holding it with `lakescore.rollback` (who, when,
why, the version it replaced), and sets `…previous` to the holder before the restored version, from that version's
own promotion record. So a second rollback walks one step further back in the promotion history, never back to
the version just rolled back (no silent ping-pong); when the history has no earlier holder the tag is removed and
a further rollback asks for `--to`. A move with `--to` follows the same rule, whichever direction it goes: a
rollback never steps forward by itself; rolling forward again is an explicit `--to` (or a new promotion).

Re-scoring: after the move, a plain score run with the alias scores the restored version. Its partitions that are
up to date (recorded from the input the day holds now) are skipped by the run itself, so the days worth naming
are those the rolled-back version scored where the restored version has no partition or a stale one. The command
printed carries no `--force`: a forced run would re-score the up-to-date days too, for nothing.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from dataclasses import dataclass, field

from engine.lake.paths import table_uri
from engine.config.sections import LakeConfig
from engine.errors import ConfigError, short_list
from engine.evaluation.publish import PROMOTION_TAG

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


def rollback(tracking_uri: str, registry_uri: str | None, name: str, alias: str = "champion",
             to: int | None = None, why: str = "rollback") -> Move:
    """Move `models:/<name>@<alias>` back to its recorded previous holder (or to `to`); see the module docstring."""
    client = _client(tracking_uri, registry_uri)
    rm = _registered(client, name, tracking_uri)
    aliases = dict(rm.aliases or {})
    if alias not in aliases:
        known = short_list(sorted(aliases)) if aliases else "none"
        raise ConfigError(f"model {name!r} has no alias @{alias} (aliases: {known}); fix --alias")
    current = int(aliases[alias])
    source = "--to"
    if to is None:
        recorded = (rm.tags or {}).get(previous_tag(alias))
        if recorded is None:
            raise ConfigError(f"model {name!r} @{alias} (version {current}) has no recorded previous holder "
                              f"(registered-model tag {previous_tag(alias)}); pass --to VERSION")
        to, source = int(recorded), f"recorded in {previous_tag(alias)}"
    target = _version(client, name, to, source)
    if to == current:
        return Move(name, alias, current, current, _int((rm.tags or {}).get(previous_tag(alias))), moved=False)
    after = _earlier_holder(target, alias, {to, current})
    record = {"alias": alias, "from_version": current, "to_version": to, "previous_holder": current,
              "by": os.environ.get("LAKESCORE_USER") or getpass.getuser(),
              "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "why": why,
              "next_rollback_to": after}
    client.set_registered_model_alias(name, alias, str(to))
    client.set_model_version_tag(name, str(to), ROLLBACK_TAG, json.dumps(record, sort_keys=True))
    if after is None:
        if previous_tag(alias) in (rm.tags or {}):
            client.delete_registered_model_tag(name, previous_tag(alias))
    else:
        client.set_registered_model_tag(name, previous_tag(alias), str(after))
    return Move(name, alias, current, to, after, record)


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
