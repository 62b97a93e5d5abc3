"""What every job shares: arguments, config loading and path resolution, logging, exit codes, the summary line."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from typing import Callable

from engine import progress
from engine.config import Model, config_hash, load_config, relative_paths, resolve_paths, to_json
from engine.errors import ConfigError, LakescoreError
from engine.logs import FORMATS, configure_logging, log_format, set_run_id

log = logging.getLogger("lakescore")


def examples_epilog(*examples: str) -> str:
    """An argparse epilog listing `examples` (use with RawDescriptionHelpFormatter)."""
    return "examples:\n" + "\n".join(f"  {e}" for e in examples)


def add_output_flags(p: argparse.ArgumentParser) -> None:
    """The flags every lakescore command shares for its output: --log-format and --no-progress."""
    p.add_argument("--log-format", choices=FORMATS, default="text",
                   help="log lines on stderr: text (default) or json (one JSON object a line)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (terminal) or periodic progress line (logs)")


def apply_output_flags(args: argparse.Namespace) -> None:
    """Set up logging and progress from the flags `add_output_flags` added."""
    configure_logging(args.log_format)
    progress.configure(enabled=not args.no_progress)


def error_line(prog: str, message: str) -> None:
    """The one-line error on stderr (a JSON log record under --log-format json)."""
    if log_format() == "json":
        log.error("%s: error: %s", prog, message)
    else:
        print(f"{prog}: error: {message}", file=sys.stderr)


def _format_in(argv: list[str] | None) -> str:
    """The --log-format an argument list asks for (before it is parsed), else "text"."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for i, a in enumerate(argv):
        if a.startswith("--log-format="):
            value = a.split("=", 1)[1]
        elif a == "--log-format" and i + 1 < len(argv):
            value = argv[i + 1]
        else:
            continue
        if value in FORMATS:
            return value
    return "text"


def day_arg(value: str) -> str:
    """An argparse `type` for flags that take a day (`--since`): YYYY-MM-DD, else a one-line argument error."""
    import datetime as dt

    try:
        if dt.date.fromisoformat(value).isoformat() == value:
            return value
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{value!r} is not a date; use YYYY-MM-DD")


def override_example(examples: tuple[str, ...]) -> str:
    """The first `key=value` of the job's own examples (a key its config has), else lake.root, which every job has."""
    import shlex

    for e in examples:
        for token in shlex.split(e, comments=True):
            if "=" in token and not token.startswith("-"):
                return token
    return "lake.root=/data/lake"


class _ArgError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # exit 2 through our own path, with the one-line format
        raise _ArgError(message)


