"""The `model_events` table: every alias move (an evaluate promotion, `lakescore rollback`, `lakescore promote`, a
move made outside lakescore) recorded once, queryable ("which version held @champion at time T"), and the history
`rollback` walks when the registry has dropped its tags. Real MLflow sqlite (a private copy of the session's
registry), real Delta tables in tmp_path, read back with `deltalake` directly, not through the module's reader."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from types import SimpleNamespace

import pytest
from deltalake import DeltaTable
from mlflow.tracking import MlflowClient

from conftest import ROOT, XGB
from engine.config import LakeConfig
from engine.executor import LocalExecutor
from engine.tables import model_events
from test_ledger import job_argv

CONFIG = str(ROOT / "conf" / "score.yaml")


@pytest.fixture
def registry(demo_root, tmp_path):
    """A private copy of the demo registry with versions 2 and 3 of the xgb model (version 1's artifact); @champion
    on version 1. Returns (tracking uri, client)."""
    shutil.copy(demo_root / "mlruns.db", tmp_path / "mlruns.db")
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    client = MlflowClient(uri, registry_uri=uri)
    v1 = client.get_model_version(XGB, "1")
    for _ in range(2):
        client.create_model_version(XGB, source=v1.source, run_id=v1.run_id)
    return uri, client


def events(lake) -> list[dict]:
    """The table as it is on disk, oldest first (deltalake directly, independent of model_events.read)."""
    path = lake / "model_events"
    if not path.exists():
        return []
    rows = DeltaTable(str(path)).to_pyarrow_table().to_pylist()
    return sorted(rows, key=lambda r: (r["at"], r["seq"]))


def moves(lake) -> list[tuple]:
    return [(e["kind"], e["alias"], e["from_version"], e["to_version"]) for e in events(lake)]


def champion(client) -> int:
    return int(client.get_model_version_by_alias(XGB, "champion").version)


def promote_eval(uri: str, lake, frm: int, to: int, run_id: str = "eval-run") -> None:
    """evaluate's own promote(), with a config that names the lake (as the evaluate job's does)."""
    from engine.evaluation.publish import promote

    cfg = SimpleNamespace(models=SimpleNamespace(champion=f"models:/{XGB}@champion"),
                          mlflow=SimpleNamespace(tracking_uri=uri, registry_uri=None), lake=LakeConfig(root=str(lake)))
    gates = [{"gate": "threshold", "model": f"{XGB}/{to}", "slice": "overall", "metric": "roc_auc", "passed": True}]
    promote(cfg, SimpleNamespace(name=XGB, version=frm), SimpleNamespace(version=to),
            SimpleNamespace(run_id=run_id, window="2026-01-02..2026-01-04", as_of="latest", report="/r/report.html",
                            mlflow_run_id="mlflow-1"), gates)


def command(module: str, lake, uri: str, *args: str, capsys) -> tuple[int, dict, str, str]:
    import importlib

    code = importlib.import_module(f"jobs.{module}").main(
        ["--config", CONFIG, f"lake.root={lake}", f"mlflow.tracking_uri={uri}", *args])
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    return code, json.loads(lines[-1]), "\n".join(lines[:-1]), out.err


def score(lake, demo_root, uri, *overrides) -> dict:
    from engine.config import ScoreConfig, load_config, resolve_paths
    from jobs.score import run_score

    argv = job_argv(lake, demo_root, f"mlflow.tracking_uri={uri}", "input.ds=2026-01-02", *overrides)
    pairs = [a for a in argv[2:] if "=" in a]
    return run_score(resolve_paths(load_config(ScoreConfig, CONFIG, pairs)), LocalExecutor())


# --------------------------------------------------------------------------------------------------- writers


def test_a_promotion_is_recorded_with_its_evidence(lake, registry):
    """Catches a promote() that moves the alias without recording the event (main: no model_events table at all),
    and one that drops the evidence (evaluate run, gates, report)."""
    uri, client = registry
    before = dt.datetime.now(dt.timezone.utc)
    promote_eval(uri, lake, 1, 2, "eval-42")
    assert champion(client) == 2
    (e,) = events(lake)
    assert (e["kind"], e["model_name"], e["alias"], e["from_version"], e["to_version"]) == (
        "promotion", XGB, "champion", 1, 2)
    assert before <= e["at"] <= dt.datetime.now(dt.timezone.utc) and e["by"] and "eval-42" in e["why"]
    ev = json.loads(e["evidence"])
    assert ev["evaluate_run_id"] == "eval-42" and ev["report"] == "/r/report.html" and ev["mlflow_run_id"] == "mlflow-1"
    assert ev["gates"] == [{"gate": "threshold", "model": f"{XGB}/2", "slice": "overall", "metric": "roc_auc",
                            "passed": True}]
    assert e["run_id"] == "eval-42"
    # the tags stay as a mirror
    assert json.loads(client.get_model_version(XGB, "2").tags["lakescore.promotion"])["from_version"] == 1


def test_rollback_reads_model_events_when_the_registry_dropped_its_tags(lake, registry, capsys):
    """Catches a rollback that reads the registry's tags alone (main: 'no recorded previous holder' once the tags are
    gone), one that does not record its move, and a history that ping-pongs back to the version rolled back."""
    uri, client = registry
    promote_eval(uri, lake, 1, 2)
    promote_eval(uri, lake, 2, 3)
    rm = client.get_registered_model(XGB)
    for key in rm.tags:  # a registry that lost lakescore's tags (a migration, a cleanup script)
        if key.startswith("lakescore."):
            client.delete_registered_model_tag(XGB, key)
    for v in (2, 3):
        client.delete_model_version_tag(XGB, str(v), "lakescore.promotion")

    code, s, text, _ = command("rollback", lake, uri, "--model", XGB, "--why", "auc dropped", capsys=capsys)
    assert code == 0, s.get("error")
    assert champion(client) == 2 and s["from_version"] == 3 and s["next_rollback_to"] == 1
    last = events(lake)[-1]
    assert (last["kind"], last["from_version"], last["to_version"], last["why"]) == ("rollback", 3, 2, "auc dropped")
    assert last["by"] and last["run_id"] == s["run_id"]
    # the mirror is written again from the events' answer
    assert client.get_registered_model(XGB).tags["lakescore.promotion.champion.previous"] == "1"

    code, s, _, _ = command("rollback", lake, uri, "--model", XGB, capsys=capsys)
    assert code == 0 and champion(client) == 1  # 3 -> 2 -> 1: never back to 3
    code, s, _, _ = command("rollback", lake, uri, "--model", XGB, capsys=capsys)
    assert code == 2 and "no recorded previous holder" in s["error"] and champion(client) == 1
    assert moves(lake) == [("promotion", "champion", 1, 2), ("promotion", "champion", 2, 3),
                           ("rollback", "champion", 3, 2), ("rollback", "champion", 2, 1)]


def test_rollback_falls_back_to_tags_without_events(lake, registry, capsys):
    """An older project (promoted before the table existed): the tags still answer, and the move is recorded."""
    uri, client = registry
    promote_eval(uri, tmp_lake := lake.parent / "elsewhere", 1, 2)  # events land in another lake: this one has none
    assert not (lake / "model_events").exists() and (tmp_lake / "model_events").exists()
    code, s, _, _ = command("rollback", lake, uri, "--model", XGB, capsys=capsys)
    assert code == 0 and champion(client) == 1
    assert moves(lake) == [("rollback", "champion", 2, 1)]


def test_promote_command_moves_records_and_refuses_bad_input(lake, registry, capsys):
    """Catches a promote command that is missing (main), that writes on bad input, that records a no-op, or that
    moves an alias that no longer names the --expect version."""
    uri, client = registry
    for args, needle in [(["--model", "nope", "--to", "2", "--why", "x"], "model 'nope' not found"),
                         (["--model", XGB, "--to", "99", "--why", "x"], "has no version 99"),
                         (["--model", XGB, "--to", "2", "--why", "  "], "--why is empty"),
                         (["--model", XGB, "--to", "two", "--why", "x"], "--to"),
                         (["--model", XGB, "--to", "2"], "--why")]:
        code, s, _, err = command("promote", lake, uri, *args, capsys=capsys)
        assert code == 2 and needle in s["error"], (args, s)
        assert [ln for ln in err.splitlines() if "error" in ln] == [f"lakescore promote: error: {s['error']}"]
    code, s, _, err = command("promote", lake, uri, "--model", XGB, "--to", "2", "--expect", "3", "--why", "x",
                              capsys=capsys)
    assert code == 4 and "--expect" in s["error"] and sum("error" in ln for ln in err.splitlines()) == 1
    assert champion(client) == 1 and not (lake / "model_events").exists()  # nothing written

    code, s, text, _ = command("promote", lake, uri, "--model", XGB, "--to", "2", "--expect", "1", "--why",
                               "signed off by risk", capsys=capsys)
    assert code == 0 and s["moved"] and s["recorded"] and champion(client) == 2, s
    (e,) = events(lake)
    assert (e["kind"], e["from_version"], e["to_version"], e["why"]) == ("promote", 1, 2, "signed off by risk")
    assert e["by"] and e["run_id"] == s["run_id"]
    assert client.get_registered_model(XGB).tags["lakescore.promotion.champion.previous"] == "1"
    code, s, text, _ = command("promote", lake, uri, "--model", XGB, "--to", "2", "--why", "again", capsys=capsys)
    assert code == 0 and not s["moved"] and "nothing moved" in text and len(events(lake)) == 1
    # a person's move is undone by rollback like any other
    code, s, _, _ = command("rollback", lake, uri, "--model", XGB, capsys=capsys)
    assert code == 0 and champion(client) == 1 and moves(lake)[-1] == ("rollback", "champion", 2, 1)


def test_promote_refuses_an_alias_moved_while_it_ran(lake, registry, capsys, monkeypatch):
    """The compare-and-set: the alias moves between the command's read and its move (forced through the hook)."""
    from engine.ops import promote as promote_mod

    uri, client = registry
    monkeypatch.setattr(promote_mod, "before_alias_check",
                        lambda: client.set_registered_model_alias(XGB, "champion", "3"))
    code, s, _, _ = command("promote", lake, uri, "--model", XGB, "--to", "2", "--why", "x", capsys=capsys)
    assert code == 4 and "moved from version 1 to version 3" in s["error"]
    assert champion(client) == 3 and all(e["kind"] != "promote" for e in events(lake))


