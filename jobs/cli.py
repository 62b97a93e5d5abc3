"""The `lakescore` console script: `lakescore <command> [args]`; `lakescore --help` lists the commands."""
from __future__ import annotations

import importlib
import sys
from typing import NamedTuple


class Command(NamedTuple):
    module: str  # a module with `main(argv) -> int`
    summary: str  # one line for `lakescore --help`
    example: str


COMMANDS: dict[str, Command] = {
    "demo": Command("jobs.demo", "build the demo lake and register the demo models (idempotent)",
                    "lakescore demo --config conf/demo.yaml"),
    "validate": Command("jobs.validate", "check a pinned table version's partitions against their contract",
                        "lakescore validate --config conf/validate.yaml input.ds=2026-01-05"),
    "score": Command("jobs.score", "score a pinned input snapshot into the scores table, once per partition",
                     "lakescore score --config conf/score.yaml input.ds=2026-01-05"),
    "evaluate": Command("jobs.evaluate", "sliced metrics with intervals and champion-challenger gates",
                        "lakescore evaluate --config conf/evaluate.yaml window=2026-01-04..2026-01-08"),
    "backtest": Command("jobs.backtest", "time-series backtest of a model recipe, fold by fold",
                        "lakescore backtest --config conf/backtest.yaml folds.n_folds=3"),
    "submit": Command("jobs.submit", "run a job on a Ray cluster and exit with the job's own code",
                      "lakescore submit --address http://head:8265 score --config conf/score.yaml"),
    "status": Command("jobs.status", "what is scored per day and model version: stale, unscored and failed days",
                      "lakescore status --table scores --since 2026-01-01"),
    "explain": Command("jobs.explain", "trace one output row to its model, input version, run and config",
                       "lakescore explain --table scores --where \"entity_id = 123 AND ds = '2026-01-05'\""),
    "rollback": Command("jobs.rollback", "move a model's serving alias back to its previous holder",
                        "lakescore rollback --model lakescore-demo-xgb"),
    "promote": Command("jobs.promote", "move a model's serving alias to a version by hand, with a reason (recorded)",
                       "lakescore promote --model lakescore-demo-xgb --to 2 --why \"signed off by risk\""),
    "models": Command("jobs.models", "a model's alias history, and which version held an alias at a time",
                      "lakescore models --history lakescore-demo-xgb --alias champion --at 2026-01-05T12:00:00Z"),
    "vacuum": Command("jobs.vacuum", "remove unreferenced files, keeping every version a recent run pinned",
                      "lakescore vacuum --table features --retain-days 7 --dry-run"),
    "relocate": Command("jobs.relocate", "point a moved or copied project's MLflow store at its own artifact folder",
                        "lakescore relocate --dry-run"),
    "forget": Command("jobs.forget", "remove rows whose key is gone from the input, from every model's partitions",
                      "lakescore forget --table scores"),
}


def help_text() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: lakescore <command> [args]", "", "commands:"]
    for name, c in COMMANDS.items():
        lines += [f"  {name:<{width}}  {c.summary}", f"  {'':<{width}}    {c.example}"]
    lines += ["", "`lakescore <command> --help` shows a command's options and more examples.",
              "Jobs also take --log-format json (one JSON object a log line) and --no-progress.",
              "Exit codes: 0 done, 1 bug or crash, 2 bad config or arguments, 3 data contract violated, "
              "4 gate failed, 5 input or model unavailable."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(help_text())
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"lakescore: error: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)} "
              "(lakescore --help describes them)", file=sys.stderr)
        return 2
    return importlib.import_module(command.module).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