def run_job(job: str, doc: str, cls: type[Model], body: Callable, argv: list[str] | None,
            extra_args: Callable[[argparse.ArgumentParser], None] | None = None, examples: tuple[str, ...] = (),
            default_config: str | None = None, record: bool = True, config_keys: tuple[str, ...] = ()) -> int:
    """Parse, load, run `body(cfg, args) -> dict`, print one JSON summary line; return the exit code.

    Every run that got as far as a loaded config is appended to the run ledger (`runs`), unless `record` is False
    (read-only commands such as `lakescore status`). `default_config` makes `--config` optional. `config_keys`: the
    dotted keys an operator command uses; its config line shows only those (and the hash), not the whole config."""
    configure_logging(_format_in(argv))  # before parsing, so that an argument error comes out in that format too
    set_run_id(None)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no progress bars in batch logs
    p = _Parser(prog=f"lakescore {job}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog=examples_epilog(*examples) if examples else None)
    if default_config:
        p.add_argument("--config", default=default_config, help=f"YAML config (default {default_config})")
    else:
        p.add_argument("--config", required=True, help=f"YAML config, e.g. conf/{job}.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=f"dotted overrides, e.g. {override_example(examples)}")
    add_output_flags(p)
    if extra_args:
        extra_args(p)
    started = time.time()
    summary: dict = {"job": job, "status": "error"}
    cfg = None
    error_class = None
    try:
        try:
            args = p.parse_intermixed_args(argv)
        except _ArgError as e:
            raise ConfigError(f"{e}; {p.format_usage().strip()}") from None  # format_usage() starts with "usage:"
        apply_output_flags(args)
        cfg = load_config(cls, args.config, args.overrides)
        from engine.ray.session import in_submitted_job

        rel = relative_paths(cfg)
        if rel and in_submitted_job():
            raise ConfigError(
                f"{', '.join(rel)} is relative, but this job runs in Ray's uploaded copy of the working dir, where it "
                "would point inside that copy; pass absolute paths (e.g. lake.root=$PWD/lake) or use `lakescore submit`"
            )
        cfg = resolve_paths(cfg)
        summary["config_hash"] = config_hash(cfg)
        # Jobs log their resolved config; read-only commands for people (status, explain) keep quiet about it.
        log.log(logging.INFO if record else logging.DEBUG, "config %s (hash %s): %s", args.config,
                summary["config_hash"], _keys_line(cfg, config_keys) if config_keys else to_json(cfg))
        result = body(cfg, args)
        summary.update(_plain(result))
        summary["status"] = "ok"
        code = 0
    except LakescoreError as e:
        code = e.exit_code
        error_class = type(e).__name__
        partial = getattr(e, "summary", None)
        if partial is not None:
            summary.update(_plain(partial))
        summary.update(status="error", exit_code=code, error=str(e))
        error_line(f"lakescore {job}", str(e))
    except Exception as e:  # a bug: exit 1 with the traceback in the log, never a silent pass
        log.exception("unexpected failure")
        code = 1
        error_class = type(e).__name__
        summary.update(status="error", exit_code=1, error=f"unexpected {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
        error_line(f"lakescore {job}", f"unexpected {type(e).__name__}; see the log above; this is a bug")
    summary["elapsed_s"] = round(time.time() - started, 3)
    summary["exit_code"] = code
    if cfg is not None and record:
        _record_run(job, cfg, summary, started, argv, error_class)
    sys.stdout.flush()
    print(json.dumps(summary, sort_keys=True, default=str), flush=True)
    set_run_id(None)  # the run is over: later records in this process (tests run jobs in process) are not its
    return code


def _keys_line(cfg: Model, keys: tuple[str, ...]) -> str:
    """`key=value` for each dotted key of `cfg`, e.g. "lake.root=/data/lake input.table=features"."""
    values = []
    for key in keys:
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        values.append(f"{key}={value if isinstance(value, str) else json.dumps(value, default=str)}")
    return " ".join(values)


def _record_run(job: str, cfg: Model, summary: dict, started: float, argv: list[str] | None,
                error_class: str | None) -> None:
    """Append the run to the ledger (`runs`); a ledger that cannot be written is a warning, never a new exit code:
    the run's outputs are committed and its summary line still says what happened."""
    import datetime as dt
    import shlex
    import uuid

    from engine.tables import ledger

    summary.setdefault("run_id", uuid.uuid4().hex)
    if not ledger.writable(cfg.lake):
        log.warning("run ledger not written: lake.root %s does not exist", cfg.lake.root)
        return
    utc = dt.timezone.utc
    command = shlex.join([job, *(sys.argv[1:] if argv is None else argv)])
    try:
        entry = ledger.row(job, cfg, summary, dt.datetime.fromtimestamp(started, utc), dt.datetime.now(utc),
                           command, error_class)
        ledger.append(cfg.lake, entry)
    except Exception as e:  # noqa: BLE001 - the ledger must not turn a finished run into a failed one
        log.warning("run ledger not written to %s: %s: %s", ledger.ledger_uri(cfg.lake), type(e).__name__,
                    str(e).splitlines()[0][:200] if str(e) else "")


def exit_now(code: int) -> None:
    """End the job process at once with `code`, once its output is out.

    Interpreter teardown after a Ray job takes over a second (measured in benchmarks/), which a scheduler waits
    for on every run; nothing is left to do by then: the commits are durable and the summary is printed.
    """
    import logging as _logging
    import os

    ray = sys.modules.get("ray")  # never imported here just to ask (a Spark job would pay a second for it)
    try:
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    except Exception:  # noqa: BLE001 - Ray still being imported or joined on the engine's start thread (jobs.engines)
        pass  # the exit below ends that: the cluster sees the driver go either way
    _logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _plain(obj) -> dict:
    if hasattr(obj, "as_line"):  # a job's summary (engine.run.RunSummary): its line, not its working state
        return obj.as_line()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return dict(obj)
