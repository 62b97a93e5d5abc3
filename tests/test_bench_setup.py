"""The benchmark's data set-up (benchmarks/workload.py): raw (a) reads the one Parquet export, the other parts the
Delta lake of the same size, and (a) is every part's reference, so the export must hold that size's rows exactly."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pyarrow.dataset as pads
from deltalake import DeltaTable

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import workload  # noqa: E402

ARGS = SimpleNamespace(seed=7, features=3, days=2, file_rows=1000)


def _rows(table):
    return table.select(["entity_id", "f00", "f02", "region", "ds"]).sort_by("entity_id")


def test_an_export_of_another_size_is_not_reused_and_a_rewrite_matches_the_lake(tmp_path):
    """A 3,000-row export is not the 2,000-row lake's (the bench once reused a 16M export for its 1M run), and the
    export written alone beside an existing lake holds the lake's own rows. Broken builds caught: reuse by the
    folder's existence (parquet_rows ignored), or a Parquet-only write that draws other rows than the lake's."""
    lake, export = tmp_path / "lake", tmp_path / "parquet"
    workload.write_dataset(3000, ARGS, tmp_path / "other", export)
    assert workload.parquet_rows(export) == 3000 and workload.parquet_rows(tmp_path / "none") is None
    workload.write_dataset(2000, ARGS, lake, None)
    version = DeltaTable(str(lake / "features")).version()
    workload.write_dataset(2000, ARGS, lake, export, delta=False)
    assert workload.parquet_rows(export) == 2000
    assert DeltaTable(str(lake / "features")).version() == version  # the lake was left as it was
    from_lake = DeltaTable(str(lake / "features")).to_pyarrow_table()
    assert _rows(pads.dataset(str(export)).to_table()).equals(_rows(from_lake))
