"""Spark adapter for contract checks: the same Arrow row checks, moved over a delta-spark DataFrame by mapInArrow.

The table is read through delta-spark at the pinned version (`versionAsOf`), so partition values come from the
Delta log and columns added to the table after a file was written read as nulls. Each Spark partition folds its
Arrow batches into one CheckStats per (day, file split) and sends it back as bytes (JSON and raw key hashes, no
pickle). The driver merges them in file path and offset order, the order in which Ray's chunks are planned and
merged, so both engines reach the same verdict and quote the same examples however Spark packs its partitions.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from contracts.checks import CheckStats, row_masks

_OUT = "ds string, file string, start long, stats binary"
_FILE, _START = "_lakescore_file", "_lakescore_start"


def _fold(rc, edges: dict):
    def fold(batches):
        stats: dict[tuple, CheckStats] = {}
        for b in batches:
            # A batch may span files (Spark packs small files into one partition): fold each piece apart.
            keys = pa.table([b.column("ds"), b.column(_FILE), b.column(_START)], names=["ds", "f", "s"])
            pieces = keys.group_by(["ds", "f", "s"], use_threads=False).aggregate([]).to_pylist()
            data = b.drop_columns([_FILE, _START])
            for p in pieces:
                part = data if len(pieces) == 1 else data.filter(pc.and_(
                    pc.and_(pc.equal(b.column("ds"), p["ds"]), pc.equal(b.column(_FILE), p["f"])),
                    pc.equal(b.column(_START), p["s"])))
                st = stats.setdefault((p["ds"], p["f"], p["s"]), CheckStats())
                st.update(part, row_masks(part, rc, p["ds"]), rc, edges)
        for (ds, f, s), st in stats.items():
            yield pa.RecordBatch.from_pydict({"ds": [ds], "file": [f], "start": [s], "stats": [st.to_bytes()]})

    return fold


def spark_gather(spark):
    """gather(cfg, snap, enforcer, days) for contracts.validate.run_validate, computed on Spark."""

    def gather(cfg, snap, enforcer, days: list[str]):
        from pyspark.sql import functions as F

        if not days:
            return {}, {}
        rc = enforcer.rc
        cols = list(dict.fromkeys([*rc.check_columns(), *rc.contract.key, *filter(None, [rc.contract.event_time]),
                                   *enforcer.edges, "ds"]))
        df = (spark.read.format("delta").option("versionAsOf", snap.version).load(snap.uri)
              .where(F.col("ds").isin(days))
              .select(*cols, F.col("_metadata.file_path").alias(_FILE), F.col("_metadata.file_block_start").alias(_START)))
        merged = {d: CheckStats() for d in days}
        rows = df.mapInArrow(_fold(rc, enforcer.edges), _OUT).collect()
        for row in sorted(rows, key=lambda r: (r["ds"], r["file"], r["start"])):
            merged[row["ds"]].merge(CheckStats.from_bytes(bytes(row["stats"])))
        return merged, {}

    return gather
