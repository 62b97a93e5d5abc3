"""Data contracts: engine-neutral declarations, pandera schemas built from them, and their enforcement.

Dependencies run one way: this package imports `engine` (errors, config, snapshots, the work types of
`engine.work` and the executor seam's helpers in `engine.executor`, the drift statistics of `engine.drift` and
their stored references, `engine.tables.drift_reference`), and `engine` never imports it.
`contracts.enforce.ContractCheck` implements the core's `engine.work.RowCheck` seam for the scoring pass; the
validate job's core and chunk function live in `contracts.validate`. The jobs (`jobs.score`, `jobs.validate`)
wire contracts into the engine.
"""
