"""`lakescore rollback`: the alias goes back to the holder recorded when it moved, the move is recorded on the
registry, the printed command re-scores exactly the days the restored version lacks, and the next score run stamps
the older version. The registry is a private copy of the session's (its artifacts stay shared, read only)."""
from __future__ import annotations

import json
import shlex
import shutil
from types import SimpleNamespace

import pytest
from deltalake import DeltaTable
from mlflow.tracking import MlflowClient

from conftest import DAYS, ROOT, ROWS, XGB
from engine.tables import ledger
from engine.config import LakeConfig
from engine.ops.rollback import ROLLBACK_TAG, day_ranges, previous_tag
from test_ledger import job_argv

ALL_DAYS = [f"2026-01-0{i + 1}" for i in range(DAYS)]
CONFIG = str(ROOT / "conf" / "score.yaml")


@pytest.fixture
def registry(demo_root, tmp_path):
    """A copy of the demo registry with a second version of the xgb model, promoted to @champion by evaluate's own
    promote(); returns the tracking uri."""
    shutil.copy(demo_root / "mlruns.db", tmp_path / "mlruns.db")
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    client = MlflowClient(uri, registry_uri=uri)
    v1 = client.get_model_version(XGB, "1")
    client.create_model_version(XGB, source=v1.source, run_id=v1.run_id)
    return uri, client


def promote_v2(uri: str) -> None:
    from engine.evaluation.publish import promote

    cfg = SimpleNamespace(models=SimpleNamespace(champion=f"models:/{XGB}@champion"),
                          mlflow=SimpleNamespace(tracking_uri=uri, registry_uri=None))
    promote(cfg, SimpleNamespace(name=XGB, version=1), SimpleNamespace(version=2),
            SimpleNamespace(run_id="eval-run", window="all", as_of="latest", report=None))


def score(lake, demo_root, uri, *overrides, capsys) -> dict:
    from jobs.score import main

    code = main(job_argv(lake, demo_root, f"mlflow.tracking_uri={uri}", *overrides))
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, summary.get("error")
    return summary


def rollback(lake, uri, *args, capsys) -> tuple[int, dict, str]:
    from jobs.rollback import main

    code = main(["--config", CONFIG, f"lake.root={lake}", f"mlflow.tracking_uri={uri}", *args])
    lines = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(lines[-1]), "\n".join(lines[:-1])


def versions_per_day(lake) -> dict[str, set[int]]:
    t = DeltaTable(str(lake / "scores")).to_pyarrow_table(columns=["ds", "model_version"])
    out: dict[str, set[int]] = {}
    for r in t.group_by(["ds", "model_version"]).aggregate([]).to_pylist():
        out.setdefault(r["ds"], set()).add(r["model_version"])
    return out


