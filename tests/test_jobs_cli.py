"""Jobs as a scheduler runs them: a process, an exit code, one error line, one JSON summary line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DAYS, MLP, ROOT, ROWS, XGB, score_config

pytestmark = pytest.mark.slow


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_unknown_key_exits_2_with_one_line_and_a_summary():
    out = run("jobs.score", "--config", "conf/score.yaml", "input.tabel=x")
    assert out.returncode == 2
    errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "input.tabel" in errors[0] and "conf/score.yaml" in errors[0]
    assert last_json(out.stdout) == {**last_json(out.stdout), "status": "error", "exit_code": 2}


def test_console_script_lists_every_command_with_an_example_and_rejects_unknown_ones():
    from jobs.cli import COMMANDS

    out = run("jobs.cli", "--help")
    assert out.returncode == 0
    for name, command in COMMANDS.items():
        line = next(ln for ln in out.stdout.splitlines() if ln.split()[:1] == [name])
        assert command.summary in line and f"    {command.example}" in out.stdout
    assert {"status", "explain", "rollback", "vacuum", "forget"} <= set(COMMANDS)
    bad = run("jobs.cli", "nope")
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1
    assert "unknown command 'nope'" in bad.stderr and "score" in bad.stderr


@pytest.mark.parametrize("job", ["demo", "score", "validate", "evaluate", "backtest", "submit"])
def test_every_job_help_shows_examples(job):
    out = run("jobs.cli", job, "--help")
    assert out.returncode == 0, out.stderr
    examples = out.stdout.split("examples:\n", 1)[1].splitlines()
    assert examples and all(e.startswith(f"  lakescore {job} ") for e in examples)
    if job != "submit":
        assert "--log-format {text,json}" in out.stdout and "--no-progress" in out.stdout


def test_a_bad_date_is_exit_2_naming_the_key_and_the_value():
    out = run("jobs.score", "--config", "conf/score.yaml", "input.ds=2026-13-03")
    assert out.returncode == 2 and "this is a bug" not in out.stderr
    errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "input.ds" in errors[0] and "2026-13-03" in errors[0], out.stderr


def test_an_argument_error_is_one_line_with_the_usage_once():
    out = run("jobs.score", "--config", "conf/score.yaml", "--bogus")
    assert out.returncode == 2
    errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "--bogus" in errors[0] and errors[0].count("usage:") == 1, out.stderr
    assert last_json(out.stdout)["exit_code"] == 2


def test_validate_logs_json_lines_and_progress_unless_told_not_to(lake, demo_root):
    common = ["jobs.validate", "--config", "conf/validate.yaml", f"lake.root={lake}",
              f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts"]
    out = run(*common, "--log-format", "json")
    assert out.returncode == 0, out.stderr[-2000:]
    summary = last_json(out.stdout)
    records = [json.loads(ln) for ln in out.stderr.splitlines() if ln.startswith("{")]
    ours = [r for r in records if r["logger"] == "lakescore"]
    assert ours and all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    assert not [ln for ln in out.stderr.splitlines() if " lakescore: " in ln]  # no text-format line of ours
    assert any(r["msg"].startswith("config ") for r in ours)
    assert {r.get("run_id") for r in ours if r["msg"].startswith("progress:")} == {summary["run_id"]}
    final = [r["msg"] for r in ours if r["msg"].startswith("progress:")][-1]
    assert final.startswith("progress: ") and f", {DAYS * ROWS:,} rows, " in final and "(done in " in final
    done, planned = final.split()[1].split("/")
    assert done == planned and int(planned) >= DAYS
    quiet = run(*common, "--no-progress")
    assert quiet.returncode == 0 and "progress:" not in quiet.stderr and " INFO lakescore: config " in quiet.stderr


def test_score_job_process_end_to_end_then_noop(lake, demo_root):
    common = ["jobs.score", "--config", "conf/score.yaml", f"lake.root={lake}",
              f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db", f"mlflow.artifact_root={demo_root}/mlartifacts",
              f"model.uri=models:/{XGB}@champion"]  # run from the repo root as users do: every store pinned outside it
    first = run(*common)
    assert first.returncode == 0, first.stderr[-2000:]
    s = last_json(first.stdout)
    assert s["rows_in"] == s["rows_out"] == DAYS * ROWS and s["input_version"] == DAYS - 1
    again = run(*common)
    s2 = last_json(again.stdout)
    assert again.returncode == 0 and s2["units_skipped"] == DAYS and s2["rows_out"] == 0
    missing = run(*common, "input.table=nope")
    assert missing.returncode == 5 and "nope" in missing.stderr


def test_submit_pins_every_relative_mlflow_location(tmp_path):
    import shlex

    from engine.config import ScoreConfig, load_config, relative_paths
    from jobs.submit import build_entrypoint

    conf = tmp_path / "score.yaml"
    conf.write_text("model:\n  uri: models:/m@champion\n")
    overrides = ["lake.root=lake", "mlflow.tracking_uri=sqlite:///track.db", "mlflow.registry_uri=sqlite:///reg.db"]
    entry, _ = build_entrypoint("score", str(conf), overrides, [], str(tmp_path))
    args = shlex.split(entry)
    keys = [a for a in args[args.index("--config") + 2:] if "=" in a]
    # What the job sees in Ray's uploaded copy (another directory): the last value of each key wins.
    cfg = load_config(ScoreConfig, str(conf), keys)
    assert relative_paths(cfg) == []
    assert cfg.mlflow.registry_uri == f"sqlite:///{tmp_path}/reg.db"
    assert cfg.mlflow.tracking_uri == f"sqlite:///{tmp_path}/track.db" and cfg.lake.root == str(tmp_path / "lake")
    assert "mlflow.registry_uri" in relative_paths(load_config(ScoreConfig, str(conf), overrides))


def test_submit_loads_configs_without_pyarrow():
    """`lakescore submit` runs on the scheduler's machine before every Ray job: what it imports to check the config is
    on each job's critical path. Broken build: engine.config importing pyarrow again (through engine.lake.snapshot,
    for `is_url`: 0.35 s of the CLI's start on 2 cores)."""
    code = "import sys, jobs.submit; print(sorted(m for m in ('pyarrow', 'deltalake', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_submit_uploads_every_source_file_and_none_of_the_lake(tmp_path):
    """Ray matches upload excludes as .gitignore lines: a bare "lake" also dropped the package engine/lake, so every
    submitted job failed on the cluster with "No module named 'engine.lake'". Checked with Ray's own matcher over the
    repository's tracked files, and over the lake and MLflow outputs a run leaves in the project folder."""
    import subprocess

    from ray._private.runtime_env.packaging import _get_excludes

    from jobs.submit import build_entrypoint

    repo = Path(__file__).resolve().parents[1]
    _, excludes = build_entrypoint("score", str(repo / "conf" / "score.yaml"), ["lake.root=lake"], [], str(repo))
    excluded = _get_excludes(repo, excludes)
    tracked = subprocess.run(["git", "-C", str(repo), "ls-files", "*.py"], capture_output=True, text=True,
                             check=True).stdout.split()
    dropped = [f for f in tracked if any(excluded(repo / Path(*Path(f).parts[:i + 1]))
                                         for i in range(len(Path(f).parts)))]
    assert not dropped, f"source files left out of the upload: {dropped[:5]}"
    for output in ("lake", "lake/scores/part-0.parquet", "mlartifacts", "mlruns.db", "benchmarks/out"):
        assert excluded(repo / output), f"{output} would be uploaded"


