"""Log output of a job process: human-readable lines (default) or JSON lines, on stderr.

`configure_logging("text" | "json")` sets up the `lakescore` logger (and, for JSON, Python's root logger, so that
libraries' log records come out as JSON too; libraries that print or keep their own handlers, such as Ray's
driver messages, still write plain lines). `set_run_id(run_id)` stamps every later record with the run's id once
a job knows it. The JSON summary line on stdout is not a log line and is not affected.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import Literal

LogFormat = Literal["text", "json"]
FORMATS: tuple[str, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s lakescore: %(message)s"

_state: dict[str, str | None] = {"run_id": None, "format": "text"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC, ISO 8601), level, logger, msg, run_id (once known), exc (a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if _state["run_id"]:
            out["run_id"] = _state["run_id"]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever `sys.stderr` is when a record comes (as logging's own last-resort handler), not
    the stream it was at configuration: a job run under a replaced stderr (pytest's capture, a notebook) must not
    leave the logger writing to that stream once it is closed."""

    def __init__(self):
        super().__init__(None)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(fmt: LogFormat = "text", stream=None) -> None:
    """Send the `lakescore` logger's records (INFO and up) to `stream` (default stderr) in `fmt`."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}; known: {', '.join(FORMATS)}")
    _state["format"] = fmt
    handler = logging.StreamHandler(stream) if stream is not None else _Stderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    ours = logging.getLogger("lakescore")
    ours.handlers[:] = [handler]
    ours.setLevel(logging.INFO)
    ours.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h.formatter, JsonFormatter)]
    if fmt == "json":
        root.addHandler(handler)  # libraries' records (WARNING and up by default) as JSON lines too
        os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # MLflow's records through root, not its own lines


def log_format() -> str:
    """The format `configure_logging` set last ("text" until then)."""
    return _state["format"] or "text"


def set_run_id(run_id: str | None) -> None:
    """Stamp later JSON log records with `run_id` (None: stop)."""
    _state["run_id"] = run_id
