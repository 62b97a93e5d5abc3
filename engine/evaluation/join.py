"""The evaluate job's task: one day (or one key-hash bucket of a day) of scores ⋈ features ⋈ labels, as of a time.

All three tables are partitioned by the event day, so the join is local to a day: a task reads that day's files
of each table (only the columns it needs, in bounded batches, keeping the rows of its bucket), joins them inside
the worker and folds the joined rows into mergeable statistics (`engine.evaluation.stats.EvalStats`). Nothing
row-level leaves the worker: the driver merges statistics. The join runs on key hashes (engine.evaluation.keyjoin:
sorted uint64 arrays, every match checked on the key values) and falls back to pyarrow's Acero joins for a chunk
where only they can decide (a duplicate key, a null key, two keys sharing a hash); both give the same counts and
the same rows in the same order (by key hash, then key), so the statistics are the same bytes.

- Scores: one column per model version, joined on the keys, so every model is judged on the same rows (rows
  scored by some of the models only are counted, not evaluated).
- Features: the slice columns. Scored rows without a features row, and features rows without a score, are
  counted and reported.
- Labels: a label counts only if its `label_ts` is at or before `as_of`; when a key has several labels known by
  then, the newest one counts. A row whose label is missing, or known only after `as_of`, is excluded and
  counted per day (never a 0).
- Label maturity (`maturity_days` > 0): the same counted rows again, by label delay (engine.evaluation.maturity),
  their statistics in the counts as base64 text (`maturity`); merged on the driver like the others.
- Keys are unique on each side: a key twice in one model's scores or in the features of a day would multiply rows
  in the join (and push the unmatched counts below zero). Such duplicates are counted per table in the task's
  counts (`duplicate_keys`), and the driver fails the evaluation as a contract violation (exit 3) naming the table,
  day and count; nothing is written. Labels may hold several revisions of a key by design (the newest counts).
  Buckets split a day by key hash, so every copy of a key meets in one task: per task is per day.

The plan and its chunks travel as JSON (no pickle); the result is JSON counts plus the statistics' bytes.
`evaluate_chunk_task` is the same function in the shape every executor runs (engine.executor: the plan and schemas
in the unit's `args`, the chunk's JSON in its `args`; counts as the result's payload, statistics as its blob).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.drift import Histograms, SliceHistograms
from engine.evaluation import keyjoin, maturity
from engine.evaluation.keys import row_key_hash
from engine.evaluation.spec import MetricsSpec
from engine.evaluation.stats import EvalStats
from engine.lake.snapshot import file_path, filesystem, iter_file_batches
from engine.work import ChunkResult

SCORE_PREFIX = "score:"  # drift columns of scores are named "score:<model>"
BUCKET_SEED = keyjoin.JOIN_SEED  # independent of the bootstrap seed; the join's own, so the hashes serve both
_LABEL, _LABEL_TS, _EVENT_TS = "__label", "__label_ts", "__event_ts"


@dataclass(frozen=True)
class EvalPlan:
    """What every task of one evaluation shares; shipped once (Ray: one object ref; Spark: one broadcast)."""

    scores_uri: str
    labels_uri: str
    features_uri: str
    keys: tuple[str, ...]
    score_column: str
    label_column: str
    label_ts_column: str
    slice_columns: tuple[str, ...]
    models: tuple[str, ...]  # "name/version", in report order
    as_of_us: int  # microseconds since the epoch, UTC
    spec: dict  # MetricsSpec's fields
    storage_options: dict = field(default_factory=dict)
    batch_rows: int = 131_072
    drift_edges: dict = field(default_factory=dict)  # column → reference edges; "score:<model>" for scores
    maturity_days: int = 0  # K of the label maturity curve (engine.evaluation.maturity); 0: none
    event_ts_column: str = "event_ts"  # the labels' event time, for a label's delay
    drift_slices: list = field(default_factory=list)  # slice column groups of the features' per-slice histograms

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EvalPlan":
        d = json.loads(text)
        for k in ("keys", "slice_columns", "models"):
            d[k] = tuple(d[k])
        return cls(**d)

    def metrics_spec(self) -> MetricsSpec:
        return MetricsSpec(**self.spec)


@dataclass(frozen=True)
class EvalChunk:
    """One day, or one key-hash bucket of it: the files of each table it reads."""

    ds: str
    scores: dict  # model key → data file paths (relative to the scores table, as in the log)
    labels: tuple[str, ...]
    features: tuple[str, ...]
    bucket: int = 0
    buckets: int = 1
    index: int = 0  # plan position: the driver merges in this order

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "EvalChunk":
        d = json.loads(text)
        d["labels"], d["features"] = tuple(d["labels"]), tuple(d["features"])
        return cls(**d)


def _read(plan: EvalPlan, uri: str, paths, columns: list[str], chunk: EvalChunk,
          schema: pa.Schema) -> tuple[pa.Table, np.ndarray | None]:
    """The chunk's rows of some files (the requested columns, typed as the table's schema says) and, for a bucket
    of a day, their key hashes (`keyjoin.key_hash`'s: the join reuses them)."""
    fs, base = filesystem(uri, plan.storage_options)
    parts, hashes = [], []
    for p in paths:
        for batch in iter_file_batches(fs, file_path(base, p), columns, plan.batch_rows, schema):
            t = pa.Table.from_batches([batch])
            if chunk.buckets > 1:
                h = row_key_hash(t, list(plan.keys), BUCKET_SEED)
                mine = h % np.uint64(chunk.buckets) == chunk.bucket
                t = t.filter(pa.array(mine))
                hashes.append(h[mine])
            parts.append(t)
    if not parts:
        return schema_table(schema, columns), None
    return pa.concat_tables(parts), np.concatenate(hashes) if hashes else None


def schema_table(schema: pa.Schema, columns: list[str]) -> pa.Table:
    return pa.schema([schema.field(c) for c in columns]).empty_table()


def _key_types_equal(plan: EvalPlan, tables: list[pa.Table]) -> list[pa.Table]:
    """Cast every table's keys to the first table's key types (e.g. timestamp units that differ)."""
    first = tables[0]
    out = [first]
    for t in tables[1:]:
        for k in plan.keys:
            want = first.schema.field(k).type
            if t.schema.field(k).type != want:
                t = t.set_column(t.schema.get_field_index(k), k, t.column(k).cast(want))
        out.append(t)
    return out


def evaluate_chunk(plan: EvalPlan, chunk: EvalChunk, schemas: dict[str, pa.Schema]) -> tuple[dict, EvalStats]:
    """Join one chunk's rows and fold them into statistics; returns (counts, stats)."""
    keys = list(plan.keys)
    counts: dict = {"ds": chunk.ds, "bucket": chunk.bucket, "rows_scored": {}, "duplicate_keys": {}}
    scores, hashes = [], []
    for model in plan.models:
        t, h = _read(plan, plan.scores_uri, chunk.scores.get(model, ()), keys + [plan.score_column], chunk,
                     schemas["scores"])
        counts["rows_scored"][model] = t.num_rows
        scores.append(t.rename_columns(keys + [model]))
        hashes.append(h)
    drift_cols = [c for c in plan.drift_edges if not c.startswith(SCORE_PREFIX)]
    feats, h = _read(plan, plan.features_uri, chunk.features, keys + list(plan.slice_columns) + drift_cols, chunk,
                     schemas["features"])
    hashes.append(h)
    event = [plan.event_ts_column] if plan.maturity_days and plan.event_ts_column not in keys else []
    labels, h = _read(plan, plan.labels_uri, chunk.labels, keys + [plan.label_column, plan.label_ts_column, *event],
                      chunk, schemas["labels"])
    hashes.append(h)
    labels = labels.rename_columns(keys + [_LABEL, _LABEL_TS] + [_EVENT_TS] * len(event))
    *scores, feats, labels = _key_types_equal(plan, [*scores, feats, labels])
    try:
        scored, rows = _join_by_hash(plan, scores, feats, labels, counts, hashes)
    except keyjoin.Mismatch:  # a hash shared by two keys, a null key, or a duplicate: the exact join decides
        scored, rows = _join_exact(plan, scores, feats, labels, counts)
    counts["rows_all_models"] = scored.num_rows
    counts["rows_missing_a_model_score"] = max(counts["rows_scored"].values()) - scored.num_rows
    if plan.drift_edges:
        hist = Histograms({c: np.asarray(e) for c, e in plan.drift_edges.items()})
        hist.update(feats)
        hist.update(scored.rename_columns([SCORE_PREFIX + c for c in scored.column_names]))
        hist.rows = feats.num_rows
        counts["drift"] = hist.to_bytes().decode()
        if plan.drift_slices:  # the features' histograms per slice, over the same edges (engine.evaluation.slice_drift)
            counts["slice_drift"] = SliceHistograms({c: np.asarray(plan.drift_edges[c]) for c in drift_cols},
                                                    plan.drift_slices).update(feats).to_json()
    counts["rows_evaluated"] = rows.num_rows
    stats = EvalStats(plan.metrics_spec(), list(plan.models))
    if rows.num_rows:
        key_hash = row_key_hash(rows, keys, plan.spec.get("seed", 0))
        label = rows.column(_LABEL).to_numpy(zero_copy_only=False)
        scores = {m: rows.column(m).to_numpy(zero_copy_only=False) for m in plan.models}
        slices = {c: rows.column(c).combine_chunks() for c in plan.slice_columns}
        stats.update(key_hash, label, scores, slices)
        if plan.maturity_days:  # the same rows by label delay (engine.evaluation.maturity)
            event = rows.column(plan.event_ts_column if plan.event_ts_column in keys else _EVENT_TS)
            counts["maturity"] = maturity.fold(plan.metrics_spec(), list(plan.models), plan.maturity_days, key_hash,
                                               label, scores, rows.column(_LABEL_TS), event)
    return counts, stats


def _known_mask(plan: EvalPlan, labels: pa.Table) -> pa.ChunkedArray:
    """A label counts once known by as_of; a null label (known to be unknown) is no label at all."""
    ts = labels.column(_LABEL_TS).cast(pa.int64())
    return pc.fill_null(pc.and_(pc.and_(pc.is_valid(ts), pc.less_equal(ts, pa.scalar(plan.as_of_us, pa.int64()))),
                                pc.is_valid(labels.column(_LABEL))), False)


def _sorted_rows(plan: EvalPlan, rows: pa.Table) -> pa.Table:
    """A fixed order, so float sums do not depend on the join: by key hash (`keyjoin.key_hash`, the order the hash
    join leaves its rows in), then by key where two keys share a hash."""
    keys = list(plan.keys)
    h = rows.append_column("__hash", pa.array(keyjoin.key_hash(rows, keys)))
    return h.sort_by([("__hash", "ascending"), *((k, "ascending") for k in keys)]).drop_columns(["__hash"])


def _join_by_hash(plan: EvalPlan, scores: list[pa.Table], feats: pa.Table, labels: pa.Table, counts: dict,
                  hashes: list | None = None) -> tuple[pa.Table, pa.Table]:
    """(scores of the rows every model scored, the evaluated rows in `_sorted_rows`' order), joined on key hashes
    (engine.evaluation.keyjoin), every match checked on the key values; counts filled as `_join_exact` fills them.
    Raises keyjoin.Mismatch where only the exact join can decide (a duplicate key, a shared hash, a null key)."""
    keys = list(plan.keys)
    given = list(hashes or [None] * (len(scores) + 2))

    def key_hash(i: int, t: pa.Table) -> np.ndarray:  # the one `_read` kept (a bucket's), else made now
        return given[i] if given[i] is not None else keyjoin.key_hash(t, keys)

    base = scores[0]
    bh = key_hash(0, base)
    # Rows of `base` in every model's scores so far, in hash order (so each search's needles are sorted).
    rows = keyjoin.Index.unique(bh, "scores").rows
    taken = {plan.models[0]: rows}
    for j, (model, t) in enumerate(zip(plan.models[1:], scores[1:]), start=1):
        i, r = keyjoin.Index.unique(key_hash(j, t), "scores").find(bh[rows])
        keyjoin.check_same_keys(base, rows[i], t, r, keys)
        rows = rows[i]
        taken = {m: v[i] for m, v in taken.items()} | {model: r}
    scored = pa.table({m: t.column(m).take(pa.array(taken[m])) for m, t in zip(plan.models, scores)})
    i, fr = keyjoin.Index.unique(key_hash(len(scores), feats), "features").find(bh[rows])
    keyjoin.check_same_keys(base, rows[i], feats, fr, keys)
    joined = len(i)
    counts["scores_without_features"] = len(rows) - joined
    counts["features_without_scores"] = feats.num_rows - joined
    taken = {m: v[i] for m, v in taken.items()}
    rows = rows[i]
    lh = key_hash(len(scores) + 1, labels)
    known = _known_mask(plan, labels).to_numpy(zero_copy_only=False)
    k_rows = np.flatnonzero(known)
    ts = labels.column(_LABEL_TS).cast(pa.int64()).fill_null(0).to_numpy()
    newest = keyjoin.newest(lh[k_rows], ts[k_rows], k_rows, labels, keys)
    i, lr = newest.find(bh[rows])
    keyjoin.check_same_keys(base, rows[i], labels, lr, keys)
    unlabelled = np.setdiff1d(np.arange(len(rows)), i, assume_unique=True)
    late = np.flatnonzero(~known)
    after = 0
    if len(late) and len(unlabelled):
        u, r = keyjoin.Index(lh[late], late).find(bh[rows[unlabelled]])
        keyjoin.check_same_keys(base, rows[unlabelled[u]], labels, r, keys)
        after = len(u)
    counts["rows_label_after_as_of"] = after
    counts["rows_without_label"] = len(unlabelled) - after
    # The evaluated rows are in key-hash order already (`rows` is, and `find` keeps it), the order `_sorted_rows`
    # gives: every column is gathered once, in it.
    fr, rows = fr[i], rows[i]
    taken = {m: v[i] for m, v in taken.items()}
    out = {k: base.column(k).take(pa.array(rows)) for k in keys}
    out |= {m: t.column(m).take(pa.array(taken[m])) for m, t in zip(plan.models, scores)}
    out |= {c: _encoded(feats.column(c)).take(pa.array(fr)) for c in plan.slice_columns}
    out |= {c: labels.column(c).take(pa.array(lr)) for c in labels.column_names if c not in keys}
    return scored, pa.table(out)


def _encoded(col: pa.ChunkedArray) -> pa.Array:
    """A slice column as one dictionary array: a gather moves small integers, not strings (EvalStats encodes it
    anyway; slices are ordered by name, so the dictionary's order changes no figure)."""
    col = col.combine_chunks()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_binary(col.type):
        return col.dictionary_encode()
    return col


def _join_exact(plan: EvalPlan, scores: list[pa.Table], feats: pa.Table, labels: pa.Table,
                counts: dict) -> tuple[pa.Table, pa.Table]:
    """What `_join_by_hash` returns, by Acero's joins on the key values (and duplicates counted per table)."""
    keys = list(plan.keys)
    scored = None
    for model, t in zip(plan.models, scores):
        _count_duplicates(counts, f"scores:{model}", t, keys)
        scored = t if scored is None else scored.join(t, keys=keys, join_type="inner")
    _count_duplicates(counts, "features", feats, keys)
    joined = scored.join(feats.select(keys + list(plan.slice_columns)), keys=keys, join_type="inner")
    counts["scores_without_features"] = scored.num_rows - joined.num_rows
    counts["features_without_scores"] = feats.num_rows - joined.num_rows
    known_mask = _known_mask(plan, labels)
    known = newest_per_key(labels.filter(known_mask), keys)
    late_keys = labels.filter(pc.invert(known_mask)).select(keys)
    rows = joined.join(known, keys=keys, join_type="inner")
    unlabelled = joined.join(known, keys=keys, join_type="left anti")
    after = unlabelled.join(late_keys, keys=keys, join_type="left semi").num_rows if late_keys.num_rows else 0
    counts["rows_label_after_as_of"] = after
    counts["rows_without_label"] = unlabelled.num_rows - after
    return scored.select(list(plan.models)), _sorted_rows(plan, rows)


def _count_duplicates(counts: dict, table: str, t: pa.Table, keys: list[str]) -> None:
    """Rows beyond the first of each key in `t` into counts["duplicate_keys"][table] ("features", or "scores:<model>"
    for one model's scores)."""
    if t.num_rows:
        extra = t.num_rows - t.select(keys).group_by(keys, use_threads=False).aggregate([]).num_rows
        if extra:
            counts["duplicate_keys"][table] = extra


def newest_per_key(labels: pa.Table, keys: list[str]) -> pa.Table:
    """One label per key: the newest one known (labels can be revised; the latest known revision counts).
    `labels` has the key columns and `__label_ts`; backtests' training join uses it too."""
    if labels.num_rows == 0:
        return labels
    t = labels.sort_by([*((k, "ascending") for k in keys), (_LABEL_TS, "descending")])
    idx = pa.array(np.arange(t.num_rows))
    first = t.append_column("__i", idx).group_by(keys, use_threads=False).aggregate([("__i", "min")])
    return t.take(pa.array(np.sort(first.column("__i_min").to_numpy())))


def run_chunk_json(plan_json: str, chunk_json: str, schemas_json: str) -> tuple[str, bytes]:
    """What a worker runs on either engine: JSON in, (JSON counts, statistics bytes) out."""
    plan, chunk = EvalPlan.from_json(plan_json), EvalChunk.from_json(chunk_json)
    schemas = {k: pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(v))) for k, v in json.loads(schemas_json).items()}
    counts, stats = evaluate_chunk(plan, chunk, schemas)
    counts["index"] = chunk.index
    return json.dumps(counts, sort_keys=True), stats.to_bytes()


def evaluate_chunk_task(unit, chunk, bundle) -> ChunkResult:
    """`run_chunk_json` as an executor's chunk function (engine.work.UnitWork.task): the job hands it in as data."""
    counts, stats = run_chunk_json(unit.args[0], chunk.args, unit.args[1])
    return ChunkResult(unit.unit, 0, 0, [], payload=counts, blob=stats)


def schemas_json(schemas: dict[str, pa.Schema]) -> str:
    return json.dumps({k: s.serialize().to_pybytes().hex() for k, s in schemas.items()}, sort_keys=True)