# --------------------------------------------------------------------------------------------- external moves


def test_an_external_move_is_recorded_once_at_the_next_job(lake, demo_root, registry, caplog):
    """Catches jobs that do not compare the registry with the events (main: no events), a detection that records the
    same move again on every run, and a guessed author or reason."""
    uri, client = registry
    score(lake, demo_root, uri)
    assert moves(lake) == [("external", "champion", None, 1)]  # first sight: the history's start
    client.set_registered_model_alias(XGB, "champion", "2")  # moved in the MLflow UI, say
    s = score(lake, demo_root, uri, "input.ds=2026-01-03")
    assert s.model_version == 2
    score(lake, demo_root, uri, "input.ds=2026-01-03")  # a second job: nothing new to record
    assert moves(lake) == [("external", "champion", None, 1), ("external", "champion", 1, 2)]
    ext = events(lake)[-1]
    assert ext["by"] is None and ext["why"] is None and ext["run_id"] == s.run_id
    assert "unknown" in json.loads(ext["evidence"])["note"]


def test_a_backtest_with_a_champion_baseline_records_an_external_move(lake, demo_root, registry):
    """The backtest resolves its baseline `models:/NAME@champion` too: catches a runner that skips the comparison."""
    from backtests.runner import run_backtest
    from test_backtest import bt_config

    uri, client = registry
    cfg = bt_config(lake, demo_root, f"mlflow.tracking_uri={uri}", "folds.n_folds=1", "mlflow.log_reports=false")
    run_backtest(cfg, LocalExecutor())
    client.set_registered_model_alias(XGB, "champion", "3")
    run_backtest(cfg, LocalExecutor())
    assert moves(lake) == [("external", "champion", None, 1), ("external", "champion", 1, 3)]


