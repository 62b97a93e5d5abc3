"""The run ledger: the `runs` Delta table, one row per job run, failed runs included (DESIGN.md: Tables).

Each row says what ran (job, run id, engine, config and its hash, code revision), on what (input tables and the
versions pinned, model name and version), what came of it (units planned / skipped / committed / failed, rows in /
scored / quarantined, one outcome per unit), how long each phase took, per-batch scoring latency, and how it ended
(status, exit code, error class and its one-line message, PII-free like every message).

The table is partitioned by `job` and `date` (the run's UTC start day). A run's row is appended once: its commit
carries the application transaction `lakescore/runs/<run_id>`, so writing the same run twice is a no-op, and the
run's stamps as `userMetadata` like every lakescore commit. Appends of concurrent runs never conflict.

Running rows (the protection `vacuum` reads, DESIGN: Operator commands): a job that pins input versions appends a
second kind of row as soon as it has pinned them and before it reads any data: status `running`, the same run id,
its inputs and versions, and its lease in `summary` (`{"lease_until": …}`), under its own application transaction
`lakescore/runs/<run_id>#start`, distinct from the final row's, so neither write masks the other. We chose a
running row with a lease over a heartbeat: the lease ends at the run's start + `run.time_budget_s` +
LEASE_GRACE_S, past which the job has stopped itself (its executor gives up at the budget). A running row protects
while its run is live: no final row with its run id yet, and its lease not expired. A run killed without a final
row stops protecting when its lease ends; a run that outlived its own budget by more than the grace would too,
which is why the grace is generous. `read()` leaves running rows out unless asked (`running=True`), so `status`,
`explain` and every other reader see finished runs only, as before.

Pins follow the lake: each input's `uri` is recorded relative to `lake.root` when the table lies inside the lake
(`features`), and absolute (a path or URL) only for a table outside it, so a project folder that is moved or copied
keeps its pins. Rows written before that hold absolute URIs; `pinned_versions` matches such a URI by its path
relative to the lake root recorded in the same row (its `config`), and where that root cannot be read, by the
table's name. We chose to fail closed: a doubtful match counts as a pin, since a version kept too long costs disk
while a version vacuumed too early cannot be read again.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import subprocess
from pathlib import Path

import pyarrow as pa

from engine.lake.paths import is_url, table_uri
from engine.config.sections import LakeConfig

log = logging.getLogger("lakescore")

TABLE = "runs"
PARTITION_COLUMNS = ["job", "date"]
RUNNING = "running"
LEASE_GRACE_S = 3600  # past its time budget, a run still publishes (reports, MLflow): its pins stay protected
PHASES = ("resolve", "plan", "read", "contract", "score", "write", "commit")
_INPUT = pa.struct([("role", pa.string()), ("table", pa.string()), ("uri", pa.string()), ("version", pa.int64())])
_OUTCOME = pa.struct([("unit", pa.string()), ("outcome", pa.string()), ("rows_in", pa.int64()),
                      ("rows_out", pa.int64()), ("input_version", pa.int64()), ("message", pa.string())])
FIELDS = [
    pa.field("run_id", pa.string()),
    pa.field("status", pa.string()),  # ok | error | running (written at start; see the module docstring)
    pa.field("exit_code", pa.int32()),
    pa.field("error_class", pa.string()),
    pa.field("error", pa.string()),
    pa.field("engine", pa.string()),
    pa.field("started_at", pa.timestamp("us", tz="UTC")),
    pa.field("finished_at", pa.timestamp("us", tz="UTC")),
    pa.field("duration_s", pa.float64()),
    pa.field("config_hash", pa.string()),
    pa.field("config", pa.string()),  # the resolved config as JSON (credentials never live in it: config.py)
    pa.field("command", pa.string()),  # the job's arguments, e.g. "score --config conf/score.yaml input.ds=…"
    pa.field("code_version", pa.string()),
    pa.field("code_commit", pa.string()),
    pa.field("inputs", pa.list_(_INPUT)),
    pa.field("model_name", pa.string()),
    pa.field("model_version", pa.int64()),
    pa.field("models", pa.list_(pa.string())),
    pa.field("output_table", pa.string()),
    pa.field("units_planned", pa.int64()),
    pa.field("units_skipped", pa.int64()),
    pa.field("units_committed", pa.int64()),
    pa.field("units_failed", pa.int64()),
    pa.field("rows_in", pa.int64()),
    pa.field("rows_scored", pa.int64()),
    pa.field("rows_quarantined", pa.int64()),
    *[pa.field(f"{p}_s", pa.float64()) for p in PHASES],
    pa.field("latency_p50_ms", pa.float64()),
    pa.field("latency_p95_ms", pa.float64()),
    pa.field("latency_p99_ms", pa.float64()),
    pa.field("rows_per_s", pa.float64()),
    pa.field("unit_outcomes", pa.list_(_OUTCOME)),
    pa.field("nodes", pa.list_(pa.string())),
    pa.field("summary", pa.string()),  # the run's JSON summary line, whole
]
SCHEMA = pa.schema([*FIELDS, pa.field("job", pa.string()), pa.field("date", pa.string())])


@functools.lru_cache(maxsize=1)
def code_revision() -> tuple[str, str | None]:
    """(package version, git commit or None): the version of the source tree that runs (its pyproject.toml; the
    installed metadata only without one: `make` installs no copy of the package, see the Makefile), the commit from
    LAKESCORE_CODE_COMMIT (set by `lakescore submit`, whose upload has no .git) or from git in the source tree."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parents[2]  # the source tree: engine/tables/ledger.py → the repository
    try:
        pkg = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    except (OSError, ValueError, KeyError):
        try:
            pkg = version("lakescore")
        except PackageNotFoundError:
            pkg = "unknown"
    commit = os.environ.get("LAKESCORE_CODE_COMMIT") or None
    if commit is None and (root / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                 timeout=5)
            commit = out.stdout.strip() or None
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            if commit and dirty:
                commit += "+dirty"
        except (OSError, subprocess.SubprocessError):
            commit = None
    return pkg, commit


