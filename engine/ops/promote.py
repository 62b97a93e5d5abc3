"""`lakescore promote`: a person moves a serving alias to a version, with a reason, recorded in `model_events`.

The move follows the rules of every alias move lakescore makes (DESIGN.md: Operator commands). The model, the
version and the reason are checked before anything is written (exit 2, one line). The registry's alias is compared
with the last recorded event first (a move made outside lakescore is recorded as `external`), so the `promote` event
names the holder it really replaced. The move is a compare-and-set: the alias is read, then read again just before
it moves; if it changed in between (a concurrent promotion or rollback), or if `expect` names another holder than
the registry's, nothing moves (`AliasMoved`, exit 4) and nothing is recorded. A move to the version that already
holds the alias changes nothing and records nothing (so a repeated command is a no-op).

After the move, the event (kind `promote`, who, when, why, from and to) is written, and the registry's tags mirror
it: the version gets the `lakescore.promotion` tag (as an evaluate promotion's, with `kind: promote`), and the
registered model's `lakescore.promotion.<alias>.previous` names the version a rollback would restore. An event that
cannot be written after the alias moved is one warning line (engine.ops.rollback.record_event): the alias has
moved, and the exit code says what happened to it.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import uuid
from dataclasses import dataclass
from typing import Callable

from engine.config.sections import LakeConfig
from engine.errors import ConfigError
from engine.evaluation.publish import PROMOTION_TAG, AliasMoved
from engine.ops.rollback import _client, _registered, _version, mirror_previous, record_event, recorded_history
from engine.tables import model_events

# Called between the first read of the alias and the re-read just before the move (tests move the alias here).
before_alias_check: Callable[[], None] | None = None


@dataclass
class Promotion:
    name: str
    alias: str
    from_version: int | None  # None: the alias named no version before
    to_version: int
    moved: bool
    recorded: bool
    run_id: str


def _holder(client, name: str, alias: str) -> int | None:
    aliases = dict(client.get_registered_model(name).aliases or {})
    return int(aliases[alias]) if alias in aliases else None


def promote(tracking_uri: str, registry_uri: str | None, lake: LakeConfig, name: str, to: int, why: str,
            alias: str = "champion", expect: int | None = None, run_id: str | None = None) -> Promotion:
    """Move `models:/<name>@<alias>` to version `to` (module docstring)."""
    if not (why or "").strip():
        raise ConfigError("--why is empty; say why the alias moves, e.g. --why \"hotfix for the holiday traffic\"")
    if not alias or "/" in alias or "@" in alias:
        raise ConfigError(f"--alias {alias!r} is not an alias name; e.g. --alias champion")
    run_id = run_id or uuid.uuid4().hex
    client = _client(tracking_uri, registry_uri)
    rm = _registered(client, name, tracking_uri)
    _version(client, name, to, "--to")
    current = _holder(client, name, alias)
    if expect is not None and current != expect:
        raise AliasMoved(f"not promoted: {name}@{alias} names {_named(current)}, not version {expect} (--expect); "
                         "the alias is left as it is: check who moved it (lakescore models --history) and re-run")
    stack = recorded_history(lake, name, alias, current, run_id) if current is not None else []
    if current == to:
        return Promotion(name, alias, current, to, moved=False, recorded=False, run_id=run_id)
    if before_alias_check is not None:
        before_alias_check()
    now_holder = _holder(client, name, alias)
    if now_holder != current:
        raise AliasMoved(f"not promoted: {name}@{alias} moved from {_named(current)} to {_named(now_holder)} while "
                         "this command ran (another promotion or a rollback); the alias is left as it is: re-run")
    by, now = os.environ.get("LAKESCORE_USER") or getpass.getuser(), dt.datetime.now(dt.timezone.utc)
    event = model_events.Event(model_name=name, alias=alias, from_version=current, to_version=to, kind="promote",
                               run_id=run_id, by=by, why=why, evidence={"command": "lakescore promote"}, at=now)
    after_stack = model_events.holders([event.row()], start=stack)
    after = after_stack[-2] if len(after_stack) > 1 else current
    tag = {"alias": alias, "from_version": current, "to_version": to, "by": by, "at": now.isoformat(timespec="seconds"),
           "why": why, "kind": "promote"}
    client.set_registered_model_alias(name, alias, str(to))
    client.set_model_version_tag(name, str(to), PROMOTION_TAG, json.dumps(tag, sort_keys=True))
    mirror_previous(client, name, alias, after, rm.tags or {})
    recorded = record_event(lake, event, after)
    return Promotion(name, alias, current, to, moved=True, recorded=recorded, run_id=run_id)


def _named(version: int | None) -> str:
    return "no version" if version is None else f"version {version}"