def test_a_job_still_runs_when_model_events_cannot_be_written(lake, demo_root, registry, caplog):
    """The event log is never a reason to fail a job: a lake whose model_events path is a plain file."""
    uri, _client = registry
    (lake / "model_events").write_text("not a table")
    s = score(lake, demo_root, uri)
    assert s.model_version == 1 and s.units_committed == 1
    assert any("model_events not written" in r.getMessage() for r in caplog.records)


def test_the_same_event_written_twice_is_one_row(tmp_path, monkeypatch):
    """A retried write (the same event) is a no-op: sequentially, and when a second write of it lands while the first
    is about to commit (forced through the hook). Catches an append without the event's application transaction."""
    lake = LakeConfig(root=str(tmp_path))
    e = model_events.Event(model_name=XGB, alias="champion", from_version=1, to_version=2, kind="rollback",
                           run_id="run-1", by="ann", why="why")
    assert model_events.record(lake, e) == "committed"
    assert model_events.record(lake, e) == "already-done"
    f = model_events.Event(model_name=XGB, alias="champion", from_version=2, to_version=1, kind="rollback",
                           run_id="run-2", by="ann", why="why")
    raced = []

    def rival():
        monkeypatch.setattr(model_events, "before_commit", None)
        raced.append(model_events.record(lake, f))

    monkeypatch.setattr(model_events, "before_commit", rival)
    assert model_events.record(lake, f) == "already-done" and raced == ["committed"]
    rows = DeltaTable(str(tmp_path / "model_events")).to_pyarrow_table().to_pylist()
    assert sorted((r["from_version"], r["to_version"]) for r in rows) == [(1, 2), (2, 1)]
    # the losing write's file is dropped, not left beside the table's
    files = {p.name for p in (tmp_path / "model_events" / f"model_name={XGB}").iterdir()}
    assert len(files) == 2