RESOLUTION_CASES = [
    ("score", f"model.uri=models:/{XGB}/99", 5, "model.uri"),
    ("score", "model.uri=models:/nope@champion", 5, "model.uri"),
    ("score", "input.version=99", 5, "input.version"),
    ("score", "lake.root={tmp}/no-such-lake", 2, "lake.root"),
    # An unresolvable champion is a failed gate (DESIGN.md: exit 4 includes "an unreadable champion").
    ("evaluate", f"models.champion=models:/{XGB}/99", 4, "models.champion"),
    ("evaluate", "models.champion=models:/nope@champion", 4, "models.champion"),
    ("evaluate", f"models.challengers=[models:/{XGB}/99]", 5, "models.challengers"),
    ("evaluate", "scores.version=99", 5, "scores.version"),
    ("evaluate", "lake.root={tmp}/no-such-lake", 2, "lake.root"),
    ("backtest", f"baseline.model=models:/{XGB}/99", 5, "baseline.model"),
    ("backtest", "baseline.model=models:/nope@champion", 5, "baseline.model"),
    ("backtest", "features.version=99", 5, "features.version"),
    ("backtest", "lake.root={tmp}/no-such-lake", 2, "lake.root"),
    ("validate", "input.version=99", 5, "input.version"),
    ("validate", "lake.root={tmp}/no-such-lake", 2, "lake.root"),
]