def test_rollback_restores_the_previous_holder_and_the_next_run_stamps_it(ray_local, lake, demo_root, registry,
                                                                         capsys):
    uri, client = registry
    assert score(lake, demo_root, uri, f"input.ds={ALL_DAYS[0]}", capsys=capsys)["model_version"] == 1
    promote_v2(uri)
    assert score(lake, demo_root, uri, capsys=capsys)["model_version"] == 2

    code, s, text = rollback(lake, uri, "--model", XGB, "--why", "auc dropped", capsys=capsys)
    assert code == 0, s.get("error")
    assert int(client.get_model_version_by_alias(XGB, "champion").version) == 1
    rec = json.loads(client.get_model_version(XGB, "1").tags[ROLLBACK_TAG])
    assert (rec["from_version"], rec["to_version"], rec["previous_holder"], rec["alias"]) == (2, 1, 2, "champion")
    assert rec["why"] == "auc dropped" and rec["by"] and rec["at"]
    # Version 1 got the alias without a promotion: the history ends here, a second rollback asks for --to.
    assert previous_tag("champion") not in client.get_registered_model(XGB).tags
    assert s["rescore_days"] == ALL_DAYS[1:] and s["up_to_date_days"] == [ALL_DAYS[0]]
    (cmd,) = s["commands"]
    assert cmd in text and "--force" not in cmd
    argv = shlex.split(cmd)
    assert argv[:4] == ["lakescore", "score", "--config", CONFIG]
    assert argv[-2:] == [f"model.uri=models:/{XGB}@champion", f"input.ds={ALL_DAYS[1]}..{ALL_DAYS[-1]}"]
    entry = ledger.read(LakeConfig(root=str(lake)), job="rollback").to_pylist()[-1]
    assert (entry["model_name"], entry["model_version"], entry["status"]) == (XGB, 1, "ok")

    # The printed command, run with the test's own settings: the older version is stamped, only where it lacked.
    s = score(lake, demo_root, uri, argv[-1], capsys=capsys)
    assert s["model_version"] == 1 and s["units_committed"] == DAYS - 1
    assert versions_per_day(lake) == {d: {1, 2} for d in ALL_DAYS}
    v1 = DeltaTable(str(lake / "scores")).to_pyarrow_table(filters=[("model_version", "=", 1)], columns=["ds"])
    assert v1.num_rows == DAYS * ROWS
    assert score(lake, demo_root, uri, capsys=capsys)["units_skipped"] == DAYS  # nothing left for version 1

    code, s, _ = rollback(lake, uri, "--model", XGB, capsys=capsys)
    assert code == 2 and "pass --to" in s["error"]
    code, s, text = rollback(lake, uri, "--model", XGB, "--to", "2", capsys=capsys)
    assert code == 0 and int(client.get_model_version_by_alias(XGB, "champion").version) == 2
    # Version 2's promotion record names version 1 before it, the version just left: a rollback never goes back
    # to that (no ping-pong), so the history ends and the next rollback asks for --to again.
    assert previous_tag("champion") not in client.get_registered_model(XGB).tags and s["next_rollback_to"] is None
    assert json.loads(client.get_model_version(XGB, "2").tags[ROLLBACK_TAG])["from_version"] == 1
    assert s["rescore_days"] == [] and s["up_to_date_days"] == ALL_DAYS
    code, s, _ = rollback(lake, uri, "--model", XGB, "--to", "2", capsys=capsys)
    assert code == 0 and s["moved"] is False


def test_successive_rollbacks_walk_back_through_the_promotion_history(lake, registry, capsys):
    from engine.evaluation.publish import promote

    uri, client = registry
    v1 = client.get_model_version(XGB, "1")
    client.create_model_version(XGB, source=v1.source, run_id=v1.run_id)  # version 3
    cfg = SimpleNamespace(models=SimpleNamespace(champion=f"models:/{XGB}@champion"),
                          mlflow=SimpleNamespace(tracking_uri=uri, registry_uri=None))
    why = SimpleNamespace(run_id="eval", window="all", as_of="latest", report=None)
    promote(cfg, SimpleNamespace(name=XGB, version=1), SimpleNamespace(version=2), why)
    promote(cfg, SimpleNamespace(name=XGB, version=2), SimpleNamespace(version=3), why)
    holders = []
    for _ in range(2):
        code, s, text = rollback(lake, uri, "--model", XGB, capsys=capsys)
        assert code == 0, s.get("error")
        holders.append(int(client.get_model_version_by_alias(XGB, "champion").version))
        assert "no day of scores needs re-scoring" in text  # no scores table yet
    assert holders == [2, 1]  # 3 -> 2 -> 1, never back to 3
    code, s, _ = rollback(lake, uri, "--model", XGB, capsys=capsys)
    assert code == 2 and "no recorded previous holder" in s["error"] and "pass --to" in s["error"]


@pytest.mark.parametrize("args, needle", [
    (["--model", "no-such-model"], "model 'no-such-model' not found"),
    (["--model", XGB, "--alias", "canary"], "has no alias @canary"),
    (["--model", XGB, "--to", "99"], "has no version 99"),
    (["--model", XGB, "--to", "two"], "--to"),
])
def test_unknown_model_alias_or_version_is_exit_2_naming_it(lake, registry, capsys, args, needle):
    uri, client = registry
    code, s, _ = rollback(lake, uri, *args, capsys=capsys)
    assert code == 2 and needle in s["error"], s["error"]
    assert int(client.get_model_version_by_alias(XGB, "champion").version) == 1


def test_day_ranges_merge_consecutive_days():
    assert day_ranges(["2026-01-05", "2026-01-03", "2026-01-04", "2026-01-08", "2026-02-28", "2026-03-01"]) == [
        "2026-01-03..2026-01-05", "2026-01-08", "2026-02-28..2026-03-01"]
    assert day_ranges([]) == []


@pytest.mark.parametrize("module", ["rollback", "vacuum", "forget"])
def test_help_shows_examples(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"jobs.{module}").main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and f"lakescore {module}" in out and "examples:\n" in out
