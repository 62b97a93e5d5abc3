"""The scaling curve (benchmarks/scaling.py, issue 20): from the runs at each size it writes a markdown table, a PNG
plot and a JSON, and marks a part whose rows/s falls as the rows grow. Synthetic runs, no timing."""
from __future__ import annotations

import argparse
import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import scaling  # noqa: E402


def bench_args() -> argparse.Namespace:
    return argparse.Namespace(repeat=1, features=50, trees=200, depth=6)


def size(rows: int, raw: float, ray: float, peer: float, spark: float) -> dict:
    def one(v, **run):
        return {"rows_per_s": v, "seconds": rows / v, "runs": [{"rows_per_s": v, "seconds": rows / v, **run}]}

    return {"rows": rows, "raw": one(raw), "lakescore": one(ray, tasks={"tasks_span_s": rows / (2 * ray)}),
            "spark_udf_tuned_whole": one(peer), "spark_job": one(spark, timeline={"steady_rows_per_s": 1.5 * spark})}


def test_the_scaling_curve_writes_its_table_plot_and_json_and_marks_a_fall(tmp_path):
    per = {1_000: size(1_000, 500.0, 300.0, 100.0, 150.0), 4_000: size(4_000, 510.0, 250.0, 120.0, 200.0)}
    res = scaling.summarize_curve(per, bench_args())
    scaling.write_outputs(res, tmp_path)
    assert res["rows_per_s_holds_or_rises"] == {"raw": True, "lakescore": False, "spark_udf_tuned_whole": True,
                                                "spark_job": True}
    assert res["table"][1]["lakescore_ratio_vs_raw"] == round(250 / 510, 3) and res["table"][1]["lakescore_steady"] == 500
    md = (tmp_path / "scaling.md").read_text()
    assert "| 4,000 | 510 | 250 | 120 | 200 | 0.49 | 0.23 | 0.39 | 500 | 300 |" in md
    assert "(b) Ray score job, whole: rows/s as rows grow: FALLS" in md
    assert (tmp_path / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "scaling.json").read_text())["scaling_rows"] == [1000, 4000]


def test_scaling_sizes_are_a_sorted_list_of_positive_counts():
    assert scaling.sizes("200000, 100000") == [100_000, 200_000]
    for bad in ("", "1e6", "0,5"):
        with pytest.raises(SystemExit, match="--scaling-rows"):
            scaling.sizes(bad)
