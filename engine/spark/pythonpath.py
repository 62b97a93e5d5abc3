"""PySpark from the installed package, not from spark-submit's source zips.

spark-submit (and an executor, for its Python daemon) puts `$SPARK_HOME/python/lib/pyspark.zip` and `py4j-*.zip`
at the head of PYTHONPATH. Python imports from a zip without a bytecode cache: it compiles every PySpark module from
source in every process, 1.1 s of CPU for `pyspark.daemon` and `pyspark.worker` on this project's machine (0.5 s from
the installed package), paid by the job's driver and by each executor's daemon while the job starts. With pip's
pyspark, SPARK_HOME is the installed package itself, so the zips hold the same files as the package beside them:
`prefer_installed_pyspark()` then moves them behind it on `sys.path`. Zips from another Spark (a SPARK_HOME that is
not this interpreter's pyspark) are left first, as spark-submit put them: their version is the one that must run.

Imports nothing of the project: the executors' daemon (engine.spark.daemon) runs it before anything else.
"""
from __future__ import annotations

import importlib.machinery
import os
import sys


def prefer_installed_pyspark() -> bool:
    """Move spark-submit's pyspark/py4j zips behind the installed pyspark they came from; True if it moved them.
    A no-op once pyspark is imported (the process keeps what it has) or when the zips belong to another Spark."""
    if "pyspark" in sys.modules:
        return False
    zips = [p for p in sys.path if p.endswith(".zip") and os.path.basename(p).startswith(("pyspark", "py4j"))]
    if not zips:
        return False
    rest = [p for p in sys.path if p not in zips]
    spec = importlib.machinery.PathFinder.find_spec("pyspark", rest)
    if spec is None or not spec.origin:
        return False
    home = os.path.realpath(os.path.dirname(spec.origin))  # …/site-packages/pyspark, pip's SPARK_HOME
    if not all(os.path.realpath(z).startswith(home + os.sep) for z in zips):
        return False
    sys.path[:] = rest + zips
    return True