def _count(v) -> int | None:
    if v is None:
        return None
    return len(v) if isinstance(v, (list, tuple, dict)) else int(v)


def inputs_of(cfg, summary: dict) -> list[dict]:
    """The input tables the run read and the versions it pinned (None where it failed before pinning)."""
    found = []
    if getattr(cfg, "input", None) is not None and hasattr(cfg.input, "table"):
        found.append(("input", cfg.input.table, summary.get("input_version")))
    versions = summary.get("versions") or {}
    for role in ("scores", "labels", "features"):
        ref = getattr(cfg, role, None)
        if ref is not None and hasattr(ref, "table"):
            found.append((role, ref.table, versions.get(role)))
    for extra in summary.get("pins") or []:  # further versions the run read (a backtest's per-fold features)
        found.append((extra["role"], extra["table"], extra["version"]))
    return [{"role": role, "table": t, "uri": recorded_uri(cfg.lake, t), "version": None if v is None else int(v)}
            for role, t, v in found]


def _inside(uri: str, root: str) -> str | None:
    """`uri`'s path relative to `root` when it lies inside it, else None."""
    uri, root = uri.rstrip("/"), root.rstrip("/")
    return uri[len(root) + 1:] if root and uri.startswith(root + "/") else None


def _relative(uri: str) -> bool:
    return bool(uri) and not is_url(uri) and not os.path.isabs(uri)


def recorded_uri(lake: LakeConfig, table: str) -> str:
    """Where the ledger says a table is: relative to lake.root inside the lake (so pins move with it), else absolute."""
    uri = table_uri(lake, table)
    return _inside(uri, lake.root) or uri


def row(job: str, cfg, summary: dict, started: dt.datetime, finished: dt.datetime, command: str,
        error_class: str | None = None) -> dict:
    """The ledger row of a finished run, from its config and its summary line."""
    pkg, commit = code_revision()
    phases = summary.get("phases") or {}
    latency = summary.get("latency_ms") or {}
    model_name, model_version = summary.get("model") or None, summary.get("model_version")
    models = list(summary.get("models") or ([f"{model_name}/{model_version}"] if model_name else []))
    committed = summary.get("units_committed", summary.get("units_passed", summary.get("folds_committed")))
    failed = summary.get("units_failed", summary.get("folds_failed"))
    skipped = summary.get("units_skipped", summary.get("folds_resumed"))
    planned = summary.get("units_planned", summary.get("folds"))
    return {
        "run_id": summary.get("run_id"),
        "status": summary.get("status", "error"),
        "exit_code": int(summary.get("exit_code", 1)),
        "error_class": error_class,
        "error": summary.get("error"),
        "engine": getattr(cfg, "engine", None),
        "started_at": started,
        "finished_at": finished,
        "duration_s": round((finished - started).total_seconds(), 3),
        "config_hash": summary.get("config_hash"),
        "config": cfg.model_dump_json(),
        "command": command,
        "code_version": pkg,
        "code_commit": commit,
        "inputs": inputs_of(cfg, summary),
        "model_name": model_name,
        "model_version": None if model_version is None else int(model_version),
        "models": models,
        "output_table": summary.get("output_table") or _output_table(cfg),
        "units_planned": _count(planned),
        "units_skipped": _count(skipped),
        "units_committed": _count(committed),
        "units_failed": _count(failed),
        "rows_in": summary.get("rows_in", summary.get("rows", summary.get("rows_evaluated"))),
        "rows_scored": summary.get("rows_out"),
        "rows_quarantined": summary.get("rows_quarantined"),
        **{f"{p}_s": phases.get(p) for p in PHASES},
        "latency_p50_ms": latency.get("p50"),
        "latency_p95_ms": latency.get("p95"),
        "latency_p99_ms": latency.get("p99"),
        "rows_per_s": summary.get("rows_per_s"),
        "unit_outcomes": [{k: o.get(k) for k in _OUTCOME.names} for o in summary.get("outcomes") or []],
        "nodes": sorted(summary.get("nodes") or []),
        "summary": json.dumps(summary, sort_keys=True, default=str),
        "job": job,
        "date": started.astimezone(dt.timezone.utc).strftime("%Y-%m-%d"),
    }


