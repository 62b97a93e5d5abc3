"""The `lakescore` console script: `lakescore <job> --config conf/<job>.yaml [key=value …]` and `lakescore submit …`."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {"demo": "jobs.demo", "score": "jobs.score", "validate": "jobs.validate", "evaluate": "jobs.evaluate",
            "backtest": "jobs.backtest", "submit": "jobs.submit"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        known = ", ".join(sorted(COMMANDS))
        msg = f"usage: lakescore <command> [args]; commands: {known}"
        if argv and argv[0] not in ("-h", "--help"):
            print(f"lakescore: error: unknown command {argv[0]!r}; {msg}", file=sys.stderr)
            return 2
        print(msg)
        return 0
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
