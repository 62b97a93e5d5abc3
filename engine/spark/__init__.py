"""Spark adapter: a SparkSession with delta-spark from local jars, and the wiring that moves batches to engine functions."""
