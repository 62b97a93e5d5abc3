"""Progress of long work: units done of planned and rows/s.

On a terminal (stderr is a TTY) a one-line bar redrawn in place; otherwise a log line through the `lakescore`
logger at most every `interval_s` and a final one:

    progress: 3/10 units, 1,234,567 rows, 210,000 rows/s

`configure(enabled, interval_s)` sets the process-wide defaults once (jobs do it from `--no-progress`); a
`Progress` may override them (tests pass a fake clock and stream). Pure: no engine imports, no threads — the
caller's loop drives it through `advance`.
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Callable

log = logging.getLogger("lakescore")

_settings = {"enabled": True, "interval_s": 10.0}
BAR_WIDTH = 24
TTY_REDRAW_S = 0.2  # a terminal bar is redrawn at most this often (and at the end)


def configure(enabled: bool = True, interval_s: float = 10.0) -> None:
    """Process-wide defaults: whether progress shows at all, and how often a non-terminal line is logged."""
    if interval_s < 0:
        raise ValueError(f"interval_s must be >= 0, got {interval_s}")
    _settings.update(enabled=bool(enabled), interval_s=float(interval_s))


def enabled() -> bool:
    return bool(_settings["enabled"])


class Progress:
    """Counts `what` (units, chunks, tasks, folds) done of `total_units`, and rows; `close()` shows the last state."""

    def __init__(self, total_units: int, what: str = "units", *, enabled: bool | None = None,
                 interval_s: float | None = None, clock: Callable[[], float] = time.monotonic, stream=None):
        self.total, self.what = int(total_units), what
        self.units = self.rows = 0
        self.enabled = _settings["enabled"] if enabled is None else enabled
        self.interval_s = _settings["interval_s"] if interval_s is None else interval_s
        self._clock = clock
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._start = self._last = clock()
        self._closed = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def advance(self, units: int = 1, rows: int = 0) -> None:
        self.units += units
        self.rows += rows
        if not self.enabled or self._closed:
            return
        now = self._clock()
        if now - self._last >= (TTY_REDRAW_S if self._tty else self.interval_s):
            self._last = now
            self._show(now)

    def close(self) -> None:
        """Show the final state once (nothing when disabled or when nothing was planned)."""
        if self._closed:
            return
        self._closed = True
        if self.enabled and self.total > 0:
            self._show(self._clock(), final=True)

    def line(self, now: float | None = None) -> str:
        """`3/10 units, 1,234,567 rows, 210,000 rows/s` (the rows only once some were counted)."""
        text = f"{self.units}/{self.total} {self.what}"
        if self.rows:
            elapsed = max((self._clock() if now is None else now) - self._start, 1e-9)
            text += f", {self.rows:,} rows, {self.rows / elapsed:,.0f} rows/s"
        return text

    def _show(self, now: float, final: bool = False) -> None:
        if not self._tty:
            log.info("progress: %s%s", self.line(now), f" (done in {now - self._start:.1f}s)" if final else "")
            return
        filled = BAR_WIDTH * min(self.units, self.total) // max(self.total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        # The cursor goes back to the line's start, so a log line printed meanwhile writes over the bar, which the
        # next draw puts back below it.
        self._stream.write(f"\x1b[2K[{bar}] {self.line(now)}" + ("\n" if final else "\r"))
        self._stream.flush()
