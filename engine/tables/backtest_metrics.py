"""The `backtest_metrics` Delta table: one row per (backtest, fold, model, slice, metric), with the fold's cutoff,
training and test ranges, the model that scored it, the interval and the support.

Partitioned by `backtest_id` and `fold`: one backtest is one partition prune, and each fold is its own unit of the
commit protocol (engine.lake.commit), committed once; a re-run of the same backtest (same config and table versions,
hence the same id) finds its completed folds from their application transactions and resumes after them. A
transaction counts only where the fold's partition still holds files (engine.lake.commit.Backing): a RESTORE of the table
to an earlier version keeps the transactions of folds committed after it but not their rows, so such a fold is
redone (listed as restored). The partition key (backtest id, fold) fixes what a fold holds (the id hashes the config
and the table versions), so rows present there are that fold's: no stamp column is needed.
Each row also carries the fold's facts as JSON (`fold_info`: sizes, seed, guard verdicts, reliability bins), so
the report can be rebuilt from the table alone.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json

import pyarrow as pa

from engine.lake import commit as protocol
from engine.lake.snapshot import filesystem
from engine.lake.writer import write_files

PARTITION_COLUMNS = ["backtest_id", "fold"]
FILE_FIELDS = [
    pa.field("cutoff", pa.string()), pa.field("train_start", pa.string()), pa.field("train_end", pa.string()),
    pa.field("test_start", pa.string()), pa.field("test_end", pa.string()), pa.field("trained_on", pa.int64()),
    pa.field("model", pa.string()), pa.field("kind", pa.string()), pa.field("baseline", pa.string()),
    pa.field("slice", pa.string()), pa.field("slice_columns", pa.string()), pa.field("slice_values", pa.string()),
    pa.field("metric", pa.string()), pa.field("value", pa.float64()), pa.field("ci_low", pa.float64()),
    pa.field("ci_high", pa.float64()), pa.field("support", pa.int64()), pa.field("status", pa.string()),
    pa.field("train_rows", pa.int64()), pa.field("test_rows", pa.int64()),
    pa.field("features_version", pa.int64()), pa.field("labels_version", pa.int64()),
    pa.field("run_id", pa.string()), pa.field("config_hash", pa.string()), pa.field("fold_info", pa.string()),
    pa.field("created_at", pa.timestamp("us", tz="UTC")),
]
FILE_SCHEMA = pa.schema(FILE_FIELDS)
TABLE_SCHEMA = pa.schema([*FILE_FIELDS, pa.field("backtest_id", pa.string()), pa.field("fold", pa.int64())])
_INFO_KEYS = ("fold", "trained_on", "seed", "cutoff", "train_start", "train_end", "test_start", "test_end",
              "train_rows", "train_rows_label_unknown_at_cutoff", "train_base_rate", "test_rows",
              "test_rows_unlabelled", "reliability", "guard")


class Store:
    def __init__(self, uri: str, summary, storage_options: dict | None, retries: int):
        self.uri, self.summary, self.opts = uri, summary, storage_options or {}
        protocol.open_or_create(uri, TABLE_SCHEMA, PARTITION_COLUMNS, self.opts)
        self.committer = protocol.Committer(uri, TABLE_SCHEMA, PARTITION_COLUMNS, summary.run_id, retries, self.opts,
                                            backing=protocol.Backing())

    def unit(self, fold: int) -> protocol.Unit:
        pv = {"backtest_id": self.summary.backtest_id, "fold": fold}
        fp = hashlib.sha256(f"{self.summary.backtest_id}|{fold}".encode()).hexdigest()
        return protocol.Unit(protocol.app_id("backtest", pv, PARTITION_COLUMNS), pv, fp)

    def completed(self, folds) -> tuple[set[int], list[int]]:
        """The folds committed earlier whose rows are in the table, and those whose rows are not (restored away)."""
        table = self.committer.latest()
        recorded = [f.index for f in folds if protocol.recorded_version(table, self.unit(f.index)) == self.unit(f.index).txn_version]
        done = {i for i in recorded if self.committer.backed(table, self.unit(i))}
        return done, sorted(set(recorded) - done)

    def commit(self, r: dict) -> str:
        unit = self.unit(r["fold"])
        info = json.dumps({k: r[k] for k in _INFO_KEYS}, sort_keys=True, default=str)
        common = {k: r[k] for k in ("cutoff", "train_start", "train_end", "test_start", "test_end", "trained_on",
                                    "train_rows", "test_rows")}
        common.update(features_version=self.summary.versions["features"], labels_version=self.summary.versions["labels"],
                      run_id=self.summary.run_id, config_hash=self.summary.config_hash, fold_info=info,
                      created_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
        cols = {f.name: [] for f in FILE_FIELDS}
        for row in [*r["metrics"], *r["deltas"]]:
            full = {**common, **row, "kind": "delta" if "baseline" in row else "metric"}
            for name in cols:
                cols[name].append(full.get(name))
        batch = pa.RecordBatch.from_pydict(cols, schema=FILE_SCHEMA)
        fs, base = filesystem(self.uri, self.opts)
        rel = f"backtest_id={self.summary.backtest_id}/fold={r['fold']}"
        adds = write_files(fs, base, rel, FILE_SCHEMA, unit.partition_values, batch, f"part-{self.summary.run_id[:12]}")
        meta = {"app_id": unit.app_id, "job": "backtest", "fold": r["fold"], "cutoff": r["cutoff"],
                "rows": batch.num_rows, "versions": self.summary.versions}
        return self.committer.commit(unit, adds, meta)

    def read_all(self, folds) -> list[dict]:
        """Every committed fold of this backtest, rebuilt from the table (this run's and earlier runs')."""
        from deltalake import DeltaTable

        t = DeltaTable(self.uri, storage_options=self.opts or None).to_pyarrow_table(
            filters=[("backtest_id", "=", self.summary.backtest_id)])
        out = []
        for f in folds:
            rows = t.filter(pa.compute.equal(t.column("fold"), f.index)).to_pylist()
            if not rows:
                continue
            r = json.loads(rows[0]["fold_info"])
            keep = ("model", "slice", "slice_columns", "slice_values", "metric", "value", "ci_low", "ci_high",
                    "support", "status")
            r["metrics"] = [{k: x[k] for k in keep} for x in rows if x["kind"] == "metric"]
            r["deltas"] = [{**{k: x[k] for k in keep}, "baseline": x["baseline"]} for x in rows if x["kind"] == "delta"]
            r["run_id"] = rows[0]["run_id"]
            out.append(r)
        return out
