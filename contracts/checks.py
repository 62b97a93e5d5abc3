"""Row checks on Arrow batches and their mergeable statistics.

`row_masks` gives one boolean mask per failing check (pandera's pyspark backend reports no failing rows, so row
masks come from here on every engine). `CheckStats` accumulates counts, a few PII-free examples, key hashes for
uniqueness and histograms for drift, per chunk; the driver merges chunks into a unit's verdict. Key hashes never
leave the worker: `seal` counts a one-chunk unit's duplicates there, or spills them for the per-bucket count of
`contracts.unique`, so a chunk ships a count or a file name.

Null keys: a row whose key holds a null identifies nothing, so it is a `not_null` failure of its key column (a key
column is never nullable, whatever the contract says of it: `ResolvedContract.allows_null`) and is left out of the
key hashes. Hashing it would count every null key as a duplicate of every other (an integer null read as NaN and
cast, a string null as the text "None"), reporting one problem twice and a wrong duplicate count.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contracts.spec import _TYPE_TESTS, ResolvedContract
from engine.drift import bin_counts

MAX_EXAMPLES = 3


def row_masks(batch: pa.RecordBatch, rc: ResolvedContract, ds: str) -> dict[str, np.ndarray]:
    """check id ("not_null:col", "range:col", "category:col", "finite:col", "event_in_partition:col") → failing rows."""
    out: dict[str, np.ndarray] = {}

    def put(check: str, col: str, mask) -> None:
        arr = np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)
        if arr.any():
            out[f"{check}:{col}"] = arr

    def put_np(check: str, col: str, mask: np.ndarray) -> None:
        if mask.any():
            out[f"{check}:{col}"] = mask

    names = set(batch.schema.names)
    for name, spec in rc.columns.items():
        if name not in names:
            continue
        col = batch.column(name)
        if not rc.allows_null(name):  # a key column never: a null key is a not_null failure, not a duplicate
            put("not_null", name, pc.is_null(col))
        if spec.pii:
            continue  # no value check on PII: its message or example could quote the value
        numeric = pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
        ranged = spec.min is not None or spec.max is not None
        if numeric and col.null_count == 0 and (ranged or spec.finite):
            # Fast path (most feature columns): zero-copy numpy, one pass per check, no Arrow temporaries.
            v = col.to_numpy(zero_copy_only=False)
            if spec.finite and v.dtype.kind == "f":
                put_np("finite", name, ~np.isfinite(v))
            if ranged:
                bad = np.zeros(len(v), dtype=bool)
                if spec.min is not None:
                    bad |= v < spec.min
                if spec.max is not None:
                    bad |= v > spec.max
                put_np("range", name, bad)
            continue
        if spec.finite and pa.types.is_floating(col.type):
            put("finite", name, pc.invert(pc.is_finite(col)))
        if numeric and ranged:
            below = pc.less(col, spec.min) if spec.min is not None else None
            above = pc.greater(col, spec.max) if spec.max is not None else None
            mask = below if above is None else above if below is None else pc.or_(below, above)
            put("range", name, mask)
        if spec.categories is not None and _TYPE_TESTS["string"](col.type):
            # large_string / string_view (pandas, polars writers) are normalised first: is_in wants one type.
            # A null is not_null's business (as in the pandera schema), not a category failure.
            text = col if pa.types.is_string(col.type) else col.cast(pa.string())
            out_of_list = pc.invert(pc.is_in(text, value_set=pa.array(spec.categories, pa.string())))
            put("category", name, pc.and_(pc.is_valid(text), out_of_list))
    et = rc.contract.event_time
    if et and et in names and pa.types.is_timestamp(batch.column(et).type):
        day = dt.date.fromisoformat(ds)
        col = batch.column(et)
        start = pa.scalar(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc), col.type)
        end = pa.scalar(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc) + dt.timedelta(days=1), col.type)
        put("event_in_partition", et, pc.or_(pc.less(col, start), pc.greater_equal(col, end)))
    return out


def key_hashes(batch: pa.RecordBatch, key: list[str]) -> np.ndarray:
    """64-bit hashes of the key (exact for one integer key column) of the rows whose key holds no null: a null key is
    `row_masks`' not_null failure, never a duplicate of another null key (nor of the text "None")."""
    valid = None
    for k in key:
        if batch.column(k).null_count:
            ok = pc.is_valid(batch.column(k))
            valid = ok if valid is None else pc.and_(valid, ok)
    if valid is not None:
        batch = batch.filter(valid)
    if len(key) == 1 and pa.types.is_integer(batch.column(key[0]).type):
        return batch.column(key[0]).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    h = np.full(batch.num_rows, 1469598103934665603, dtype=np.uint64)
    for k in key:
        vals = batch.column(k).cast(pa.string()).to_pylist()
        # blake2b, not hash(): Python's string hash differs between worker processes.
        part = np.array([int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little")
                         for v in vals], dtype=np.uint64)
        h = (h ^ part) * np.uint64(1099511628211)
    return h


