"""The jobs' SparkContext (`spark_context`: no SparkSession, no delta-spark), and for analysts and tests a
SparkSession with delta-spark loaded from local jars and, for a lake on S3, Hadoop's S3A connector.

The jars are resolved from Maven Central once, at setup (`python -m engine.spark.jars`, run by
`make setup`), and handed to Spark here as plain files through `spark.jars`. We do not use
`spark.jars.packages` (what `configure_spark_with_delta_pip` does) at session time: that resolves
through Ivy on every JVM start, needs the network, and fails or stalls on air-gapped workers and in CI.
Under `spark-submit` the JVM is up before Python runs, so the jars must be on its command line
(`--jars "$(python -m engine.spark.jars --print-jars)"`); this module then adds none of its own.

A lake on S3 (`spark_session(lake=cfg.lake)`, root `s3://` or `s3a://`) is for analysts' Spark SQL: the session
also loads hadoop-aws and the AWS SDK (`python -m engine.spark.jars --s3a`, `make setup-s3a`) and reaches the
store that the lake's delta-rs storage options name (`s3a_conf`). Credentials are never put in the Spark conf:
S3A's default provider chain reads them from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN) or an instance role, like delta-rs does.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from engine.config.sections import LakeConfig
from engine.errors import ConfigError
from engine.spark.jars import jar_paths

S3A_FS = "org.apache.hadoop.fs.s3a.S3AFileSystem"
# object_store's names for each setting (case-insensitive, with or without the `aws_` prefix), as delta-rs takes them.
_ENDPOINT = ("endpoint_url", "endpoint")
_REGION = ("region", "default_region")
_VIRTUAL_HOSTED = ("virtual_hosted_style_request",)


def is_s3(root: str) -> bool:
    return root.startswith(("s3://", "s3a://"))


def _option(opts: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    found = {k.lower().removeprefix("aws_"): v for k, v in opts.items()}
    return next((found[n] for n in names if found.get(n) not in (None, "")), None)


def s3a_conf(storage_options: Mapping[str, str]) -> dict[str, str]:
    """Spark settings for Hadoop's S3A that reach the store a lake's delta-rs `storage_options` name.

    `s3://` URIs go to S3A too (Hadoop has no other `s3` file system). A custom endpoint uses path-style requests,
    as delta-rs does, unless AWS_VIRTUAL_HOSTED_STYLE_REQUEST is true; an `http://` endpoint (which delta-rs only
    accepts with AWS_ALLOW_HTTP) turns SSL off. Options with no S3A counterpart (delta-rs' commit settings) do not
    matter to a reader and are left out. No credentials: S3A's default chain reads them from the environment.
    """
    conf = {
        "spark.hadoop.fs.s3.impl": S3A_FS,
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
    }
    endpoint = _option(storage_options, _ENDPOINT)
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        virtual = (_option(storage_options, _VIRTUAL_HOSTED) or "false").lower() == "true"
        conf["spark.hadoop.fs.s3a.path.style.access"] = str(not virtual).lower()
        if endpoint.lower().startswith("http://"):
            conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = "false"
    region = _option(storage_options, _REGION)
    if region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
    return conf


def _context_conf() -> dict[str, str]:
    """What every context the project starts is given: no UI, no progress bars in batch logs, a small driver, and
    (when this process starts the JVM, not spark-submit) Python workers that run this interpreter and import this
    project (PySpark takes the workers' interpreter from PYSPARK_PYTHON when the context starts)."""
    conf = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", "spark.driver.memory": "1g"}
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        conf["spark.executorEnv.PYTHONPATH"] = os.pathsep.join(
            p for p in [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")] if p)
    return conf


def spark_context(app_name: str, master: str = "local[2]", extra_conf: dict | None = None):
    """Get or create the process's SparkContext, for the jobs: their executor (engine.spark.executor) runs RDD tasks
    only and reads and commits every table through `deltalake`, so they need neither delta-spark nor Spark SQL.
    Building a SparkSession on top costs seconds of the JVM's time (its session state: catalog, analyzer, SQL
    conf), spent before the engine's warm-up could start: 5 s of the Spark job's start on 2 cores, measured with
    stack samples under spark-submit. Under spark-submit, --master and its --conf stand; `extra_conf` is added."""
    from pyspark import SparkConf, SparkContext

    conf = SparkConf().setAppName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # under spark-submit, --master decides
        conf.setMaster(master)
    for key, value in {**_context_conf(), **(extra_conf or {})}.items():
        conf.set(key, str(value))
    return SparkContext.getOrCreate(conf)


def spark_session(app_name: str = "lakescore", master: str = "local[2]", extra_conf: dict | None = None,
                  lake: LakeConfig | None = None):
    """Get or create the process's SparkSession, Delta-enabled; `extra_conf` overrides the defaults.

    With a `lake` on S3 the session can read it (`s3a://…` or `s3://…` paths): the S3A jars and `s3a_conf`.
    JVM-level settings (jars, driver memory, `spark.hadoop.*`) only take effect when this call starts the JVM.
    For analysts, tests and the peers' benchmarks; the jobs start a plain context instead (`spark_context`), with no
    delta-spark at all: neither its ~35 jars shipped to each executor (seconds of their start) nor `--jars` under
    spark-submit.
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    on_s3 = lake is not None and is_s3(lake.root)
    running = SparkContext._active_spark_context
    if on_s3 and running is not None:  # refused before its conf is touched
        _require_s3a(running._jvm, lake.root)
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Small by default (local runs, tests); a cluster job raises both through extra_conf. Delta rebuilds
        # each snapshot's state (every time-travel version) with `snapshotPartitions` tasks, 50 by default.
        "spark.sql.shuffle.partitions": "2",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.session.timeZone": "UTC",
        **_context_conf(),
        **(s3a_conf(lake.storage_options) if on_s3 else {}),
    }
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # we start the JVM: its jars
        conf["spark.jars"] = ",".join(jar_paths(s3a=on_s3))
    conf.update(extra_conf or {})
    builder = SparkSession.builder.appName(app_name)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # under spark-submit, --master decides
        builder = builder.master(master)
    for key, value in conf.items():
        builder = builder.config(key, str(value))
    session = builder.getOrCreate()
    if on_s3 and running is None:  # spark-submit's JVM, started with whatever --jars it was given
        _require_s3a(session._jvm, lake.root)
    return session


def _require_s3a(jvm, root: str) -> None:
    """A JVM started earlier in this process (or by spark-submit) without hadoop-aws cannot read `root`: say so now,
    not as "ClassNotFoundException: Class org.apache.hadoop.fs.s3a.S3AFileSystem not found" at the first query."""
    from py4j.java_gateway import JavaClass

    if not isinstance(jvm.org.apache.hadoop.fs.s3a.S3AFileSystem, JavaClass):
        raise ConfigError(
            f"the SparkSession in this process was started without the S3A connector (hadoop-aws), so it cannot read "
            f"{root}; open the lake's session first in a new Python process, or pass "
            f'--jars "$(python -m engine.spark.jars --s3a --print-jars)" to spark-submit')
