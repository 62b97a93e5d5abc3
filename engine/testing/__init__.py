"""Local cluster harness for tests and benchmarks: a private Ray cluster (ray_cluster), a private Spark standalone
master and workers (spark_cluster), and the process helpers both use (processes).

Only tests/ and benchmarks/ import this package (tests/test_layering.py checks it); it imports no other engine module.
"""
