"""One module per table lakescore owns besides `scores`: the run ledger (`runs`), `drift_reference`,
`eval_metrics` and `backtest_metrics`: each module holds its table's schema, its reads and its writes through the
commit protocol (engine.lake.commit).

Imports: engine.lake and the kernel; job cores and operator commands import these modules, never the reverse.
"""