@dataclass
class CheckStats:
    """Mergeable per-unit statistics of the row checks (and of drift features)."""

    rows: int = 0
    bad_rows: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict]] = field(default_factory=dict)
    keys: list[np.ndarray] = field(default_factory=list)  # this chunk's key hashes, until `seal`
    hist: dict[str, np.ndarray] = field(default_factory=dict)
    duplicates: int = 0  # rows whose key repeats: counted in the chunk, or by contracts.unique's second stage
    key_spills: list[str] = field(default_factory=list)  # spill files awaiting that stage (names in the unit's folder)

    def update(self, batch: pa.RecordBatch, masks: dict[str, np.ndarray], rc: ResolvedContract,
               edges: dict[str, np.ndarray]) -> np.ndarray:
        """Add one batch; returns its mask of rows that failed any check."""
        n = batch.num_rows
        any_bad = np.zeros(n, dtype=bool)
        key = [k for k in rc.contract.key if k not in rc.pii]
        for check, mask in masks.items():
            any_bad |= mask
            self.failed[check] = self.failed.get(check, 0) + int(mask.sum())
            ex = self.examples.setdefault(check, [])
            if len(ex) < MAX_EXAMPLES:
                col = check.split(":", 1)[1]
                quote = col not in rc.pii
                for i in np.flatnonzero(mask)[: MAX_EXAMPLES - len(ex)]:
                    item = {k: _plain(batch.column(k)[int(i)]) for k in key}
                    if quote:
                        item["value"] = _plain(batch.column(col)[int(i)])
                    ex.append(item)
        self.rows += n
        self.bad_rows += int(any_bad.sum())
        if rc.contract.key and all(k in batch.schema.names for k in rc.contract.key):
            self.keys.append(key_hashes(batch, rc.contract.key))
        for name, e in edges.items():
            vals = batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
            self.hist[name] = self.hist.get(name, 0) + bin_counts(vals, e)
        return any_bad

    def merge(self, other: "CheckStats") -> "CheckStats":
        self.rows += other.rows
        self.bad_rows += other.bad_rows
        for k, v in other.failed.items():
            self.failed[k] = self.failed.get(k, 0) + v
        for k, v in other.examples.items():
            self.examples.setdefault(k, []).extend(v)
            self.examples[k] = self.examples[k][:MAX_EXAMPLES]
        self.keys += other.keys
        for k, v in other.hist.items():
            self.hist[k] = self.hist.get(k, 0) + v
        self.duplicates += other.duplicates
        self.key_spills += other.key_spills
        return self

    def seal(self, spill_to: str = "", chunk_index: int = 0, buckets: int = 1,
             storage_options: dict | None = None, key_salt: bytes = b"") -> "CheckStats":
        """End of a chunk: count its duplicate keys here (`spill_to` empty: the unit is this one chunk), or spill the
        hashes, encrypted under the unit's `key_salt` (contracts.unique), into the folder `spill_to` for the unit's
        per-bucket count; either way the hashes are dropped."""
        from contracts import unique

        if self.keys:
            hashes = np.concatenate(self.keys)
            if spill_to:
                self.key_spills.append(unique.spill(hashes, spill_to, chunk_index, buckets, storage_options or {},
                                                    key_salt))
            else:
                self.duplicates += unique.duplicate_rows(hashes)
            self.keys = []
        return self

    def to_bytes(self) -> bytes:
        """JSON (no pickle): ships through Spark rows and Ray Data columns and back. Call `seal` first: key hashes
        are not shipped."""
        if self.keys:
            raise ValueError("CheckStats.to_bytes: seal() the chunk's statistics first (key hashes are not shipped)")
        return json.dumps({"rows": self.rows, "bad_rows": self.bad_rows, "failed": self.failed,
                           "examples": self.examples, "hist": {k: np.asarray(v).tolist() for k, v in self.hist.items()},
                           "duplicates": self.duplicates, "key_spills": self.key_spills}, default=str).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "CheckStats":
        head = json.loads(data)
        return cls(head["rows"], head["bad_rows"], head["failed"], head["examples"], [],
                   {k: np.asarray(v, dtype=np.int64) for k, v in head["hist"].items()}, head["duplicates"],
                   head["key_spills"])

    def duplicate_keys(self) -> int:
        """Rows whose key appears more than once in the unit (hashes not yet sealed are counted together)."""
        if self.key_spills:
            raise ValueError("CheckStats.duplicate_keys: the unit's spilled key hashes were not counted "
                             "(contracts.unique.count_spilled)")
        from contracts import unique

        return self.duplicates + (unique.duplicate_rows(np.concatenate(self.keys)) if self.keys else 0)


def _plain(scalar: pa.Scalar):
    v = scalar.as_py()
    if isinstance(v, float) and not np.isfinite(v):
        return str(v)
    return v.isoformat() if hasattr(v, "isoformat") else v
