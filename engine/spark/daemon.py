"""The jobs' executors' Python daemon (`spark.python.daemon.module`, set by engine.spark.executor.session_conf):
PySpark's own daemon, imported from the installed pyspark rather than compiled from the executor's pyspark.zip
(engine.spark.pythonpath). The daemon forks the Python workers, so they inherit the compiled modules too.

Nothing may be printed here: the daemon tells the executor its port on stdout.
"""
from __future__ import annotations

import runpy

from engine.spark.pythonpath import prefer_installed_pyspark

if __name__ == "__main__":
    prefer_installed_pyspark()
    runpy.run_module("pyspark.daemon", run_name="__main__", alter_sys=True)
