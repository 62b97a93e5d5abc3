"""Evaluation core: mergeable metric statistics, joins, gates and reports (pure: no Ray/Spark)."""
