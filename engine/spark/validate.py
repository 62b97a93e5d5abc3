"""Spark adapter for contract checks: the same Arrow row checks, moved over a delta-spark DataFrame by mapInArrow.

The table is read through delta-spark at the pinned version (`versionAsOf`), so partition values come from the
Delta log; each Spark partition folds its Arrow batches into one CheckStats per day and sends it back as bytes
(JSON and raw key hashes, no pickle). The driver merges them exactly as it merges Ray chunks, which is why both
engines reach the same verdict.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from contracts.checks import CheckStats, row_masks

_OUT = "ds string, stats binary"


def _fold(rc, edges: dict):
    def fold(batches):
        stats: dict[str, CheckStats] = {}
        for b in batches:
            days = pc.unique(b.column("ds")).to_pylist()
            for ds in days:
                part = b if len(days) == 1 else b.filter(pc.equal(b.column("ds"), ds))
                st = stats.setdefault(ds, CheckStats())
                st.update(part, row_masks(part, rc, ds), rc, edges)
        for ds, st in stats.items():
            yield pa.RecordBatch.from_pydict({"ds": [ds], "stats": [st.to_bytes()]})

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
              .where(F.col("ds").isin(days)).select(*cols))
        merged = {d: CheckStats() for d in days}
        for row in df.mapInArrow(_fold(rc, enforcer.edges), _OUT).collect():
            merged[row["ds"]].merge(CheckStats.from_bytes(bytes(row["stats"])))
        return merged, {}

    return gather
