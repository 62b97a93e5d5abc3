"""`make demo`'s closing block: the explain example names a row that exists."""
from __future__ import annotations

import re

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from jobs.demo_info import explain_example


def test_the_explain_example_names_a_real_key_and_day(tmp_path):
    uri = str(tmp_path / "scores")
    assert "no scores yet" in explain_example(_empty(uri), "entity_id")
    days = ["2026-01-01", "2026-01-01", "2026-01-02", "2026-01-02"]
    write_deltalake(uri, pa.table({"entity_id": [7, 3, 9, 12], "ds": days, "score": [0.1, 0.2, 0.3, 0.4]}),
                    partition_by=["ds"], mode="overwrite")
    line = explain_example(DeltaTable(uri), "entity_id")
    m = re.fullmatch(r"""lakescore explain --table scores --where "entity_id = (\d+) AND ds = '([\d-]+)'\"""", line)
    assert m, line
    rows = DeltaTable(uri).to_pandas(filters=[("ds", "=", m.group(2))])
    assert m.group(2) == "2026-01-02" and int(m.group(1)) in set(rows["entity_id"])
    write_deltalake(str(tmp_path / "s2"), pa.table({"k": ["a'b"], "ds": ["2026-01-01"]}), partition_by=["ds"])
    assert "k = 'a''b' AND ds = '2026-01-01'" in explain_example(DeltaTable(str(tmp_path / "s2")), "k")


def _empty(uri: str) -> DeltaTable:
    schema = pa.schema([("entity_id", pa.int64()), ("ds", pa.string()), ("score", pa.float64())])
    write_deltalake(uri, schema.empty_table(), partition_by=["ds"])
    return DeltaTable(uri)


def test_demo_info_prints_where_things_are_and_the_next_steps(lake, demo_root, tmp_path, capsys):
    import yaml

    from conftest import score_config
    from engine.executor import LocalExecutor
    from jobs.demo_info import main
    from jobs.score import run_score

    run_score(score_config(lake, demo_root), LocalExecutor())
    conf = tmp_path / "score.yaml"
    conf.write_text(yaml.safe_dump({"lake": {"root": str(lake)}, "mlflow": {"tracking_uri": f"sqlite:///{demo_root}/mlruns.db"},
                                    "model": {"uri": "models:/t-xgb@champion"}}))
    assert main(["--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "Next steps" in out and "lakescore status --table scores" in out
    assert "lakescore explain --table scores --where \"entity_id = " in out
    assert out.count("(none yet: python -m jobs.evaluate") == 2  # no evaluation in this lake: said, twice