def resolution_argv(job: str, lake, demo_root) -> list[str]:
    """`job`'s arguments on the test lake and registry (every store outside the repository)."""
    from test_contracts import CONTRACT
    from test_ledger import job_argv

    if job == "score":
        return job_argv(lake, demo_root)
    stores = [f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{demo_root}/mlruns.db",
              f"mlflow.artifact_root={demo_root}/mlartifacts"]
    own = {"evaluate": [f"models.champion=models:/{XGB}@champion", f"models.challengers=[models:/{MLP}/1]",
                        f"features.contract={CONTRACT}"],
           "backtest": [f"baseline.model=models:/{XGB}@champion", f"features.contract={CONTRACT}",
                        "folds.n_folds=1"],  # what fits the test lake's days
           "validate": [f"input.contract={CONTRACT}"]}[job]
    return ["--config", str(ROOT / "conf" / f"{job}.yaml"), *stores, *own]


@pytest.fixture(scope="module")
def silent_ray_address():
    """An address where no Ray answers (a port this test holds open and never serves): a job's `ray.init` to it
    does not finish (Ray keeps retrying for minutes), so whatever a job does after its engine's start never comes."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("job, override, code, setting", RESOLUTION_CASES)
def test_resolution_errors_do_not_wait_for_the_engine(silent_ray_address, lake, demo_root, tmp_path, job, override,
                                                      code, setting):
    """A missing model version or alias, input version or lake fails with its own exit code and one error line naming
    the setting, in every job, while the engine's start has not finished: the job joins a Ray at an address (as every
    `ray job submit` driver does, which starts the join beside the resolution, jobs.engines) where no Ray answers. A
    job that waits for its engine before it resolves, or whose exit waits for the engine's start, never gets there
    (the timeout fails it); one that reports the engine's failure instead has the wrong code and line."""
    import os

    if job == "evaluate" and setting == "scores.version":  # a scores table to pin: one day scored in process
        from engine.executor import LocalExecutor
        from jobs.score import run_score

        run_score(score_config(lake, demo_root, "input.ds=2026-01-04"), LocalExecutor())
    env = {**os.environ, "RAY_ADDRESS": silent_ray_address}
    out = subprocess.run([sys.executable, "-m", f"jobs.{job}", *resolution_argv(job, lake, demo_root),
                          override.format(tmp=tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=90, env=env)
    assert out.returncode == code, out.stderr[-3000:]
    assert "ray: connected" not in out.stderr and "ray.init" not in out.stderr, out.stderr[-3000:]
    errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and setting in errors[0], out.stderr[-3000:]
    if setting == "lake.root":
        assert ".table" not in errors[0] and "no-such-lake" in errors[0]
    if setting.startswith("models.") or setting == "baseline.model":
        assert "model.uri" not in errors[0]  # the setting this job has, not the score job's
    assert last_json(out.stdout)["exit_code"] == code


def test_a_local_ray_starts_only_after_the_resolution(lake, demo_root, monkeypatch):
    """With no address (no ray.address, no RAY_ADDRESS) a job would start a Ray of its own, whose GCS and raylet
    would outlive an exit half-way through its start: its executor starts nothing when made (the engine waits for the
    job's first call into it, after the resolution); given an address, the same job's engine would start at once.
    A make_executor that starts every Ray beside the resolution, or none, fails here."""
    from engine.ray import session
    from jobs import engines

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(session, "prepare_background_connect", lambda: None)  # keeps this process's SIGTERM handler
    monkeypatch.setattr(engines.LazyExecutor, "start", lambda self: starts.append(self))
    starts = []
    engines.make_executor(score_config(lake, demo_root), "score")
    assert starts == []
    engines.make_executor(score_config(lake, demo_root, "ray.address=127.0.0.1:1"), "score")
    assert len(starts) == 1


_SIGTERM_DURING_JOIN = """
import os, signal, sys, time, types
from jobs.engines import make_executor

make_executor(types.SimpleNamespace(engine="ray", ray=types.SimpleNamespace(address=sys.argv[1])), "score")
try:
    os.kill(os.getpid(), signal.SIGTERM)  # what `ray job stop` sends the driver, while its join has not finished
    time.sleep(60)
finally:
    print("unwound", flush=True)
"""


def test_sigterm_during_a_background_join_unwinds_the_job(silent_ray_address):
    """`ray job stop` SIGTERMs the driver, and Ray's handler (set by `ray.init` on the main thread only) turns that
    into SystemExit so the job's `finally` blocks run. A job that joins its Ray on a thread (jobs.engines) sets the
    same handler itself: SIGTERM while the join hangs ends the process with exit 15 after its `finally` ran. Without
    it the signal kills the process outright (-15, no "unwound")."""
    out = subprocess.run([sys.executable, "-c", _SIGTERM_DURING_JOIN, silent_ray_address], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert (out.returncode, out.stdout) == (15, "unwound\n"), out.stderr[-3000:]


def test_a_job_exits_with_its_code_while_ray_is_still_being_imported():
    """A job that fails while its engine's start thread is still importing Ray (jobs.engines joins a running Ray
    beside the resolution) ends with its own exit code: `exit_now` finds a `ray` module that has no
    `is_initialized` yet (what a partly imported module is) and exits all the same. An exit_now that asks that module
    unguarded ends with a traceback and exit 1 instead."""
    code = ("import sys, types; sys.modules['ray'] = types.ModuleType('ray')  # as mid-import: no attributes yet\n"
            "from jobs._main import exit_now; print('out'); exit_now(5)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (5, "out\n", "")


JOB_CONFIGS = {"score": "ScoreConfig", "validate": "ValidateConfig", "evaluate": "EvaluateConfig",
               "backtest": "BacktestConfig", "demo": "DemoConfig", "status": "ScoreConfig", "vacuum": "ScoreConfig",
               "forget": "ScoreConfig", "rollback": "ScoreConfig", "explain": "ScoreConfig",
               "relocate": "ScoreConfig"}


@pytest.mark.parametrize("job", sorted(JOB_CONFIGS))
def test_help_override_example_is_a_real_key_of_the_job(job, capsys):
    """The `key=value` example in each job's --help loads into that job's config (no unknown key)."""
    import importlib
    import re

    import engine.config as config
    from jobs.cli import COMMANDS

    with pytest.raises(SystemExit):
        importlib.import_module(COMMANDS[job].module).main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    example = re.search(r"dotted overrides, e\.g\. (\S+)", text).group(1)
    assert "=" in example
    config.load_config(getattr(config, JOB_CONFIGS[job]), str(ROOT / "conf" / f"{job}.yaml"
                       if (ROOT / "conf" / f"{job}.yaml").exists() else ROOT / "conf" / "score.yaml"), [example])
    if job == "status":
        assert not example.startswith("input.ds="), "status does not take input.ds"


@pytest.mark.parametrize("job, args", [("vacuum", ["--table", "features", "--retain-days", "30", "--dry-run"]),
                                       ("forget", ["--dry-run"]), ("rollback", ["--model", "nope"])])
def test_operator_commands_log_a_short_config_line(job, args, lake, demo_root, capsys):
    """vacuum, forget and rollback log the config's hash and the keys they use, not the whole resolved config."""
    import importlib

    from test_ledger import job_argv

    importlib.import_module(f"jobs.{job}").main([*job_argv(lake, demo_root), *args])
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if " config " in ln and "(hash " in ln]
    assert len(line) < 300 and f"lake.root={lake}" in line, line
    assert "passthrough_columns" not in line and "ray" not in line.split("(hash ", 1)[1], line


def test_submit_usage_matches_its_examples_without_a_double_dash():
    out = run("jobs.cli", "submit", "--help")
    assert out.returncode == 0, out.stderr
    assert " -- " not in out.stdout, out.stdout  # the examples pass the job straight after submit's own flags
    assert "lakescore submit score --config" in out.stdout


# Ray 2.60's warning on every new local cluster when RAY_AUTH_MODE is unset (ray._private.authentication.
# authentication_token_setup._warn_token_auth_enabled), printed on every job's stderr.
RAY_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"

_JOB_THEN_AUTH_MODE = """\
import json, sys
from jobs.validate import main
code = main(sys.argv[1:])
import ray
from ray._raylet import AuthenticationMode, get_authentication_mode
print(json.dumps({"job_exit": code, "ray_started": ray.is_initialized(),
                  "token_auth": get_authentication_mode() == AuthenticationMode.TOKEN}))
"""


def test_a_job_on_its_own_local_ray_keeps_token_auth_without_ray_s_notice(lake, tmp_path):
    """A job that starts its own local Ray (no ray.address, no RAY_ADDRESS, RAY_AUTH_MODE unset as in a user's shell)
    runs with Ray's token authentication on, and its stderr carries no "Token authentication is enabled … Set
    RAY_AUTH_MODE=disabled to opt out" notice. Whether auth is on is asked of Ray itself in the job's process, after
    the job: a job that silenced the notice by turning auth off (RAY_AUTH_MODE=disabled) fails here."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    out = subprocess.run([sys.executable, "-c", _JOB_THEN_AUTH_MODE, "--config", "conf/validate.yaml",
                          f"lake.root={lake}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlruns.db",
                          f"mlflow.artifact_root={tmp_path}/mlartifacts", "input.ds=2026-01-01", "--no-progress"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    after = last_json(out.stdout)
    assert after == {"job_exit": 0, "ray_started": True, "token_auth": True}, out.stderr[-3000:]
    assert "ray: connected" in out.stderr  # the job did start its own Ray
    assert RAY_AUTH_NOTICE not in out.stderr and "RAY_AUTH_MODE" not in out.stderr, out.stderr
