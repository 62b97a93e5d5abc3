"""Delta I/O on the lake: where tables live (paths), pinned snapshots of input tables (snapshot), which days changed
between versions (delta_log), the commit protocol for the tables lakescore owns (commit), Parquet data files
(writer), a run's scratch space (scratch) and report files on the lake's filesystem (reports).

Imports: the kernel (engine.errors) and pyarrow/deltalake only; everything above (tables, models, score,
evaluation, ops, the engine adapters) imports this package, never the reverse.
"""
