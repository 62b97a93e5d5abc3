"""spark-submit puts `pyspark.zip` and `py4j-*.zip` first on the Python path, and Python compiles every module it
imports from a zip, in every process (engine.spark.pythonpath). Each case runs a fresh interpreter with the path
spark-submit gives it and says where `pyspark` and `py4j` came from.

The broken builds these catch: the zips left first (the driver and each executor's daemon compile PySpark again on
every start), and the zips of another Spark moved behind this interpreter's pyspark (a version other than the one
spark-submit runs).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyspark

ROOT = Path(__file__).resolve().parent.parent
LIB = Path(pyspark.__file__).parent / "python" / "lib"  # pip's SPARK_HOME/python/lib


def _origins(lib: Path, prefer: bool) -> dict:
    zips = sorted(str(p) for p in lib.glob("*.zip"))
    code = ("import json, sys\n"
            "from engine.spark.pythonpath import prefer_installed_pyspark\n"
            f"moved = prefer_installed_pyspark() if {prefer} else None\n"
            "import pyspark, py4j\n"
            "print(json.dumps({'moved': moved, 'pyspark': pyspark.__file__, 'py4j': py4j.__file__}))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*zips, str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_spark_submits_zips_of_this_pyspark_give_way_to_the_installed_package():
    assert len(list(LIB.glob("*.zip"))) == 2, "pip's pyspark ships pyspark.zip and py4j's zip"
    as_given = _origins(LIB, prefer=False)
    assert ".zip" in as_given["pyspark"] and ".zip" in as_given["py4j"]  # what spark-submit's path gives
    preferred = _origins(LIB, prefer=True)
    assert preferred["moved"] is True
    assert preferred["pyspark"] == pyspark.__file__ and ".zip" not in preferred["py4j"]


def test_the_zips_of_another_spark_stay_first(tmp_path):
    other = tmp_path / "spark-home" / "python" / "lib"
    other.mkdir(parents=True)
    for z in LIB.glob("*.zip"):
        shutil.copy(z, other / z.name)
    got = _origins(other, prefer=True)
    assert got["moved"] is False
    assert got["pyspark"].startswith(str(other)) and got["py4j"].startswith(str(other))
