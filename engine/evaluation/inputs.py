"""The evaluate job's inputs, resolved once on the driver: the models' versions, the three pinned snapshots, the
as-of time, and the plan of tasks (a day each, or key-hash buckets of a large day).

Nothing here reads rows except, when the labels table's log has no statistics, its `label_ts` column.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from engine.errors import ConfigError, GateFailed, InputUnavailable, ModelRefused
from engine.evaluation.join import EvalChunk
from engine.models.registry import ModelRef, resolve_model
from engine.lake.snapshot import DataFile, Snapshot, file_path, filesystem, iter_file_batches, select_partitions


def model_key(ref: ModelRef) -> str:
    return f"{ref.name}/{ref.version}"


def resolve_models(champion: str, challengers: list[str], tracking_uri: str, registry_uri: str | None
                   ) -> tuple[ModelRef, list[ModelRef]]:
    """The champion (a registry alias, usually) and the challengers as concrete versions.

    A champion that cannot be resolved fails the gate (exit 4): without it nothing can be compared, and a missing
    baseline must never pass. A missing challenger is a missing input (exit 5).
    """
    try:
        champ = resolve_model(champion, tracking_uri, registry_uri, "models.champion")
    except ModelRefused as e:
        raise GateFailed(f"champion {champion} cannot be resolved ({e}); the evaluation fails closed") from e
    refs = [resolve_model(u, tracking_uri, registry_uri, "models.challengers") for u in challengers]
    keys = [model_key(champ), *map(model_key, refs)]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"models.champion and models.challengers name the same version twice ({keys}); "
                          "list each model version once")
    return champ, refs


def scores_files(snap: Snapshot, models: list[ModelRef], storage_options: dict | None) -> dict[str, dict[str, tuple[DataFile, ...]]]:
    """ds → model key → that model version's files in the pinned scores snapshot (from the log, no data read)."""
    from deltalake import DeltaTable

    table = DeltaTable(snap.uri, version=snap.version, storage_options=storage_options or None)
    parts = set(table.metadata().partition_columns)
    need = {"ds", "model_name", "model_version"}
    if not need <= parts:
        raise InputUnavailable(f"scores table {snap.where()} is not partitioned by {sorted(need)} (it is by "
                               f"{sorted(parts)}); point scores.table at a table the score job wrote")
    actions = pa.table(table.get_add_actions(flatten=True))
    wanted = {(r.name, str(r.version)): model_key(r) for r in models}
    by_path = {f.path: f for fs in snap.files.values() for f in fs}
    out: dict[str, dict[str, list[DataFile]]] = {}
    for path, ds, name, version in zip(actions.column("path").to_pylist(),
                                       actions.column("partition.ds").to_pylist(),
                                       actions.column("partition.model_name").to_pylist(),
                                       actions.column("partition.model_version").to_pylist()):
        key = wanted.get((name, str(version)))
        if key is not None:
            out.setdefault(str(ds), {}).setdefault(key, []).append(by_path[path])
    return {d: {m: tuple(sorted(fs, key=lambda f: f.path)) for m, fs in ms.items()} for d, ms in out.items()}


def parse_as_of(value: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError as e:
        raise ConfigError(f"as_of={value!r} is not an ISO timestamp (e.g. 2026-01-09T00:00:00Z) or 'latest'") from e
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def resolve_as_of(value: str, labels: Snapshot, label_ts: str, storage_options: dict | None) -> dt.datetime:
    """`latest` → the newest `label_ts` in the pinned labels snapshot (from the log's statistics when it has them)."""
    if value != "latest":
        return parse_as_of(value).astimezone(dt.timezone.utc)
    if label_ts not in labels.schema.names:
        raise InputUnavailable(f"labels {labels.where()} has no column {label_ts!r}; fix labels.label_ts_column")
    newest = _max_from_stats(labels, label_ts, storage_options)
    if newest is None:
        fs, base = filesystem(labels.uri, storage_options)
        for files in labels.files.values():
            for f in files:
                for batch in iter_file_batches(fs, file_path(base, f.path), [label_ts], 1 << 20, labels.schema):
                    m = pc.max(batch.column(0)).as_py()
                    newest = m if newest is None or (m is not None and m > newest) else newest
    if newest is None:
        raise GateFailed(f"labels {labels.where()} hold no label_ts at all: no label has arrived; the window is "
                         "immature")
    return newest if newest.tzinfo else newest.replace(tzinfo=dt.timezone.utc)


def _max_from_stats(labels: Snapshot, column: str, storage_options: dict | None):
    from deltalake import DeltaTable

    table = DeltaTable(labels.uri, version=labels.version, storage_options=storage_options or None)
    actions = pa.table(table.get_add_actions(flatten=True))
    name = f"max.{column}"
    if name not in actions.column_names or actions.num_rows == 0 or actions.column(name).null_count:
        return None
    return pc.max(actions.column(name)).as_py()


@dataclass(frozen=True)
class DayPlan:
    days: list[str]  # evaluated days
    missing: dict[str, list[str]]  # ds → models without scores that day (the day is left out)
    chunks: list[EvalChunk]


def window_days(snaps: dict, window: str) -> list[str]:
    """The window's days present in any input: a day with features or labels but no scores is a day the evaluation
    must cover (plan_days lists it as missing for every model, a failed coverage gate), never a day that vanishes."""
    days: set[str] = set()
    for name in ("scores", "features", "labels"):
        days.update(select_partitions(snaps[name], window)[0])
    return sorted(days)


def plan_days(window_days: list[str], files: dict, labels: Snapshot, features: Snapshot, models: list[str],
              max_rows: int) -> DayPlan:
    """One task per day that every model scored; a day larger than `max_rows` is split into key-hash buckets."""
    days, missing, chunks = [], {}, []
    for d in window_days:
        have = files.get(d, {})
        lacking = [m for m in models if m not in have]
        if lacking:
            missing[d] = lacking
            continue
        days.append(d)
        rows = [sum(f.num_records or 0 for f in fs) for fs in have.values()]
        rows += [labels.rows(d) or 0, features.rows(d) or 0]
        buckets = max(1, math.ceil(max(rows) / max_rows))
        for b in range(buckets):
            chunks.append(EvalChunk(ds=d, scores={m: [f.path for f in have[m]] for m in models},
                                    labels=tuple(f.path for f in labels.files.get(d, ())),
                                    features=tuple(f.path for f in features.files.get(d, ())), bucket=b,
                                    buckets=buckets, index=len(chunks)))
    return DayPlan(days, missing, chunks)


def inputs_fingerprint(days: list[str], files: dict, labels: Snapshot, features: Snapshot, model: str,
                       extra: str) -> str:
    """What one model's evaluation read: its score files, the labels' and features' files of those days, plus the
    settings that change its numbers (`extra`: the as-of time and the config hash)."""
    h = hashlib.sha256()
    for d in days:
        for f in files[d][model]:
            h.update(f"s\t{f.path}\t{f.size}\t{f.modification_time}\n".encode())
        h.update(labels.fingerprint(d).encode())
        h.update(features.fingerprint(d).encode())
    h.update(extra.encode())
    return h.hexdigest()
