"""Spark adapter: a Delta-enabled SparkSession from local jars, and the wiring that moves batches to engine functions."""