def _output_table(cfg) -> str | None:
    out = getattr(cfg, "output", None)
    if out is not None and hasattr(out, "table"):
        return out.table
    return getattr(cfg, "output_table", None)


def ledger_uri(lake: LakeConfig) -> str:
    return table_uri(lake, TABLE)


def writable(lake: LakeConfig) -> bool:
    """A local lake root that does not exist is a typo more often than a new lake: the ledger never creates it."""
    return is_url(lake.root) or os.path.isdir(lake.root)


def append(lake: LakeConfig, entry: dict) -> bool:
    """Append one run's row (final or running); False if it is already in the ledger (a repeated write is a no-op)."""
    from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
    from deltalake.exceptions import TableNotFoundError

    from engine.lake.commit import open_or_create

    uri, opts = ledger_uri(lake), lake.storage_options or None
    app = f"lakescore/{TABLE}/{entry['run_id']}" + ("#start" if entry["status"] == RUNNING else "")
    try:
        if DeltaTable(uri, storage_options=opts).transaction_version(app) is not None:
            return False
    except TableNotFoundError:
        pass
    open_or_create(uri, SCHEMA, PARTITION_COLUMNS, opts)
    data = pa.Table.from_pylist([entry], schema=SCHEMA)
    meta = {"app_id": app, "run_id": entry["run_id"], "job": entry["job"], "status": entry["status"],
            "config_hash": entry["config_hash"]}
    props = CommitProperties(custom_metadata={"userMetadata": json.dumps(meta, sort_keys=True)},
                             app_transactions=[Transaction(app, 1)], max_commit_retries=20)
    write_deltalake(uri, data, mode="append", partition_by=PARTITION_COLUMNS, storage_options=opts,
                    commit_properties=props)
    return True


