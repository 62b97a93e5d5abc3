"""The import layering, checked by machine: every module of engine/, contracts/, backtests/, jobs/, benchmarks/ and
tests/ is parsed with `ast` (no import runs) and each `import x` / `from x import y`, at any depth (inside
functions too), is checked against the rules below. A broken rule fails naming file:line and the import.

Rules (issue 19):
- `engine` never imports `contracts`, `backtests` or `jobs` (those sit above it and wire it);
- `engine/spark` never imports `engine/ray`, nor the reverse (twins: what both need lives below both);
- only `tests` and `benchmarks` import `engine/testing` (the local cluster harness is not product code);
- `benchmarks` never imports `tests`;
- only `jobs`, `tests` and `benchmarks` import `engine/demo` (demo data and models: real backtests must not train
  with demo code; their recipes are backtests/recipes.py).
- engine's folders stack: the kernel (errors, logs, progress, latency, pii, drift and the executor seam) at the
  bottom; `engine/lake` (Delta I/O) imports only the kernel and, for type hints, `engine.config.sections`;
  `engine/models` only the kernel; `engine/tables` only the kernel, `engine/lake` and `engine/config`;
  nothing in engine imports `engine/ops` (operator commands sit on top, wired by jobs/); the two job cores
  `engine/score` and `engine/evaluation` do not import each other.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("engine", "contracts", "backtests", "jobs", "benchmarks", "tests")


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = REPO) -> list[tuple[int, str]]:
    """(line, absolute dotted module) of every import in `path`, relative `from . import x` resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            # `from engine import testing` names a module too: check each imported name as a submodule
            found += [(node.lineno, f"{mod}.{alias.name}") for alias in node.names]
    return found


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def broken_rule(importer: str, imported: str) -> str | None:
    if under(importer, "engine"):
        for upper in ("contracts", "backtests", "jobs"):
            if under(imported, upper):
                return f"engine imports {upper}"
    if under(importer, "engine.spark") and under(imported, "engine.ray"):
        return "engine/spark imports its twin engine/ray"
    if under(importer, "engine.ray") and under(imported, "engine.spark"):
        return "engine/ray imports its twin engine/spark"
    if under(imported, "engine.testing") and not any(under(importer, p) for p in ("engine.testing", "tests",
                                                                                   "benchmarks")):
        return "only tests and benchmarks import engine/testing"
    if under(importer, "benchmarks") and under(imported, "tests"):
        return "benchmarks imports tests"
    if under(imported, "engine.demo") and not any(under(importer, p) for p in ("engine.demo", "jobs", "tests",
                                                                                "benchmarks")):
        return "only jobs, tests and benchmarks import engine/demo"
    return _stack_rule(importer, imported)


KERNEL = ("engine.errors", "engine.logs", "engine.progress", "engine.latency", "engine.pii", "engine.drift",
          "engine.work", "engine.executor", "engine.run")
# folder → the only engine modules it may import (besides its own folder)
BELOW = {
    "engine.lake": (*KERNEL, "engine.config.sections"),
    "engine.models": KERNEL,
    "engine.tables": (*KERNEL, "engine.lake", "engine.config"),
}
CORES = ("engine.score", "engine.evaluation")


def _stack_rule(importer: str, imported: str) -> str | None:
    if not (under(importer, "engine") and under(imported, "engine")) or imported == "engine":
        return None
    for folder, allowed in BELOW.items():
        if under(importer, folder) and not under(imported, folder) and not any(under(imported, a) for a in allowed):
            return f"{folder} imports above its layer"
    if under(imported, "engine.ops") and not under(importer, "engine.ops"):
        return "engine imports engine/ops (operator commands sit on top)"
    for a, b in (CORES, CORES[::-1]):
        if under(importer, a) and under(imported, b):
            return f"job core {a} imports job core {b}"
    return None


def violations(root: Path = REPO) -> list[str]:
    out = []
    for top in SCANNED:
        for path in sorted((root / top).rglob("*.py")):
            importer = module_name(path, root)
            seen = set()
            for line, imported in imports(path, root):
                why = broken_rule(importer, imported)
                if why and (line, why) not in seen:
                    seen.add((line, why))
                    out.append(f"{path.relative_to(root)}:{line}: {importer} imports {imported} ({why})")
    return out


def test_rules_catch_each_kind_of_break():
    """The checker itself: each rule fires on a known break and stays quiet on allowed imports."""
    assert broken_rule("engine.ray.executor", "backtests.fold_run")
    assert broken_rule("engine.score.run", "contracts.check")
    assert broken_rule("engine.demo.models", "jobs.demo")
    assert broken_rule("engine.spark.standalone", "engine.ray.local_cluster.free_port")
    assert broken_rule("engine.ray.executor", "engine.spark.session")
    assert broken_rule("jobs.submit", "engine.testing.ray_cluster")
    assert broken_rule("engine.ray.executor", "engine.testing.processes")
    assert broken_rule("benchmarks.bench", "tests.conftest")
    assert broken_rule("backtests.fold_run", "engine.demo.models.train_xgb")
    assert broken_rule("engine.score.run", "engine.demo.data")
    assert broken_rule("engine.lake.commit", "engine.tables.ledger")
    assert broken_rule("engine.lake.snapshot", "engine.config.load")
    assert broken_rule("engine.models.registry", "engine.lake.snapshot")
    assert broken_rule("engine.tables.ledger", "engine.score.scoring")
    assert broken_rule("engine.score.run", "engine.ops.status")
    assert broken_rule("engine.evaluation.job", "engine.score.units")
    assert broken_rule("engine.score.units", "engine.evaluation.keys")
    assert not broken_rule("engine.lake.paths", "engine.config.sections")
    assert not broken_rule("engine.tables.ledger", "engine.lake.commit")
    assert not broken_rule("engine.ops.status", "engine.score.scoring")
    assert not broken_rule("engine.models.scorers", "engine.errors")
    assert not broken_rule("backtests.runner", "engine.executor")
    assert not broken_rule("tests.test_multinode", "engine.testing.ray_cluster")
    assert not broken_rule("benchmarks.bench", "engine.testing.spark_cluster")
    assert not broken_rule("engine.testing.spark_cluster", "engine.testing.processes")
    assert not broken_rule("jobs.backtest", "backtests.runner")
    assert not broken_rule("jobs.demo", "engine.demo.models")
    assert not broken_rule("benchmarks.workload", "engine.demo.data")


def test_imports_found_inside_functions_and_relative(tmp_path):
    pkg = tmp_path / "engine" / "spark"
    pkg.mkdir(parents=True)
    (tmp_path / "engine" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text("import os\n\n\ndef f():\n    from ..ray import session\n    import backtests.plan\n")
    for top in SCANNED:
        (tmp_path / top).mkdir(exist_ok=True)
    found = violations(tmp_path)
    assert found == ["engine/spark/x.py:5: engine.spark.x imports engine.ray.session "
                     "(engine/spark imports its twin engine/ray)",
                     "engine/spark/x.py:6: engine.spark.x imports backtests.plan (engine imports backtests)"]


def test_no_module_breaks_the_layering():
    found = violations()
    assert not found, "imports that break the layering:\n" + "\n".join(found)
