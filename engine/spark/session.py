"""A SparkSession with delta-spark loaded from local jars.

The jars are resolved from Maven Central once, at setup (`python -m engine.spark.jars`, run by
`make setup`), and handed to Spark here as plain files through `spark.jars`. We do not use
`spark.jars.packages` (what `configure_spark_with_delta_pip` does) at session time: that resolves
through Ivy on every JVM start, needs the network, and fails or stalls on air-gapped workers and in CI.
Under `spark-submit` the JVM is up before Python runs, so the jars must be on its command line
(`--jars "$(python -m engine.spark.jars --print-jars)"`); this module then adds none of its own.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from engine.spark.jars import jar_paths


def spark_session(app_name: str = "lakescore", master: str = "local[2]", extra_conf: dict | None = None):
    """Get or create the process's SparkSession, Delta-enabled; `extra_conf` overrides the defaults.

    JVM-level settings (jars, driver memory) only take effect when this call starts the JVM.
    """
    from pyspark.sql import SparkSession

    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Small by default (local runs, tests); a cluster job raises both through extra_conf. Delta rebuilds
        # each snapshot's state (every time-travel version) with `snapshotPartitions` tasks, 50 by default.
        "spark.sql.shuffle.partitions": "2",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "1g",
    }
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # we start the JVM (not spark-submit / the pyspark shell)
        conf["spark.jars"] = ",".join(jar_paths())
        # Python workers (mapInArrow) run this interpreter and import this project, not the system python3
        # (PySpark takes the workers' interpreter from PYSPARK_PYTHON when the context starts).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        conf["spark.executorEnv.PYTHONPATH"] = os.pathsep.join(
            p for p in [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")] if p)
    conf.update(extra_conf or {})
    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # under spark-submit, --master decides
        builder = builder.master(master)
    for key, value in conf.items():
        builder = builder.config(key, str(value))
    return builder.getOrCreate()