def read(lake: LakeConfig, job: str | None = None, since: str | None = None, running: bool = False) -> pa.Table:
    """The ledger's rows (optionally one job's, from day `since` on), oldest first; empty if there is none yet.

    Finished runs only, unless `running`: then the running rows written at start come too."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(ledger_uri(lake), storage_options=lake.storage_options or None)
    except TableNotFoundError:
        return SCHEMA.empty_table()
    filters = []
    if job:
        filters.append(("job", "=", job))
    if since:
        filters.append(("date", ">=", since))
    data = table.to_pyarrow_table(filters=filters or None)
    if not running:
        import pyarrow.compute as pc

        data = data.filter(pc.fill_null(pc.not_equal(data.column("status"), RUNNING), True))
    return data.sort_by([("started_at", "ascending"), ("run_id", "ascending")])


def start_row(job: str, cfg, run_id: str, inputs: list[tuple[str, str, int]], started: dt.datetime) -> dict:
    """The running row of a run that pinned `inputs` ((role, table, version) each) and has not ended yet."""
    from engine.config.load import config_hash

    pkg, commit = code_revision()
    run = getattr(cfg, "run", None)
    lease = started + dt.timedelta(seconds=getattr(run, "time_budget_s", 6 * 3600) + LEASE_GRACE_S)
    entry: dict = {f.name: None for f in SCHEMA}
    entry.update(
        run_id=run_id, status=RUNNING, engine=getattr(cfg, "engine", None), started_at=started,
        config_hash=config_hash(cfg), config=cfg.model_dump_json(), code_version=pkg, code_commit=commit,
        inputs=[{"role": role, "table": t, "uri": recorded_uri(cfg.lake, t), "version": int(v)} for role, t, v in inputs],
        output_table=_output_table(cfg), job=job, date=started.astimezone(dt.timezone.utc).strftime("%Y-%m-%d"),
        summary=json.dumps({"run_id": run_id, "status": RUNNING, "lease_until": lease.isoformat()}, sort_keys=True))
    return entry


def record_start(lake: LakeConfig, job: str, cfg, run_id: str, inputs: list[tuple[str, str, int]],
                 started: dt.datetime | None = None) -> bool:
    """Append the run's running row once it pinned `inputs` and before it reads them, so that `vacuum` keeps those
    versions while it runs. A ledger that cannot be written is a warning, as for the final row: the run goes on,
    and the warning says that a vacuum cannot see its pins. True when the row was written."""
    started = started or dt.datetime.now(dt.timezone.utc)
    if not writable(lake):
        log.warning("run ledger not written: lake.root %s does not exist", lake.root)
        return False
    try:
        return append(lake, start_row(job, cfg, run_id, inputs, started))
    except Exception as e:  # noqa: BLE001 - like the final row: the ledger must not fail the run
        log.warning("running row of run %s not written to %s (%s: %s): a vacuum now cannot see the versions it "
                    "pinned", run_id, ledger_uri(lake), type(e).__name__, " ".join(str(e).split())[:200])
        return False


def running_runs(lake: LakeConfig, now: dt.datetime | None = None) -> list[dict]:
    """The runs still running: a running row, no final row with its run id, and a lease not yet expired.

    Each: run_id, job, started_at, lease_until, inputs, lake_root (the lake.root it ran with); oldest first."""
    now = now or dt.datetime.now(dt.timezone.utc)
    rows = read(lake, running=True).select(["run_id", "job", "status", "started_at", "inputs", "summary",
                                            "config"]).to_pylist()
    ended = {r["run_id"] for r in rows if r["status"] != RUNNING}
    live = []
    for r in rows:
        if r["status"] != RUNNING or r["run_id"] in ended:
            continue
        until = json.loads(r["summary"] or "{}").get("lease_until")
        lease = dt.datetime.fromisoformat(until) if until else None  # a row without a lease protects nothing
        if lease is not None and lease > now:
            live.append({**{k: r[k] for k in ("run_id", "job", "started_at", "inputs")}, "lease_until": lease,
                         "lake_root": _lake_root(r["config"])})
    return live


def _lake_root(config: str | None) -> str | None:
    """The lake.root a ledger row's run used (its config JSON), or None where the row does not say."""
    try:
        root = json.loads(config or "")["lake"]["root"]
    except (ValueError, TypeError, KeyError):
        return None
    return root if isinstance(root, str) and root else None


def _same_table(recorded: str, root_then: str | None, uri: str, inside: str | None) -> bool:
    """Whether an input the ledger recorded as `recorded` (by a run whose lake.root was `root_then`) is the table at
    `uri` (`inside`: its path relative to today's lake.root, None outside the lake). See the module docstring."""
    if _relative(recorded):  # recorded relative to the lake: the same path inside today's lake
        return inside is not None and recorded.rstrip("/") == inside
    if recorded.rstrip("/") == uri.rstrip("/"):
        return True
    if inside is None:  # a table outside the lake is known by its absolute location only
        return False
    if root_then is None:  # an old absolute row whose lake is unknown: the table's name decides, keeping when alike
        return recorded.rstrip("/").rsplit("/", 1)[-1] == inside.rsplit("/", 1)[-1]
    return _inside(recorded, root_then) == inside  # an old absolute row: its path inside the lake it ran on


def pinned_versions(lake: LakeConfig, uri: str, since: dt.datetime, now: dt.datetime | None = None
                    ) -> dict[int, list[str]]:
    """Versions of the table at `uri` that runs read as input: version → run ids. Finished runs count when they
    started at or after `since`; running runs (`running_runs`) count whenever they started. A run's inputs match
    the table by their place in the lake, wherever the lake was then (see the module docstring)."""
    runs = read(lake, since=since.astimezone(dt.timezone.utc).strftime("%Y-%m-%d"))
    found = [{**r, "lake_root": _lake_root(r.pop("config"))}
             for r in runs.select(["run_id", "started_at", "inputs", "config"]).to_pylist() if r["started_at"] >= since]
    pins: dict[int, list[str]] = {}
    inside = _inside(uri, lake.root)
    for r in [*found, *running_runs(lake, now)]:
        for i in r["inputs"] or []:
            if i["version"] is not None and _same_table(i["uri"] or i["table"] or "", r["lake_root"], uri, inside):
                pins.setdefault(int(i["version"]), [])
                if r["run_id"] not in pins[int(i["version"])]:
                    pins[int(i["version"])].append(r["run_id"])
    return pins
