"""Spark adapter, twin of engine.ray with the same file names: `session` (the jobs' plain SparkContext, and a
Delta-enabled SparkSession from local jars for analysts and tests) and `executor` (engine.executor.Executor as one
Spark job per unit); Spark adds `dataframe` (score a DataFrame), `jars`, and `pythonpath` with `daemon` (PySpark from
the installed package under spark-submit). Imports the engine below it, never engine.ray."""