def test_the_holder_stack_counts_a_move_seen_twice_once():
    """A job that read the alias between a promotion's move and its event records it as external first: the replay
    must not count the move twice (a rollback would then ping-pong between the two versions)."""
    def ev(kind, frm, to):
        return {"kind": kind, "from_version": frm, "to_version": to}

    seen_twice = [ev("external", None, 1), ev("external", 1, 2), ev("promotion", 1, 2)]
    assert model_events.holders(seen_twice) == [1, 2]
    assert model_events.holders([*seen_twice, ev("rollback", 2, 1)]) == [1]
    assert model_events.holders([ev("promote", 1, 2), ev("promote", 2, 3), ev("rollback", 3, 2), ev("rollback", 2, 1),
                                 ev("rollback", 1, 3)]) == [3]  # --to forward: a new start, no way back by default
    assert model_events.holders([ev("external", None, 1), ev("external", 1, 5)]) == [1, 5]


# ------------------------------------------------------------------------------------------------- queries


def test_history_at_answers_which_version_held_the_alias(lake, registry, capsys):
    """Catches a history query that takes the newest event instead of the last one at or before T, or one that
    ignores rollbacks; the reference is the test's own clock around each move."""
    uri, client = registry
    marks = [dt.datetime.now(dt.timezone.utc)]
    for step in (lambda: promote_eval(uri, lake, 1, 2),
                 lambda: command("promote", lake, uri, "--model", XGB, "--to", "3", "--why", "hotfix", capsys=capsys),
                 lambda: command("rollback", lake, uri, "--model", XGB, capsys=capsys)):
        time.sleep(0.05)
        step()
        time.sleep(0.05)
        marks.append(dt.datetime.now(dt.timezone.utc))
    assert champion(client) == 2
    expected = [None, 2, 3, 2]  # before any event, after the promotion, after promote, after the rollback
    for t, want in zip(marks, expected):
        code, s, text, _ = command("models", lake, uri, "--history", XGB, "--alias", "champion", "--at",
                                   t.isoformat(), capsys=capsys)
        assert code == 0 and s["held_by"] == want, (t, s, text)
    code, s, text, _ = command("models", lake, uri, "--history", XGB, capsys=capsys)
    assert code == 0 and s["events"] == 3
    lines = text.splitlines()
    assert "v1 -> v2  promotion" in lines[0] and "v2 -> v3  promote" in lines[1] and "why hotfix" in lines[1]
    assert "v3 -> v2  rollback" in lines[2]
    code, s, _, err = command("models", lake, uri, "--history", XGB, "--alias", "champion", "--at", "yesterday",
                              capsys=capsys)
    assert code == 2 and "--at 'yesterday' is not a time" in s["error"]


def test_explain_names_the_holder_when_scored_and_whether_it_still_holds(lake, demo_root, registry, capsys):
    """Catches explain without the alias timeline, and one that answers with today's holder instead of the holder
    at scoring time."""
    uri, client = registry
    score(lake, demo_root, uri)
    from jobs.explain import main

    argv = [*job_argv(lake, demo_root, f"mlflow.tracking_uri={uri}"), "--where", "ds = '2026-01-02'", "--limit", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    (row,) = json.loads(out[-1])["rows"]
    assert row["aliases"] == [{"alias": "champion", "held_at_scoring": 1, "holds_now": 1, "still_holds": True,
                               "scored_by_holder": True, "kind": "external", "since": row["aliases"][0]["since"]}]
    time.sleep(1.1)  # scored_at is stamped to the second: a move in that same second would count as before the row
    promote_eval(uri, lake, 1, 2)
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    (row,) = json.loads(out[-1])["rows"]
    (a,) = row["aliases"]
    assert (a["held_at_scoring"], a["holds_now"], a["still_holds"]) == (1, 2, False)
    assert any("@champion was held by version 1 when scored" in ln and "now held by version 2" in ln for ln in out)
